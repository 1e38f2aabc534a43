"""The study grid: which cells each tier runs, the exact config of every cell, and the comparisons.

A **cell** is one (task, algorithm, method, tags): one config, run for ``tier.seeds`` seeds vmapped in one
compiled program. Its name is ``<method>[@<tag>.<tag>...]``. Every cell of a **family** (``rlx2``: RLx2
and the baselines its paper ran beside it; ``ds``: DS and its dense TD3) is derived from one base config,
the family's paper preset for the task, so the two cells of a comparison differ only in what the
comparison is about (`COMPARISONS`, checked by tests/test_reproduce.py):

* RLx2's baselines use RLx2's schedule, as in its paper: ``rigl`` and ``set`` are RLx2's topology
  (period, cosine drop fraction, clock, skipped optimizer step, shared target masks) with RigL's and
  SET's drop and grow scores and without RLx2's value learning; ``static`` keeps RLx2's initial masks
  (ERK, magnitude init) and never changes them.
* ``dense@vl``: dense with RLx2's value learning (its n-step targets and dynamic buffer), so RLx2's
  sparsity and its other parts are measured apart.
* ``dense@<settings>.<buffer>``: the dense recipes. ``settings`` is whose optimizer recipe (``rlx2``:
  Adam 3e-4, batch 256; ``ds``: DS's Adam 1e-3 with coupled L2 2e-4, batch 100), ``buffer`` the replay
  capacity (``scaled``: the paper's capacity times the budget ratio; ``full``: the whole run). Where the
  paper's buffer holds its whole run (DS's; RLx2's SAC's) the scaled buffer is the whole history and the
  ``.full`` recipe would be the same config: a tier keeps only the ``.scaled`` one (`_distinct`). Each
  task's dense **reference** is the best of its recipes on the task's seeds; a family's **recipe-matched** dense
  is its own settings at its chosen buffer.

**What scales with the budget and what does not.** The tier shortens each paper's budget (DS 1M, RLx2 3M
env steps) to ``tier.env_steps``. Quantities that are fractions of the run in disguise are multiplied by
the budget ratio: DS's stop margin (the last 50k of 1M iterations) and RLx2's n-step switch (after 300k
of 3M). Periods are not: topology periods stay at each paper's value in gradient updates (DS 1000, RLx2
and its baselines 10,000), and so does RLx2's buffer check (every 10k env steps); the ablation cells
``<family>@paper_period`` and ``<family>@scaled_period`` run both, and a family switches to the scaled
one (for all its cells, every task) only when that arm is better at ALPHA (`choices`); the arm of the
chosen rule is the family's method in every comparison (`resolve`). The replay capacity is the family's chosen buffer
(``scaled`` or ``full``, chosen by the family's own dense pair); RLx2's minimum size and its oldest-K
window scale with it (10% of the capacity; 8 x batch x capacity / 1M). The random warm-up
(``tier.warmup``) and the evaluation cadence are the same in every cell.

**Choices are made once, by the data, and recorded.** The buffer and period rules of a family are chosen
from finished cells (`choices.choose`) the first time they are needed and written to
``<results>/<tier>/choices.json``; the cells that depend on them read that file and refuse to start
without it, so a choice never changes under cells that already ran with it.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from sparse_rl_jax import config as cfg
from sparse_rl_jax import presets

PAPER_BUDGET = {"ds": 1_000_000, "rlx2": 3_000_000}  # env steps of each paper's runs
PAPER_CAPACITY = 1_000_000  # RLx2's TD3 buffer (and its min size 10% of it, its oldest-K 8 x batch)
SETTINGS = ("rlx2", "ds")
BUFFERS = ("scaled", "full")
PERIODS = ("paper_period", "scaled_period")
# The sparsity curve (the papers' central figure; spent last, order (e)): RLx2 and its sparse baselines at
# uniform actor and critic sparsities beside their plain cells (the paper's own level)
LEVELS = {"s80": 0.8, "s95": 0.95, "s98": 0.98}
CURVE_METHODS = ("rlx2", "static", "set")
TAGS = SETTINGS + BUFFERS + PERIODS + ("vl", "rlx2_sparsity") + tuple(LEVELS)
# the keys of RLx2's value learning: its multi-step targets and its dynamic-capacity buffer
VALUE_LEARNING = ("replay.nstep", "replay.nstep_delay", "replay.dynamic")


@dataclasses.dataclass(frozen=True)
class Cell:
    task: str
    algo: str
    method: str
    tags: Tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """``<method>`` or ``<method>@<tag>.<tag>``: the cell's label in tables and on the command line."""
        return self.method + (f"@{'.'.join(self.tags)}" if self.tags else "")

    @property
    def key(self) -> str:
        """``<task>/<algo>/<name>``: how ``--cells`` selects it."""
        return f"{self.task}/{self.algo}/{self.name}"

    @property
    def dirname(self) -> str:
        return self.name.replace("+", "_").replace("@", "__")

    @property
    def base_method(self) -> str:
        return self.method.partition("+")[0]

    @property
    def family(self) -> str:
        """Whose paper the cell's base config and budget come from: ``ds`` or ``rlx2``."""
        if self.method == "dense":
            return "ds" if "ds" in self.tags else "rlx2"
        return "ds" if self.base_method == "ds" else "rlx2"

    @property
    def buffer(self) -> Optional[str]:
        """The buffer its tags name (``scaled`` or ``full``; a dense recipe names one), else None."""
        return next((b for b in BUFFERS if b in self.tags), None)

    @property
    def is_recipe(self) -> bool:
        """A dense recipe cell (its buffer named in its tags), run before anything is chosen."""
        return self.method == "dense" and self.buffer is not None


