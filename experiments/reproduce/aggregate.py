"""Per-cell figures of a reproduction tier, and the files they are written to.

For every finished cell (its run's ``summary.json`` exists):

* ``final_return``: per seed the mean of its last `LAST_EVALS` evaluations (one evaluation is noisy),
  then mean and std over seeds;
* ``auc``: the area under the eval-return curve over the env-step range (the curve's mean height);
* ``pct_dense``: ``final_return`` as a percentage of the dense reference cell's (`grid.Cell.reference`)
  final return, taken over the reference's evaluations up to the same env step (DS-SAC's 1M-step run
  against the 3M-step dense SAC at the paper tier is compared at 1M);
* ``steps_to_dense``: the first evaluation step at which the seed-mean curve reaches the reference's
  final return (empty: not reached within the budget);
* achieved sparsity of actor and critic, RLx2 total size, training and inference FLOPs as fractions of
  dense (the run's own ``summary.json``), and wall time (the sum of the run's per-period wall times).

Written to ``<results>/<tier>/``: ``cells.csv`` and ``table.md`` (one row per cell),
``curves/<task>_<algo>_<cell>.csv`` (eval return per seed and mean at every evaluation) and
``<task>_<algo>.png`` (mean over seeds with the min-max band).
"""
from __future__ import annotations

import csv
import io
import os
from typing import Any, Dict, List, Optional

import numpy as np

from experiments.reproduce import grid
from sparse_rl_jax import plotting, run_logging

LAST_EVALS = 3
FIELDS = ("task", "algo", "cell", "seeds", "env_steps", "final_return", "final_return_std", "auc",
          "pct_dense", "steps_to_dense", "sparsity_actor", "sparsity_critic", "total_size", "train_flops",
          "inference_flops", "wall_time_s", "reference")


def _curve(history: List[list]) -> tuple:
    """(steps[T], returns[T, seeds]) of the evaluations."""
    seeds = len(history[0][1].get(run_logging.RETURN_KEY, [])) if history else 0
    per_seed = [run_logging.returns_of(history, i) for i in range(seeds)]
    if not per_seed:
        return np.zeros(0), np.zeros((0, 0))
    return per_seed[0][0], np.stack([r for _, r in per_seed], axis=1)


def final_return(steps: np.ndarray, returns: np.ndarray, upto: Optional[float] = None) -> np.ndarray:
    """Per seed: mean of the last `LAST_EVALS` evaluations at or before ``upto`` env steps."""
    keep = steps <= upto if upto is not None else np.ones(len(steps), bool)
    return returns[keep][-LAST_EVALS:].mean(axis=0)


def steps_to_reach(steps: np.ndarray, returns: np.ndarray, target: float) -> Optional[int]:
    """First evaluation step at which the mean over seeds reaches ``target``."""
    hit = np.nonzero(returns.mean(axis=1) >= target)[0]
    return int(steps[hit[0]]) if len(hit) else None


def _wall_time(history: List[list]) -> Optional[float]:
    times = [run_logging.mean_of(m.get("training/walltime")) for _, m in history]
    times = [t for t in times if t is not None]
    return float(sum(times)) if times else None


def load(root: str, tier: grid.Tier) -> Dict[grid.Cell, Dict[str, Any]]:
    """Every finished cell of the tier: {cell: {"history", "summary"}}."""
    out = {}
    for cell in tier.cells:
        workdir = grid.cell_dir(root, tier, cell)
        path = os.path.join(workdir, "summary.json")
        if os.path.exists(path):
            out[cell] = {"history": run_logging.read_history(workdir), "summary": run_logging.read_json(path)}
    return out


