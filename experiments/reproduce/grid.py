"""The reproduction grid: which cells each tier runs and the exact config of every cell.

A **cell** is one (task, algorithm, method, regime): one config, run for ``tier.seeds`` seeds vmapped in
one compiled program. The regime says which paper's settings the cell follows where the grid compares a
method outside its own paper:

* ``paper``: the method's own paper preset for the task (`sparse_rl_jax.presets.make_config` with a task).
* ``rlx2_sparsity``: DS at RLx2's per-task sparsities (the high-sparsity regime where DS is said to fail
  and importance scoring is said to help): DS's settings, with ER at RLx2's actor/critic sparsity
  instead of DS's lambdas.
* ``ds_settings``: dense TD3 at DS's optimiser settings (Adam 1e-3, coupled L2 2e-4, batch 100), DS's own
  dense baseline (ALGORITHMS.md: "also for its dense TD3"), so DS's claims are judged against the dense
  run its paper compared with.

Shortening a paper's budget to the tier's (`scale`): every step-denominated quantity of the paper
settings that shapes a method's schedule or its data is multiplied by ``tier.env_steps / paper budget``
(DS's 1M; RLx2's 3M for RLx2 and the baselines it ran: dense, static, RigL): topology period, stop
margin, n-step delay, the dynamic buffer's check interval and minimum size, and the replay capacity. At
the small tier's 100k steps that is 1/10 for DS cells and 1/30 for the others. Two things are not scaled
and are the same in every cell of a tier, so that no method starts with more random data or evaluates
more often than another: the random warm-up (``tier.warmup``: TD3's 25k would be a quarter of a 100k
run) and the evaluation cadence (every 5k env steps, 10 episodes). Learning rates, batch sizes,
sparsities, drop fractions and decays are not step counts and stay the paper's.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

from sparse_rl_jax import config as cfg
from sparse_rl_jax import presets

PAPER_BUDGET = {"ds": 1_000_000, "rlx2": 3_000_000}  # env steps of each paper's runs
REGIMES = ("paper", "rlx2_sparsity", "ds_settings")


@dataclasses.dataclass(frozen=True)
class Cell:
    task: str
    algo: str
    method: str
    regime: str = "paper"

    @property
    def name(self) -> str:
        """``<method>`` or ``<method>@<regime>``: the cell's label in tables and on the command line."""
        return self.method if self.regime == "paper" else f"{self.method}@{self.regime}"

    @property
    def key(self) -> str:
        """``<task>/<algo>/<name>``: how ``--cells`` selects it."""
        return f"{self.task}/{self.algo}/{self.name}"

    @property
    def dirname(self) -> str:
        return self.name.replace("+", "_").replace("@", "__")

    @property
    def family(self) -> str:
        """Whose paper budget the cell's schedules are scaled from: ``ds`` or ``rlx2``."""
        return "ds" if self.method.partition("+")[0] == "ds" or self.regime == "ds_settings" else "rlx2"

    @property
    def reference(self) -> "Cell":
        """The dense cell its returns are compared with (same task and algorithm, same paper settings)."""
        regime = "ds_settings" if self.family == "ds" and self.algo == "td3" else "paper"
        return Cell(self.task, self.algo, "dense", regime)


@dataclasses.dataclass(frozen=True)
class Tier:
    name: str
    env_steps: Optional[int]  # None: each paper's own budget (scale 1)
    seeds: int
    warmup: Optional[int]  # None: the paper's (TD3 25k, SAC 5k)
    cells: Tuple[Cell, ...]
    eval_every: int = 5_000


def _cells(task: str, algo: str, names: List[str]) -> List[Cell]:
    out = []
    for n in names:
        method, _, regime = n.partition("@")
        out.append(Cell(task, algo, method, regime or "paper"))
    return out


# The small grid, dense references first (every other cell is reported against them).
_SMALL = (
    _cells("halfcheetah", "td3", ["dense", "dense@ds_settings", "static", "rigl", "rlx2", "rlx2+importance",
                                  "ds", "ds+importance", "ds@rlx2_sparsity", "ds+importance@rlx2_sparsity"])
    + _cells("hopper", "td3", ["dense", "dense@ds_settings", "ds", "ds+importance", "rlx2", "rlx2+importance"])
    + _cells("halfcheetah", "sac", ["dense", "rlx2", "rlx2+importance"])
)
_PAPER_NAMES = {
    "td3": ["dense", "dense@ds_settings", "static", "rigl", "rlx2", "rlx2+importance", "ds", "ds+importance",
            "ds@rlx2_sparsity", "ds+importance@rlx2_sparsity", "gmp"],
    "sac": ["dense", "static", "rigl", "rlx2", "rlx2+importance", "ds", "ds+importance", "ds@rlx2_sparsity",
            "ds+importance@rlx2_sparsity", "gmp"],
}
_PAPER = tuple(c for algo in ("td3", "sac") for task in presets.TASKS
               for c in _cells(task, algo, _PAPER_NAMES[algo]))