class Comparison(NamedTuple):
    """Cell ``a`` against cell ``b`` (same task and algorithm): ``allowed`` are the config keys (dotted,
    or a section followed by ``.``) in which their configs may differ."""
    a: str
    b: str
    allowed: Tuple[str, ...]


SPARSE_KEYS = ("method", "sparsity.", "topology.")
FAMILY_KEYS = ("agent.actor_lr", "agent.critic_lr", "agent.weight_decay", "agent.weight_decay_mode",
               "agent.mask_gradients", "agent.batch_size", "replay.oldest")


@dataclasses.dataclass(frozen=True)
class Tier:
    name: str
    env_steps: Optional[int]  # None: each paper's own budget (scale 1)
    seeds: int
    warmup: Optional[int]  # None: the paper's (TD3 25k, SAC 5k)
    cells: Tuple[Cell, ...]
    eval_every: int = 5_000
    # the env each task runs on, where it is not the Brax env of that name: the paper tier runs the
    # papers' own benchmark, Gymnasium's MuJoCo tasks (`presets.GYM_TASKS`)
    env_names: Optional[Mapping[str, str]] = None
    # the candidates for the second task (the small tier): each first runs its probe cell (`PROBE`) with
    # `probe_seeds` seeds; the second-task choice (choices.py) then picks the one whose dense TD3 clearly
    # learns, and only that task's other cells run (its probe goes on to the tier's seeds)
    second_tasks: Tuple[str, ...] = ()
    probe_seeds: int = 3


def parse_name(task: str, algo: str, name: str) -> Cell:
    method, _, tags = name.partition("@")
    return Cell(task, algo, method, tuple(t for t in tags.split(".") if t))


def _cells(task: str, algo: str, names: List[str]) -> List[Cell]:
    return [parse_name(task, algo, n) for n in names]


# The second task (c) is chosen by measurement, as the study asks: which of hopper, walker2d and ant a
# dense TD3 clearly learns at 100k env steps (`Tier.second_tasks`, choices.py).
# In the order the compute is spent (the (a), (b), the second task's deciding cells (c), SAC (d),
# the sparsity curve (e)): each family's own dense pair first (it chooses the family's buffer), then its
# period ablation; the other family's dense pair comes before the rest of (a), since until every dense
# recipe of a task has run its reference can change, and the claims against it and the aggregates wait.
_TD3_A = ["dense@rlx2.scaled", "dense@rlx2.full", "rlx2@paper_period", "rlx2@scaled_period", "rigl",
          "dense@ds.scaled", "dense@ds.full", "static", "set", "rlx2+importance", "dense@vl"]
_TD3_B = ["ds@paper_period", "ds@scaled_period", "ds+importance", "ds@rlx2_sparsity",
          "ds+importance@rlx2_sparsity"]
_CURVE = [f"{m}@{level}" for m in CURVE_METHODS for level in LEVELS]
SECOND_TASKS = ("hopper", "walker2d", "ant")
PROBE = "dense@rlx2.scaled"  # a candidate second task's probe: the rlx2 family's scaled dense recipe
_SMALL = tuple(_cells("halfcheetah", "td3", _TD3_A + _TD3_B)
               + [c for t in SECOND_TASKS for c in _cells(t, "td3", [PROBE])]
               + [c for t in SECOND_TASKS for c in _cells(t, "td3", ["dense@rlx2.full", "rlx2", "rigl", "static"])]
               + _cells("halfcheetah", "sac", ["dense@rlx2.scaled", "dense@rlx2.full", "rlx2", "rigl",
                                               "static", "rlx2+importance"])
               + _cells("halfcheetah", "td3", _CURVE))
