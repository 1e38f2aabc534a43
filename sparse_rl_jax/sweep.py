"""A grid of runs (envs x methods x actor/critic sparsities [x drop fractions x learning rates x critic
widths] x seeds) run as vmapped batches, one compiled program per (env, method, width); the command line
is `experiments/sweep.py`.

A *cell* (`Cell`) is one (env, method, actor/critic sparsity, drop fraction, learning rate, critic width); it
runs every seed and gets its own work directory ``<root>/<env>/<method>/<cell>/``, written like a launcher run
(`launch.write_run`: ``config.json`` with the cell's own values, ``metrics/``, then ``summary.json``,
whose presence marks the cell done). The cells of one (env, method) differ only in numbers, all traced
values of the compiled program (seeds and sparsities through the exact-count mask init, the drop fraction
and the learning rates as the agent's hyperparameter leaves, ``runner.train(hparams=...)``), so each
group is one program vmapped over all its cells x seeds. `write_results` collects every done cell into
``results.csv`` and ``results.md``, with returns as a percentage of the dense cell of the same env (and
width). A sweep over critic widths is a scaling sweep: `scaling_markdown` lays its cells out against the
critic's weights, all and active (`matched_sparsities` gives the levels at which a wider sparse critic has
as many active weights as a narrower dense one), written to ``scaling.md`` and ``scaling.png``.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from sparse_rl_jax import callbacks, checkpoint, envs, launch, plotting, presets, run_logging, runs, trainer
from sparse_rl_jax import config as cfg_lib
from sparse_rl_jax import distributed as dist
from sparse_rl_jax import methods as methods_lib
from sparse_rl_jax import runner as runner_lib

DENSE = "dense"
RESULT_FIELDS = ("env", "method", "actor_sparsity", "critic_sparsity", "drop_fraction", "lr", "width", "seeds",
                 "final_return", "final_return_std", "final_pct_dense", "auc", "auc_pct_dense",
                 "sparsity_actor", "sparsity_critic", "total_size", "train_flops", "critic_weights",
                 "critic_active_weights", "workdir")


@dataclasses.dataclass(frozen=True, order=True)
class Cell:
    env: str
    method: str
    actor_sparsity: float
    critic_sparsity: float
    drop_fraction: Optional[float] = None  # None: the preset's value (or no topology updates)
    lr: Optional[float] = None  # None: the preset's learning rates; else actor and critic lr
    width: Optional[int] = None  # None: the preset's critic; else every critic layer (or block) this wide

    @property
    def name(self) -> str:
        parts = ([f"w{self.width}"] if self.width is not None else []) + [
            f"a{self.actor_sparsity:g}_c{self.critic_sparsity:g}"]
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
               dense: bool = True, widths: Sequence[Optional[int]] = (None,),
               extra_sparsities: Optional[Dict[int, Sequence[float]]] = None) -> List[Cell]:
    """All cells; the dense method gets one sparsity (0) and no drop fraction, methods without
    drop/grow updates no drop fraction. ``extra_sparsities``: more levels (both networks) for some widths
    only (`matched_sparsities`)."""
    names = list(dict.fromkeys(([DENSE] if dense else []) + list(methods)))
    cells = []
    for env, method, lr, width in itertools.product(envs, names, lrs, widths):
        if method == DENSE:
            cells.append(Cell(env, method, 0.0, 0.0, None, lr, width))
            continue
        dfs = drop_fractions if has_topology(method, algo) else (None,)
        levels = list(sparsities) + [(x, x) for x in (extra_sparsities or {}).get(width, ())
                                     if (x, x) not in sparsities]
        for (a, c), df in itertools.product(levels, dfs):
            cells.append(Cell(env, method, a, c, df, lr, width))
    return sorted(set(cells), key=cells.index)


def critic_width_overrides(base: cfg_lib.Config, width: int) -> Dict[str, Any]:
    """``agent.critic_hidden`` with every layer (MLP) or block (SimBa) of ``base``'s critic ``width`` wide."""
    return {"agent.critic_hidden": (int(width),) * len(base.agent.critic_hidden or base.agent.hidden)}


