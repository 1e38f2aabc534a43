"""Every preset from one file: ``--config=experiments/configs/preset.py:<method>,<algo>[,<task>]``.

``preset.py:rlx2,td3`` is RLx2-TD3 at the small demo-scale defaults; ``preset.py:rlx2,td3,halfcheetah`` the
paper's settings for that task (`sparse_rl_jax.presets`). Methods: any registered name, with
``+importance`` for the importance-scored variants (``preset.py:ds+importance,sac,hopper``). Every field
stays overridable (``--config.sparsity.actor=0.95``).
"""
from experiments.configs import common


def get_config(arg: str = "dense,td3"):
    parts = [p.strip() for p in arg.split(",")]
    if not 1 <= len(parts) <= 3 or not parts[0]:
        raise ValueError(f"invalid preset {arg!r}: expected <method>,<algo>[,<task>], e.g. rlx2,td3,halfcheetah")
    method, algo, task = (parts + ["td3", None])[:3] if len(parts) == 1 else (parts + [None])[:3]
    return common.preset_config(method, algo or "td3", task or None)