_PAPER = tuple(c for algo in ("td3", "sac") for task in presets.TASKS
               for c in _cells(task, algo, ["dense@rlx2.scaled", "dense@rlx2.full", "dense@ds.scaled",
                                            "dense@ds.full", "rlx2", "rigl", "set", "static", "rlx2+importance",
                                            "dense@vl", "ds", "ds+importance"]
                               + (["ds@rlx2_sparsity", "ds+importance@rlx2_sparsity"] if algo == "td3" else []))
               ) + tuple(_cells("halfcheetah", "td3", _CURVE))

# Every comparison the report makes (per task and algorithm, where both cells ran), and what may differ.
COMPARISONS = tuple(Comparison(f"{m}@{level}", m, ("sparsity.",)) for m in CURVE_METHODS for level in LEVELS) + (
    Comparison("rlx2", "rigl", VALUE_LEARNING + ("method",)),
    Comparison("rigl", "set", ("method",)),
    Comparison("set", "static", ("method",)),
    Comparison("rlx2", "static", VALUE_LEARNING + ("method",)),
    Comparison("rlx2+importance", "rlx2", ("method",)),
    Comparison("rlx2", "dense@vl", SPARSE_KEYS),
    Comparison("dense@vl", "dense", VALUE_LEARNING),
    Comparison("rlx2", "dense", SPARSE_KEYS + VALUE_LEARNING),
    Comparison("static", "dense", SPARSE_KEYS),
    Comparison("ds", "dense", SPARSE_KEYS),
    Comparison("ds+importance", "ds", ("method",)),
    Comparison("ds@rlx2_sparsity", "ds", ("sparsity.",)),
    Comparison("ds+importance@rlx2_sparsity", "ds@rlx2_sparsity", ("method",)),
    Comparison("rlx2@scaled_period", "rlx2@paper_period", ("topology.period",)),
    Comparison("ds@scaled_period", "ds@paper_period", ("topology.period",)),
)


def level_of(cell: Cell) -> Optional[float]:
    """The sparsity level a sparsity-curve cell's tags name (`LEVELS`), else None."""
    return next((LEVELS[t] for t in cell.tags if t in LEVELS), None)


def level_group(tier: Tier, cell: Cell) -> Tuple[Cell, ...]:
    """The sparsity-curve cells that run in one program with ``cell`` (the launcher's ``--sparsity_levels``,
    the levels vmapped beside the seeds): the tier's cells of its task, algorithm and method at a level,
    with the same other tags; () for a cell without a level."""
    if level_of(cell) is None:
        return ()
    rest = tuple(t for t in cell.tags if t not in LEVELS)
    return tuple(c for c in tier.cells if (c.task, c.algo, c.method) == (cell.task, cell.algo, cell.method)
                 and level_of(c) is not None and tuple(t for t in c.tags if t not in LEVELS) == rest)


def group_dir(root: str, tier: Tier, group: Sequence[Cell]) -> str:
    """A level group's run directory: ``<root>/<tier>/<task>/<algo>/<method>__levels/``."""
    c = group[0]
    return os.path.join(root, tier.name, c.task, c.algo, c.method.replace("+", "_") + "__levels")


def cell_dir(root: str, tier: Tier, cell: Cell) -> str:
    """A cell's run directory: ``<root>/<tier>/<task>/<algo>/<cell>/`` (``+`` -> ``_``, ``@`` -> ``__``)."""
    return os.path.join(root, tier.name, cell.task, cell.algo, cell.dirname)


def parse_cell(key: str) -> Cell:
    """``halfcheetah/td3/ds+importance@rlx2_sparsity`` -> Cell (the inverse of `Cell.key`)."""
    parts = key.split("/")
    if len(parts) != 3:
        raise ValueError(f"invalid cell {key!r}: expected <task>/<algo>/<method>[@<tag>.<tag>]")
    cell = parse_name(*parts)
    bad = [t for t in cell.tags if t not in TAGS]
    if bad:
        raise ValueError(f"invalid cell {key!r}: unknown tag {bad[0]!r} (tags: {', '.join(TAGS)})")
    return cell


def scale(cell: Cell, tier: Tier) -> float:
    """The budget ratio of ``cell``'s family at ``tier`` (1 at the paper tier)."""
    return 1.0 if tier.env_steps is None else tier.env_steps / PAPER_BUDGET[cell.family]


