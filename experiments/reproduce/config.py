"""One study cell as a launcher config: ``--config=experiments/reproduce/config.py:<tier>,<cell>[,<results>]``.

``<cell>`` is ``<task>/<algo>/<method>[@<tag>.<tag>]`` (`experiments.reproduce.grid`), e.g.
``experiments/reproduce/config.py:small,halfcheetah/td3/rlx2``. A cell that follows a family choice (its
buffer, its period rule) reads it from ``<results>/<tier>/choices.json`` (default ``<results>``: the
repository's docs/results). Every field stays overridable (``--config.total_env_steps=20000``).
"""
import os

from experiments.configs import common
from experiments.reproduce import choices, grid

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "docs", "results")


def get_config(arg: str = "small,halfcheetah/td3/dense@rlx2.scaled"):
    tier, _, rest = arg.partition(",")
    key, _, results = rest.partition(",")
    if tier not in grid.TIERS or not key:
        raise ValueError(f"invalid study cell {arg!r}: expected <tier>,<task>/<algo>/<method>[@<tags>]"
                         f"[,<results dir>] with tier one of {', '.join(grid.TIERS)}")
    cell, t = grid.parse_cell(key), grid.TIERS[tier]
    return common.to_config_dict(grid.make_config(cell, t, choices.of(results or RESULTS, t, cell)))
