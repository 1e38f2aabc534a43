"""Every preset from one file: ``--config=experiments/configs/preset.py:<method>,<algo>[,<task>[,<recipe>]]``.

``preset.py:rlx2,td3`` is RLx2-TD3 at the small demo-scale defaults; ``preset.py:rlx2,td3,halfcheetah`` the
paper's settings for that task (`sparse_rl_jax.presets`). Methods: any registered name, with
``+importance`` for the importance-scored variants (``preset.py:ds+importance,sac,hopper``). A recipe
(`presets.RECIPES`) puts a paper's settings over the preset: ``preset.py:static,sac,dmc/HumanoidRun,ma2025``
is Ma et al.'s sparse SimBa SAC; an empty task keeps the demo scale (``preset.py:static,sac,,ma2025``).
Every field stays overridable (``--config.sparsity.actor=0.95``).
"""
from experiments.configs import common


def get_config(arg: str = "dense,td3"):
    parts = [p.strip() for p in arg.split(",")]
    if not 1 <= len(parts) <= 4 or not parts[0]:
        raise ValueError(f"invalid preset {arg!r}: expected <method>,<algo>[,<task>[,<recipe>]], e.g. "
                         "rlx2,td3,halfcheetah or static,sac,dmc/HumanoidRun,ma2025")
    method, algo, task, recipe = (parts + ["td3", None, None])[:4] if len(parts) == 1 else (parts + [None] * 2)[:4]
    return common.preset_config(method, algo or "td3", task or None, recipe or None)