def _scaled(value: int, factor: float, floor: int = 1) -> int:
    return max(floor, int(round(value * factor)))


class MissingChoice(ValueError):
    """A cell needs a family choice that has not been made yet (its deciding cells have not finished)."""


class NotChosen(ValueError):
    """A cell of a candidate second task that the second-task choice did not pick: it never runs."""


def is_probe(tier: Tier, cell: Cell) -> bool:
    return cell.task in tier.second_tasks and cell.algo == "td3" and cell.name == PROBE


def seeds_wanted(tier: Tier, cell: Cell, seeds: int, chosen: Mapping[str, Any]) -> int:
    """How many seeds ``cell`` should have now: a probe has `Tier.probe_seeds` until its task is chosen."""
    if is_probe(tier, cell) and chosen.get("second_task") != cell.task:
        return min(tier.probe_seeds, seeds)
    return seeds


def _family_base(cell: Cell) -> cfg.Config:
    """The family's paper preset for the task: the config every cell of the family is derived from."""
    if cell.family == "ds":
        return presets.make_config("ds", cell.algo, cell.task)
    return presets.make_config("rlx2", cell.algo, cell.task)


def overrides(cell: Cell, tier: Tier, chosen: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The dotted overrides of ``cell`` on top of its family's paper preset. ``chosen``: the family's
    recorded choices (``{"buffer": "scaled"|"full", "period": "paper"|"scaled"}``); a cell that needs
    one that is missing raises `MissingChoice`."""
    chosen = dict(chosen or {})
    if cell.task in tier.second_tasks and not is_probe(tier, cell):
        second = chosen.get("second_task")
        if second is None:
            raise MissingChoice(f"cell {cell.key} needs the second-task choice: run the probes "
                                f"{', '.join(f'{t}/td3/{PROBE}' for t in tier.second_tasks)} first")
        if second != cell.task:
            raise NotChosen(f"cell {cell.key}: the second task is {second}, not {cell.task}")
    base = _family_base(cell)
    method, fam = cell.method, cell.family
    tags = set(cell.tags)
    if cell.method == "dense" and not tags & {"vl", *BUFFERS}:
        raise ValueError(f"cell {cell.key}: a dense cell names its buffer (dense@<settings>.<buffer>) or "
                         f"is dense@vl")
    if "rlx2_sparsity" in tags and cell.base_method != "ds":
        raise ValueError(f"cell {cell.key}: tag rlx2_sparsity is for DS cells")
    if tags & set(PERIODS) and method not in ("ds", "rlx2"):
        raise ValueError(f"cell {cell.key}: the period tags are for the period ablations of DS and RLx2")
    if tags & set(SETTINGS) and method != "dense":
        raise ValueError(f"cell {cell.key}: only dense recipes name their settings")
    if cell.base_method not in ("dense", "static", "set", "rigl", "rlx2", "ds"):
        raise ValueError(f"cell {cell.key}: method {cell.base_method!r} is not in the study")
    factor = scale(cell, tier)
    out: Dict[str, Any] = {"method": method}
    if cell.base_method in ("dense", "static", "set", "rigl"):
        # RLx2's baselines: RLx2's schedule and masks without its value learning; dense: no sparsity
        out.update({"replay.nstep": 1, "replay.nstep_delay": 0, "replay.dynamic": False})
    if cell.base_method == "dense":
        out.update({"sparsity.actor": 0.0, "sparsity.critic": 0.0, "sparsity.er_lambdas": None})
        if "vl" in tags:
            out.update({k: getattr(base.replay, k.split(".")[1]) for k in VALUE_LEARNING})
    if "rlx2_sparsity" in tags:
        a, c = presets.RLX2_SPARSITY[cell.algo][cell.task]
        out.update({"sparsity.er_lambdas": None, "sparsity.actor": a, "sparsity.critic": c})
    level = [LEVELS[t] for t in cell.tags if t in LEVELS]
    if level:
        if cell.base_method not in ("static", "set", "rigl", "rlx2"):
            raise ValueError(f"cell {cell.key}: the sparsity levels are for RLx2 and its sparse baselines")
        out.update({"sparsity.actor": level[0], "sparsity.critic": level[0]})
    # the buffer: a recipe names it; every other cell takes its family's choice
    buffer = cell.buffer or chosen.get("buffer")
    if buffer is None:
        need = " and ".join(c.key for c in recipes(tier, cell.task, cell.algo, fam))
        raise MissingChoice(f"cell {cell.key} needs the {fam} family's buffer choice: run {need} first")
    env_steps = tier.env_steps or base.total_env_steps
    capacity = env_steps if buffer == "full" else _scaled(base.replay.capacity, factor)
    window = capacity / PAPER_CAPACITY
    batch = base.agent.batch_size
    oldest = _scaled(8 * batch, window, floor=min(32, capacity))  # a mean over at least 32 states
    out.update({"replay.capacity": capacity, "replay.oldest": oldest,
                "replay.min_size": _scaled(base.replay.min_size, window, floor=max(batch, oldest))})
    # the period ablation's arms name their period; the other cells follow the family's rule
    period = next((p.split("_")[0] for p in PERIODS if p in tags), None)
    if period is None and factor != 1.0 and method != "dense":  # (static: inert, but the configs stay equal)
        period = chosen.get("period")
        if period is None:
            raise MissingChoice(f"cell {cell.key} needs the {fam} family's period rule: run its ablation "
                                f"{fam}@paper_period and {fam}@scaled_period first")
    if factor != 1.0:
        t, r = base.topology, base.replay
        out.update({"total_env_steps": tier.env_steps,
                    "topology.stop_margin": _scaled(t.stop_margin, factor, floor=0),
                    "replay.nstep_delay": (_scaled(r.nstep_delay, factor, floor=0)
                                           if out.get("replay.nstep", r.nstep) > 1 else 0)})
        if period == "scaled":
            out["topology.period"] = _scaled(t.period, factor)
    if tier.env_names:
        out.update({"env.name": tier.env_names[cell.task], "env.backend": "auto"})
    if tier.warmup is not None:
        out["warmup_env_steps"] = tier.warmup
    out["eval_every"] = tier.eval_every
    return out


def make_config(cell: Cell, tier: Tier, chosen: Optional[Mapping[str, Any]] = None) -> cfg.Config:
    """The full config of ``cell`` at ``tier`` (``chosen``: its family's recorded choices)."""
    return cfg.replace(_family_base(cell), **overrides(cell, tier, chosen))


def _distinct(tier: Tier) -> Tier:
    """``tier`` without the whole-history recipes that are their scaled twin: a family whose paper buffer
    holds its whole run (DS: 1M transitions over 1M env steps) has a scaled buffer that is the whole
    history at every budget, so its ``.full`` recipe would rerun the same config on the same seeds."""
    def twin(cell: Cell) -> Optional[Cell]:
        if not (cell.is_recipe and cell.buffer == "full"):
            return None
        other = dataclasses.replace(cell, tags=tuple("scaled" if t == "full" else t for t in cell.tags))
        return other if other in tier.cells else None

    def config(cell: Cell) -> cfg.Config:  # as it would run (a second-task candidate: as if chosen)
        return make_config(cell, tier, {"second_task": cell.task})

    same = {c for c in tier.cells if (t := twin(c)) is not None and config(c) == config(t)}
    return dataclasses.replace(tier, cells=tuple(c for c in tier.cells if c not in same))


TIERS = {
    "small": _distinct(Tier("small", env_steps=100_000, seeds=10, warmup=5_000, cells=_SMALL,
                            second_tasks=SECOND_TASKS)),
    "paper": _distinct(Tier("paper", env_steps=None, seeds=8, warmup=None, cells=_PAPER,
                            env_names={task: name for name, task in presets.GYM_TASKS.items()})),
}


def recipes(tier: Tier, task: str, algo: str, family: str) -> List[Cell]:
    """The family's dense recipes that ``tier`` runs for the task: its scaled and whole-history buffers,
    or the one of them where the two are the same config (`_distinct`)."""
    return [c for c in (Cell(task, algo, "dense", (family, b)) for b in BUFFERS) if c in tier.cells]


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


def resolve(tier: Tier, task: str, algo: str, name: str, period: Optional[str]) -> Cell:
    """A comparison's name as a cell of ``tier``: the family's own method (``rlx2``, ``ds``) is, where the
    task runs the period ablation, the arm of the chosen ``period`` rule."""
    cell = parse_name(task, algo, name)
    if cell.method in ("ds", "rlx2") and not cell.tags and cell not in tier.cells and period:
        return Cell(task, algo, cell.method, (f"{period}_period",))
    return cell


def differing_keys(a: cfg.Config, b: cfg.Config) -> List[str]:
    """The dotted config keys in which ``a`` and ``b`` differ."""
    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v
    fa, fb = dict(flat(cfg.to_dict(a))), dict(flat(cfg.to_dict(b)))
    return sorted(k for k in fa if fa[k] != fb.get(k))


def allowed(key: str, allowed_keys: Tuple[str, ...]) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in allowed_keys)