def cell_config(cell: Cell, algo: str, overrides: Dict[str, Any], seed: int = 0, recipe: Optional[str] = None):
    """The config a separate run of this cell would use (its numbers as static config values); ``recipe``:
    a `presets.RECIPES` entry under ``overrides``."""
    values = {**overrides, "env.name": cell.env, "seed": seed}
    if cell.width is not None:
        values.update(critic_width_overrides(presets.make_config(cell.method, algo, recipe=recipe, **overrides),
                                             cell.width))
    if cell.method != DENSE:
        values.update({"sparsity.actor": cell.actor_sparsity, "sparsity.critic": cell.critic_sparsity})
        if presets.preset(cell.method, algo).get("sparsity.er_lambdas") is not None:
            # a sweep gives sparsity levels: DS's ER lambdas give way to ER solved for each level (= ERK)
            values.update({"sparsity.er_lambdas": None, "sparsity.distribution": "erk"})
    if cell.drop_fraction is not None:
        values["topology.drop_fraction"] = cell.drop_fraction
    if cell.lr is not None:
        values.update({"agent.actor_lr": cell.lr, "agent.critic_lr": cell.lr})
    return presets.make_config(cell.method, algo, recipe=recipe, **values)


def group_cells(cells: Sequence[Cell]) -> Dict[Tuple[str, str, Optional[int]], List[Cell]]:
    """Cells that can share one compiled program: same env, method and critic width."""
    groups: Dict[Tuple[str, str, Optional[int]], List[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.env, cell.method, cell.width), []).append(cell)
    return groups


def group_config(cells: Sequence[Cell], algo: str, overrides: Dict[str, Any], recipe: Optional[str] = None):
    """The group's static config: the first cell's, with a sparsity > 0 if any cell has one (so the
    networks get masks; each entry's own level is traced)."""
    rep = max(cells, key=lambda c: (c.actor_sparsity > 0 or c.critic_sparsity > 0, -cells.index(c)))
    return cell_config(rep, algo, overrides, recipe=recipe)


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


PARTIAL = "_partial"  # under a sweep's root: the checkpoints of its batches still running


def partial_dir(root: str, batch: Sequence[Tuple[Cell, int]], config: cfg_lib.Config) -> str:
    """Where a batch keeps its newest checkpoint while it runs: named by its entries (cells x seeds) and
    its program's config, so a rerun finds it whatever other batches finished meanwhile, and a rerun with
    other settings (``--set``) starts afresh."""
    text = json.dumps([[[dataclasses.astuple(cell), seed] for cell, seed in batch], cfg_lib.to_dict(config)],
                      sort_keys=True, default=str)
    return os.path.join(root, PARTIAL, hashlib.sha1(text.encode()).hexdigest()[:16])


class BatchCheckpoint:
    """A sweep batch's period callback: checkpoint after every period (the newest kept), and what a rerun
    resumes from. Sharded states are saved as host copies, as the launcher saves them."""

    def __init__(self, workdir: str, config: cfg_lib.Config, num_entries: int, sharded: bool):
        self.workdir, self.config, self.num_entries, self.sharded = workdir, config, num_entries, sharded

    def __call__(self, period) -> None:
        states = dist.to_host(period.states) if self.sharded else period.states
        checkpoint.save(self.workdir, period.period, states, period.history, self.config, self.num_entries, keep=1)

    def restore(self, mesh) -> Dict[str, Any]:
        """``runner.train``'s resume arguments (states, start period, history), or {} with no checkpoint."""
        if not checkpoint.all_periods(self.workdir):
            return {}
        restored = runs.restore(self.workdir)
        return {"states": dist.to_global(restored.states, mesh, dist.state_spec(0)),
                "start_period": restored.period, "history": restored.history}


