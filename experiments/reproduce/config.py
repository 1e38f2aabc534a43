"""One reproduction cell as a launcher config: ``--config=experiments/reproduce/config.py:<tier>,<cell>``.

``<cell>`` is ``<task>/<algo>/<method>[@<regime>]`` (`experiments.reproduce.grid`), e.g.
``experiments/reproduce/config.py:small,halfcheetah/td3/ds+importance@rlx2_sparsity``. Every field stays
overridable (``--config.total_env_steps=20000``).
"""
from experiments.configs import common
from experiments.reproduce import grid


def get_config(arg: str = "small,halfcheetah/td3/dense"):
    tier, _, key = arg.partition(",")
    if tier not in grid.TIERS or not key:
        raise ValueError(f"invalid reproduction cell {arg!r}: expected <tier>,<task>/<algo>/<method>[@<regime>] "
                         f"with tier one of {', '.join(grid.TIERS)}")
    return common.to_config_dict(grid.make_config(grid.parse_cell(key), grid.TIERS[tier]))
