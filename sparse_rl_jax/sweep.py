"""A grid of runs (envs x methods x actor/critic sparsities [x drop fractions x learning rates] x seeds)
run as vmapped batches, one compiled program per (env, method); the command line is `experiments/sweep.py`.

A *cell* (`Cell`) is one (env, method, actor/critic sparsity, drop fraction, learning rate); it runs every
seed and gets its own work directory ``<root>/<env>/<method>/<cell>/``, written like a launcher run
(`launch.write_run`: ``config.json`` with the cell's own values, ``metrics/``, then ``summary.json``,
whose presence marks the cell done). The cells of one (env, method) differ only in numbers, all traced
values of the compiled program (seeds and sparsities through the exact-count mask init, the drop fraction
and the learning rates as the agent's hyperparameter leaves, ``runner.train(hparams=...)``), so each
group is one program vmapped over all its cells x seeds. `write_results` collects every done cell into
``results.csv`` and ``results.md``, with returns as a percentage of the dense cell of the same env.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from sparse_rl_jax import callbacks, launch, presets, run_logging
from sparse_rl_jax import config as cfg_lib
from sparse_rl_jax import distributed as dist
from sparse_rl_jax import methods as methods_lib
from sparse_rl_jax import runner as runner_lib

DENSE = "dense"
RESULT_FIELDS = ("env", "method", "actor_sparsity", "critic_sparsity", "drop_fraction", "lr", "seeds",
                 "final_return", "final_return_std", "final_pct_dense", "auc", "auc_pct_dense",
                 "sparsity_actor", "sparsity_critic", "total_size", "train_flops", "workdir")


@dataclasses.dataclass(frozen=True, order=True)
class Cell:
    env: str
    method: str
    actor_sparsity: float
    critic_sparsity: float
    drop_fraction: Optional[float] = None  # None: the preset's value (or no topology updates)
    lr: Optional[float] = None  # None: the preset's learning rates; else actor and critic lr

    @property
    def name(self) -> str:
        parts = [f"a{self.actor_sparsity:g}_c{self.critic_sparsity:g}"]
        if self.drop_fraction is not None:
            parts.append(f"df{self.drop_fraction:g}")
        if self.lr is not None:
            parts.append(f"lr{self.lr:g}")
        return "_".join(parts)

    def workdir(self, root: str) -> str:
        return os.path.join(root, self.env, self.method.replace("+", "_"), self.name)


# ---------------------------------------------------------------------------- grid
def has_topology(method: str, algo: str) -> bool:
    """Does the method drop and grow (so a drop fraction applies)? Read from its class in the registry."""
    return methods_lib.parse(method)[0].cls.uses_drop_fraction


def build_grid(algo: str, methods: Sequence[str], envs: Sequence[str], sparsities: Sequence[Tuple[float, float]],
               drop_fractions: Sequence[Optional[float]] = (None,), lrs: Sequence[Optional[float]] = (None,),
               dense: bool = True) -> List[Cell]:
    """All cells; the dense method gets one sparsity (0) and no drop fraction, methods without
    drop/grow updates no drop fraction."""
    names = list(dict.fromkeys(([DENSE] if dense else []) + list(methods)))
    cells = []
    for env, method, lr in itertools.product(envs, names, lrs):
        if method == DENSE:
            cells.append(Cell(env, method, 0.0, 0.0, None, lr))
            continue
        dfs = drop_fractions if has_topology(method, algo) else (None,)
        for (a, c), df in itertools.product(sparsities, dfs):
            cells.append(Cell(env, method, a, c, df, lr))
    return sorted(set(cells), key=cells.index)


def cell_config(cell: Cell, algo: str, overrides: Dict[str, Any], seed: int = 0):
    """The config a separate run of this cell would use (its numbers as static config values)."""
    values = {**overrides, "env.name": cell.env, "seed": seed}
    if cell.method != DENSE:
        values.update({"sparsity.actor": cell.actor_sparsity, "sparsity.critic": cell.critic_sparsity})
        if presets.preset(cell.method, algo).get("sparsity.er_lambdas") is not None:
            # a sweep gives sparsity levels: DS's ER lambdas give way to ER solved for each level (= ERK)
            values.update({"sparsity.er_lambdas": None, "sparsity.distribution": "erk"})
    if cell.drop_fraction is not None:
        values["topology.drop_fraction"] = cell.drop_fraction
    if cell.lr is not None:
        values.update({"agent.actor_lr": cell.lr, "agent.critic_lr": cell.lr})
    return presets.make_config(cell.method, algo, **values)


def group_cells(cells: Sequence[Cell]) -> Dict[Tuple[str, str], List[Cell]]:
    """Cells that can share one compiled program: same env and method."""
    groups: Dict[Tuple[str, str], List[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.env, cell.method), []).append(cell)
    return groups


def group_config(cells: Sequence[Cell], algo: str, overrides: Dict[str, Any]):
    """The group's static config: the first cell's, with a sparsity > 0 if any cell has one (so the
    networks get masks; each entry's own level is traced)."""
    rep = max(cells, key=lambda c: (c.actor_sparsity > 0 or c.critic_sparsity > 0, -cells.index(c)))
    return cell_config(rep, algo, overrides)


def is_done(cell: Cell, root: str) -> bool:
    return os.path.isfile(os.path.join(cell.workdir(root), "summary.json"))


# ---------------------------------------------------------------------------- running
def _batches(entries: List, max_batch: int, multiple: int) -> List[List]:
    """Equal-size batches (a multiple of ``multiple``); the last is padded with repeats of its last entry."""
    n = len(entries)
    size = n if max_batch <= 0 else min(max_batch, n)
    size = -(-size // multiple) * multiple
    out = []
    for start in range(0, n, size):
        chunk = entries[start:start + size]
        out.append(chunk + [chunk[-1]] * (size - len(chunk)))
    return out


def _slice_history(history: List, index: Sequence[int], total: int) -> List:
    """Per-entry metric arrays -> the cell's entries; scalars stay."""
    out = []
    for steps, metrics in history:
        m = {}
        for k, v in metrics.items():
            arr = np.asarray(v)
            m[k] = arr[list(index)] if arr.ndim >= 1 and arr.shape[0] == total else v
        out.append((steps, m))
    return out


def _hparams(batch, defaults: Dict[str, float], cells: Sequence[Cell]) -> Dict[str, List[float]]:
    """Per-entry values of the swept hyperparameters; ``defaults`` (the agent's `default_hparams`) where
    a cell keeps the preset's."""
    hp = {}
    if any(c.drop_fraction is not None for c in cells):
        hp["drop_fraction"] = [defaults["drop_fraction"] if c.drop_fraction is None else c.drop_fraction
                               for c, _ in batch]
    for name in ("actor_lr", "critic_lr") if any(c.lr is not None for c in cells) else ():
        hp[name] = [defaults[name] if c.lr is None else c.lr for c, _ in batch]
    return hp


def run_group(root: str, algo: str, cells: Sequence[Cell], seeds: Sequence[int], overrides: Dict[str, Any],
              max_batch: int = 0, mesh=None, log=print, stop: Optional[callbacks.StopRequest] = None) -> int:
    """Run the not-yet-done cells of one group in vmapped batches; returns the number of cells run."""
    todo = [c for c in cells if not is_done(c, root)]
    if not todo:
        return 0
    config = group_config(todo, algo, overrides)
    runner = runner_lib.Runner(config, 0, mesh)
    entries = [(cell, seed) for cell in todo for seed in seeds]
    what = f"{todo[0].env} / {todo[0].method}"
    hooks = [callbacks.StopCheck(stop, f"group {what}")] if stop else []  # nothing saved: a rerun restarts it
    for batch in _batches(entries, max_batch, runner.mesh.shape[dist.SEED]):
        real = [e for i, e in enumerate(batch) if e not in batch[:i]]  # padding repeats are dropped below
        keys = np.stack([np.asarray(jax.random.PRNGKey(seed)) for _, seed in batch])
        t0 = time.time()
        log(f"[sweep] {what}: {len(real)} runs in one program "
            f"({len({c for c, _ in real})} cells x seeds) on {runner.mesh.devices.size} device(s)")
        hparams = _hparams(batch, runner.trainer.agent.default_hparams(), todo) or None
        result = runner.train(keys=keys, actor_sparsity=[c.actor_sparsity for c, _ in batch],
                              critic_sparsity=[c.critic_sparsity for c, _ in batch], hparams=hparams,
                              callbacks=hooks)
        agent = dist.to_host(result.states.agent)
        log(f"[sweep]   done in {time.time() - t0:.0f} s")
        if not dist.is_primary():
            continue
        for cell in dict.fromkeys(c for c, _ in real):
            index = [i for i, (c, s) in enumerate(batch) if c == cell and (c, s) not in batch[:i]]
            cell_seeds = [batch[i][1] for i in index]
            spec = cfg_lib.RunSpec(cell_config(cell, algo, overrides, seed=cell_seeds[0]), tuple(cell_seeds),
                                   cell.workdir(root))
            launch.write_run(spec, _slice_history(result.history, index, len(batch)), runner.trainer,
                             jax.tree.map(lambda x: x[np.asarray(index)], agent))
    return len(todo)


def run(root: str, algo: str, cells: Sequence[Cell], seeds: Sequence[int], overrides: Dict[str, Any],
        max_batch: int = 0, aggregate_only: bool = False, mesh=None, log=print,
        stop: Optional[callbacks.StopRequest] = None) -> int:
    """Run every not-done cell, group by group, then write the aggregated tables. Returns 0."""
    os.makedirs(root, exist_ok=True)
    groups = group_cells(cells)
    done = sum(is_done(c, root) for c in cells)
    log(f"[sweep] {len(cells)} cells in {len(groups)} compiled groups, {len(seeds)} seeds each; "
        f"{done} already done")
    if not aggregate_only:
        for cells_of_group in groups.values():
            run_group(root, algo, cells_of_group, seeds, overrides, max_batch=max_batch, mesh=mesh, log=log,
                      stop=stop)
    if dist.is_primary():
        rows = write_results(root, cells)
        log(f"[sweep] {len(rows)}/{len(cells)} cells done; results in {os.path.join(root, 'results.md')}")
    return 0


# ---------------------------------------------------------------------------- aggregation
def collect(root: str, cells: Sequence[Cell]) -> List[Dict[str, Any]]:
    """One result row per done cell, with returns as % of the env's dense cell (same lr if swept)."""
    summaries = {}
    for cell in cells:
        path = os.path.join(cell.workdir(root), "summary.json")
        if os.path.isfile(path):
            with open(path) as f:
                summaries[cell] = json.load(f)
    rows = []
    for cell, s in summaries.items():
        dense = summaries.get(Cell(cell.env, DENSE, 0.0, 0.0, None, cell.lr)) or \
            summaries.get(Cell(cell.env, DENSE, 0.0, 0.0, None, None))
        mean, std = s["mean"], s["std"]
        rows.append({
            "env": cell.env, "method": cell.method, "actor_sparsity": cell.actor_sparsity,
            "critic_sparsity": cell.critic_sparsity, "drop_fraction": cell.drop_fraction, "lr": cell.lr,
            "seeds": s["num_seeds"], "final_return": mean["final_return"], "final_return_std": std["final_return"],
            "final_pct_dense": _pct(mean["final_return"], dense and dense["mean"]["final_return"]),
            "auc": mean["auc"], "auc_pct_dense": _pct(mean["auc"], dense and dense["mean"]["auc"]),
            "sparsity_actor": mean["sparsity_actor"], "sparsity_critic": mean["sparsity_critic"],
            "total_size": mean["total_size"], "train_flops": mean["train_flops"],
            "workdir": os.path.relpath(cell.workdir(root), root)})
    return rows


def _pct(value: Optional[float], dense: Optional[float]) -> Optional[float]:
    if value is None or not dense:
        return None
    return 100.0 * value / dense


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def results_csv(rows: List[Dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=RESULT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in RESULT_FIELDS})
    return out.getvalue()


def results_markdown(rows: List[Dict[str, Any]], title: str = "Sweep results") -> str:
    """One table per env; returns as % of that env's dense run."""
    lines = [f"# {title}", ""]
    for env in dict.fromkeys(r["env"] for r in rows):
        lines += [f"## {env}", "",
                  "| method | sparsity actor/critic | drop fraction | lr | seeds | final return | % dense | "
                  "AUC % dense | total size | train FLOPs |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["env"] == env):
            ret = f"{_fmt(r['final_return'])} ± {_fmt(r['final_return_std'])}"
            df = "preset" if r["drop_fraction"] is None else f"{r['drop_fraction']:g}"
            lr = "preset" if r["lr"] is None else f"{r['lr']:g}"
            lines.append(
                f"| {r['method']} | {r['actor_sparsity']:g}/{r['critic_sparsity']:g} | {df} | {lr} | "
                f"{r['seeds']} | {ret} | "
                f"{_fmt(r['final_pct_dense'])} | {_fmt(r['auc_pct_dense'])} | {_fmt(r['total_size'], 3)} | "
                f"{_fmt(r['train_flops'], 3)} |")
        lines.append("")
    lines.append("Final return: last evaluation, mean ± std over seeds. % dense: of the dense run of the same "
                 "env (same lr when swept). Total size and train FLOPs: fractions of the dense agent.")
    return "\n".join(lines) + "\n"


def write_results(root: str, cells: Sequence[Cell]) -> List[Dict[str, Any]]:
    rows = collect(root, cells)
    run_logging.write_text_atomic(os.path.join(root, "results.csv"), results_csv(rows))
    run_logging.write_text_atomic(os.path.join(root, "results.md"), results_markdown(rows))
    return rows