def run_group(root: str, algo: str, cells: Sequence[Cell], seeds: Sequence[int], overrides: Dict[str, Any],
              max_batch: int = 0, mesh=None, log=print, stop: Optional[callbacks.StopRequest] = None,
              recipe: Optional[str] = None) -> int:
    """Run the not-yet-done cells of one group in vmapped batches; returns the number of cells run."""
    todo = [c for c in cells if not is_done(c, root)]
    if not todo:
        return 0
    config = group_config(todo, algo, overrides, recipe)
    runner = runner_lib.Runner(config, 0, mesh)
    entries = [(cell, seed) for cell in todo for seed in seeds]
    what = f"{todo[0].env} / {todo[0].method}" + (f" / critic width {todo[0].width}" if todo[0].width else "")
    for batch in _batches(entries, max_batch, runner.mesh.shape[dist.SEED]):
        real = [e for i, e in enumerate(batch) if e not in batch[:i]]  # padding repeats are dropped below
        keys = np.stack([np.asarray(jax.random.PRNGKey(seed)) for _, seed in batch])
        t0 = time.time()
        log(f"[sweep] {what}: {len(real)} runs in one program "
            f"({len({c for c, _ in real})} cells x seeds) on {runner.mesh.devices.size} device(s)")
        partial = partial_dir(root, batch, config)
        saver = BatchCheckpoint(partial, config, len(batch), runner.mesh.devices.size > 1)
        # the checkpoint is saved before the stop check: a stopped (or killed) batch resumes from it
        hooks = [saver] + ([callbacks.StopCheck(stop, f"group {what}")] if stop else [])
        resumed = saver.restore(runner.mesh)
        if resumed:
            log(f"[sweep]   resuming after period {resumed['start_period']}/{trainer.num_periods(config)} "
                f"from {partial}")
        result = runner.train(keys=keys, actor_sparsity=[c.actor_sparsity for c, _ in batch],
                              critic_sparsity=[c.critic_sparsity for c, _ in batch], callbacks=hooks,
                              hparams=None if resumed else _hparams(batch, runner.trainer.agent.default_hparams(),
                                                                    todo) or None, **resumed)
        agent = dist.to_host(result.states.agent)
        log(f"[sweep]   done in {time.time() - t0:.0f} s")
        if not dist.is_primary():
            continue
        for cell in dict.fromkeys(c for c, _ in real):
            index = [i for i, (c, s) in enumerate(batch) if c == cell and (c, s) not in batch[:i]]
            cell_seeds = [batch[i][1] for i in index]
            spec = cfg_lib.RunSpec(cell_config(cell, algo, overrides, seed=cell_seeds[0], recipe=recipe),
                                   tuple(cell_seeds), cell.workdir(root))
            launch.write_entries(spec, result.history, index, len(batch), runner.trainer, agent)
        shutil.rmtree(partial, ignore_errors=True)  # its cells are done: their summaries mark it
    return len(todo)


def run(root: str, algo: str, cells: Sequence[Cell], seeds: Sequence[int], overrides: Dict[str, Any],
        max_batch: int = 0, aggregate_only: bool = False, mesh=None, log=print,
        stop: Optional[callbacks.StopRequest] = None, recipe: Optional[str] = None) -> int:
    """Run every not-done cell, group by group, then write the aggregated tables. Returns 0."""
    os.makedirs(root, exist_ok=True)
    groups = group_cells(cells)
    done = sum(is_done(c, root) for c in cells)
    log(f"[sweep] {len(cells)} cells in {len(groups)} compiled groups, {len(seeds)} seeds each; "
        f"{done} already done")
    if not aggregate_only:
        for cells_of_group in groups.values():
            run_group(root, algo, cells_of_group, seeds, overrides, max_batch=max_batch, mesh=mesh, log=log,
                      stop=stop, recipe=recipe)
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
        dense = summaries.get(Cell(cell.env, DENSE, 0.0, 0.0, None, cell.lr, cell.width)) or \
            summaries.get(Cell(cell.env, DENSE, 0.0, 0.0, None, None, cell.width))
        mean, std = s["mean"], s["std"]
        rows.append({
            "env": cell.env, "method": cell.method, "actor_sparsity": cell.actor_sparsity,
            "critic_sparsity": cell.critic_sparsity, "drop_fraction": cell.drop_fraction, "lr": cell.lr,
            "width": cell.width, "critic_weights": mean.get("critic_weights"),
            "critic_active_weights": mean.get("critic_active_weights"),
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
    """One table per env; returns as % of that env's dense run (of the same critic width)."""
    lines = [f"# {title}", ""]
    for env in dict.fromkeys(r["env"] for r in rows):
        lines += [f"## {env}", "",
                  "| method | critic width | sparsity actor/critic | drop fraction | lr | seeds | final return | "
                  "% dense | AUC % dense | total size | train FLOPs |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["env"] == env):
            ret = f"{_fmt(r['final_return'])} ± {_fmt(r['final_return_std'])}"
            df = "preset" if r["drop_fraction"] is None else f"{r['drop_fraction']:g}"
            lr = "preset" if r["lr"] is None else f"{r['lr']:g}"
            width = "preset" if r.get("width") is None else str(r["width"])
            lines.append(
                f"| {r['method']} | {width} | {r['actor_sparsity']:g}/{r['critic_sparsity']:g} | {df} | {lr} | "
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
    if len({r["width"] for r in rows if r.get("width") is not None}) > 1:
        run_logging.write_text_atomic(os.path.join(root, "scaling.md"), scaling_markdown(rows))
        plotting.scaling_curves(scaling_series(rows), os.path.join(root, "scaling.png"))
    return rows


# ---------------------------------------------------------------------------- scaling sweeps
def critic_weights(config: cfg_lib.Config) -> int:
    """The critic's weights (kernels, every Q) under ``config``, from shapes alone (no compilation)."""
    e = config.env
    env = envs.make_env(e.name, e.backend, e.episode_length, e.action_repeat, 1)
    agent = trainer.make_agent(config, env.observation_size, env.action_size)
    shapes = jax.eval_shape(agent.critic_module.init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, env.observation_size), np.float32),
                            jax.ShapeDtypeStruct((1, env.action_size), np.float32))
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes) if len(x.shape) >= 2))