def cell_rows(runs: Dict[grid.Cell, Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows = []
    for cell, run in runs.items():
        steps, returns = _curve(run["history"])
        if not len(steps):
            continue
        final = final_return(steps, returns)
        mean = run["summary"]["mean"]
        row = {"task": cell.task, "algo": cell.algo, "cell": cell.name, "seeds": returns.shape[1],
               "env_steps": int(steps[-1]), "final_return": float(final.mean()),
               "final_return_std": float(final.std()),
               "auc": float(np.mean([run_logging.area_under_curve(steps, returns[:, i])
                                     for i in range(returns.shape[1])])),
               "pct_dense": None, "steps_to_dense": None, "wall_time_s": _wall_time(run["history"]),
               "reference": cell.reference.name}
        row.update({k: mean.get(k) for k in ("sparsity_actor", "sparsity_critic", "total_size", "train_flops",
                                             "inference_flops")})
        ref = runs.get(cell.reference)
        if ref is not None:
            rsteps, rreturns = _curve(ref["history"])
            target = float(final_return(rsteps, rreturns, upto=steps[-1]).mean())
            row["pct_dense"] = 100.0 * row["final_return"] / target if target > 0 else None
            row["steps_to_dense"] = steps_to_reach(steps, returns, target)
        rows.append(row)
    return rows


def _fmt(value: Any, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "frac":
        return f"{value:.3f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "time":
        return run_logging.format_duration(value)
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def table_markdown(rows: List[Dict[str, Any]], tier: grid.Tier) -> str:
    lines = [f"| task | algo | cell | seeds | final return (mean ± std) | AUC | % of dense | steps to dense's "
             "final | sparsity actor / critic | total size | train FLOPs | infer FLOPs | wall time |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['algo']} | {r['cell']} | {r['seeds']} | {_fmt(r['final_return'])} ± "
            f"{_fmt(r['final_return_std'])} | {_fmt(r['auc'])} | {_fmt(r['pct_dense'])} | "
            f"{_fmt(r['steps_to_dense'], 'int') if r['steps_to_dense'] is not None else 'not reached'} | "
            f"{_fmt(r['sparsity_actor'], 'frac')} / {_fmt(r['sparsity_critic'], 'frac')} | "
            f"{_fmt(r['total_size'], 'frac')} | {_fmt(r['train_flops'], 'frac')} | "
            f"{_fmt(r['inference_flops'], 'frac')} | {_fmt(r['wall_time_s'], 'time')} |")
    done = {(r["task"], r["algo"], r["cell"]) for r in rows}
    missing = [c.key for c in tier.cells if (c.task, c.algo, c.name) not in done]
    if missing:
        lines.append(f"\nNot finished yet ({len(missing)} of {len(tier.cells)}): {', '.join(missing)}")
    lines.append(f"\nFinal return: per seed the mean of its last {LAST_EVALS} evaluations, then mean ± std "
                 "over seeds. % of dense and steps to dense's final: against the cell named in "
                 "`cells.csv`'s `reference` column at the same env steps. Sizes and FLOPs are fractions of "
                 "the dense agent.")
    return "\n".join(lines) + "\n"


def _csv(rows: List[Dict[str, Any]], fields) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in fields})
    return out.getvalue()


def write(root: str, results: str, tier: grid.Tier) -> List[Dict[str, Any]]:
    """Collect the tier's finished cells into ``<results>/<tier>/``; returns the table rows."""
    runs = load(root, tier)
    rows = cell_rows(runs)
    out = os.path.join(results, tier.name)
    os.makedirs(os.path.join(out, "curves"), exist_ok=True)
    for cell, run in runs.items():
        steps, returns = _curve(run["history"])
        curve = [{"env_steps": int(s), **{f"seed_{i}": float(v) for i, v in enumerate(r)},
                  "mean": float(r.mean())} for s, r in zip(steps, returns)]
        fields = ["env_steps"] + [f"seed_{i}" for i in range(returns.shape[1])] + ["mean"]
        run_logging.write_text_atomic(
            os.path.join(out, "curves", f"{cell.task}_{cell.algo}_{cell.dirname}.csv"), _csv(curve, fields))
    run_logging.write_text_atomic(os.path.join(out, "cells.csv"), _csv(rows, FIELDS))
    run_logging.write_text_atomic(os.path.join(out, "table.md"), table_markdown(rows, tier))
    for task, algo in sorted({(c.task, c.algo) for c in runs}):
        curves = {c.name: r["history"] for c, r in runs.items() if (c.task, c.algo) == (task, algo)}
        plotting.learning_curves(curves, os.path.join(out, f"{task}_{algo}.png"),
                                 title=f"{task} {algo.upper()} ({tier.name} tier)")
    return rows