TIERS = {
    "small": Tier("small", env_steps=100_000, seeds=3, warmup=5_000, cells=_SMALL),
    "paper": Tier("paper", env_steps=None, seeds=5, warmup=None, cells=_PAPER),
}


def cell_dir(root: str, tier: Tier, cell: Cell) -> str:
    """A cell's run directory: ``<root>/<tier>/<task>/<algo>/<cell>/`` (``+`` -> ``_``, ``@`` -> ``__``)."""
    return os.path.join(root, tier.name, cell.task, cell.algo, cell.dirname)


def parse_cell(key: str) -> Cell:
    """``halfcheetah/td3/ds+importance@rlx2_sparsity`` -> Cell (the inverse of `Cell.key`)."""
    parts = key.split("/")
    if len(parts) != 3:
        raise ValueError(f"invalid cell {key!r}: expected <task>/<algo>/<method>[@<regime>]")
    (cell,) = _cells(parts[0], parts[1], [parts[2]])
    if cell.regime not in REGIMES:
        raise ValueError(f"invalid cell {key!r}: regime must be one of {', '.join(REGIMES)}")
    return cell


def scale(cell: Cell, tier: Tier) -> float:
    """The factor every schedule length of ``cell`` is multiplied by at ``tier`` (1 at the paper tier)."""
    return 1.0 if tier.env_steps is None else tier.env_steps / PAPER_BUDGET[cell.family]


def _scaled(value: int, factor: float, floor: int = 1) -> int:
    return max(floor, int(round(value * factor)))


def overrides(cell: Cell, tier: Tier) -> Dict[str, Any]:
    """The dotted overrides of ``cell`` on top of its method's per-task paper preset."""
    base_method = cell.method.partition("+")[0]
    if cell.regime == "rlx2_sparsity" and base_method != "ds":
        raise ValueError(f"cell {cell.key}: regime rlx2_sparsity is for DS cells")
    if cell.regime == "ds_settings" and (cell.method != "dense" or cell.algo != "td3"):
        raise ValueError(f"cell {cell.key}: regime ds_settings is for dense TD3")
    paper = presets.make_config(cell.method, cell.algo, cell.task)
    out: Dict[str, Any] = {}
    if cell.regime == "rlx2_sparsity":
        a, c = presets.RLX2_SPARSITY[cell.algo][cell.task]
        out.update({"sparsity.er_lambdas": None, "sparsity.actor": a, "sparsity.critic": c})
    if cell.regime == "ds_settings":
        ds = presets.make_config("ds", "td3", cell.task)
        out.update({"total_env_steps": ds.total_env_steps, "agent.actor_lr": ds.agent.actor_lr,
                    "agent.critic_lr": ds.agent.critic_lr, "agent.weight_decay": ds.agent.weight_decay,
                    "agent.weight_decay_mode": ds.agent.weight_decay_mode,
                    "agent.mask_gradients": ds.agent.mask_gradients, "agent.batch_size": ds.agent.batch_size})
    factor = scale(cell, tier)
    if factor != 1.0:
        t, r = paper.topology, paper.replay
        batch = out.get("agent.batch_size", paper.agent.batch_size)
        out.update({
            "total_env_steps": tier.env_steps,
            "topology.period": _scaled(t.period, factor),
            "topology.stop_margin": _scaled(t.stop_margin, factor, floor=0),
            "replay.nstep_delay": _scaled(r.nstep_delay, factor, floor=0),
            "replay.check_every": _scaled(r.check_every, factor),
            # never below one batch plus RLx2's oldest-K window, which the buffer check reads
            "replay.min_size": _scaled(r.min_size, factor, floor=max(batch, paper.oldest_transitions)),
            "replay.capacity": _scaled(r.capacity, factor, floor=batch),
        })
    if tier.warmup is not None:
        out["warmup_env_steps"] = tier.warmup
    out["eval_every"] = tier.eval_every
    return out


def make_config(cell: Cell, tier: Tier) -> cfg.Config:
    """The full config of ``cell`` at ``tier``."""
    return presets.make_config(cell.method, cell.algo, cell.task, **overrides(cell, tier))


def select(tier: Tier, keys: Optional[List[str]] = None) -> List[Cell]:
    """The tier's cells, or the ones named in ``keys`` (which must belong to the tier), in grid order."""
    if not keys:
        return list(tier.cells)
    wanted = [parse_cell(k) for k in keys]
    unknown = [c.key for c in wanted if c not in tier.cells]
    if unknown:
        raise ValueError(f"invalid --cells: {', '.join(unknown)} not in the {tier.name} tier "
                         f"(see --list)")
    return [c for c in tier.cells if c in wanted]