def matched_sparsities(base: cfg_lib.Config, widths: Sequence[int]) -> Dict[int, List[float]]:
    """Per width, the sparsity at which its critic has as many weights as a narrower width's dense
    critic has (``1 - K(narrow) / K(wide)``, 3 decimals): a pruned wide network against a dense narrow
    one at equal trainable weights. The count is of the whole critic; a method that keeps some layer
    dense gets slightly more active weights, which `scaling_markdown` reports as measured."""
    counts = {w: critic_weights(cfg_lib.replace(base, **critic_width_overrides(base, w))) for w in widths}
    return {w: [round(1.0 - counts[n] / counts[w], 3) for n in sorted(widths) if n < w] for w in widths}


def scaling_series(rows: List[Dict[str, Any]]) -> Dict[str, List[Tuple[float, float, float, float, int]]]:
    """``{'<method> @ <sparsity>': [(critic weights, active weights, final return, its std, seeds)]}``
    over the widths, for `plotting.scaling_curves` (matched levels, which differ per width, are one line
    per method: 'matched')."""
    levels = {}
    for r in rows:
        levels.setdefault((r["method"], r["critic_sparsity"]), set()).add(r["width"])
    widths = {r["width"] for r in rows}
    series: Dict[str, list] = {}
    for r in sorted(rows, key=lambda r: (r["width"] or 0)):
        if r["final_return"] is None or r["critic_weights"] is None:
            continue
        shared = levels[(r["method"], r["critic_sparsity"])] == widths or r["method"] == DENSE
        label = r["method"] if r["method"] == DENSE else (
            f"{r['method']} @ {r['critic_sparsity']:g}" if shared else f"{r['method']} @ matched")
        series.setdefault(label, []).append((r["critic_weights"], r["critic_active_weights"], r["final_return"],
                                             r["final_return_std"] or 0.0, r["seeds"]))
    return series


def scaling_markdown(rows: List[Dict[str, Any]]) -> str:
    """The scaling sweep's table: per env, every cell by critic width, with its weights, all and active."""
    lines = ["# Scaling sweep", "",
             "Final return (last evaluation, mean ± std over seeds) against the critic's weights (kernels), "
             "all and active; % dense: of the dense critic of the same width.", ""]
    for env in dict.fromkeys(r["env"] for r in rows):
        lines += [f"## {env}", "", "| critic width | method | sparsity actor/critic | critic weights | active "
                  "weights | seeds | final return | % dense (same width) |", "|---:|---|---|---:|---:|---:|---|---:|"]
        for r in sorted((r for r in rows if r["env"] == env), key=lambda r: (r["width"] or 0, r["method"],
                                                                              r["critic_sparsity"])):
            lines.append(f"| {r['width']} | {r['method']} | {r['actor_sparsity']:g}/{r['critic_sparsity']:g} | "
                         f"{_fmt(r['critic_weights'], 0)} | {_fmt(r['critic_active_weights'], 0)} | {r['seeds']} | "
                         f"{_fmt(r['final_return'])} ± {_fmt(r['final_return_std'])} | {_fmt(r['final_pct_dense'])} |")
        lines.append("")
    return "\n".join(lines) + "\n"
