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

Written to ``<results>/<tier>/``: ``cells.csv`` and ``table.md`` (one row per cell), ``claims.md`` (each
claim of the papers that the finished cells can test, with a plain verdict),
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


def record_dir(results: str, tier: grid.Tier, cell: grid.Cell) -> str:
    """The committed record of a finished cell: ``<results>/<tier>/runs/<task>/<algo>/<cell>/``.

    A run directory (checkpoints, TensorBoard) lives on one machine and is lost with it; the record keeps
    what the figures are computed from (``summary.json``, ``config.json``, ``metrics/seed_<i>.jsonl``), a
    few kB a cell, so a later session or another machine aggregates and skips the cell without its run.
    """
    return os.path.join(results, tier.name, "runs", cell.task, cell.algo, cell.dirname)


def keep_record(workdir: str, results: str, tier: grid.Tier, cell: grid.Cell) -> str:
    """Copy a finished cell's record out of its run directory (atomically per file); returns the record."""
    out = record_dir(results, tier, cell)
    os.makedirs(os.path.join(out, "metrics"), exist_ok=True)
    metrics = [os.path.join("metrics", n) for n in sorted(os.listdir(os.path.join(workdir, "metrics")))
               if n.endswith(".jsonl")]
    # summary.json last: its presence is what marks the record complete
    for name in ["config.json", *metrics, "summary.json"]:
        if not os.path.exists(os.path.join(workdir, name)):
            continue
        with open(os.path.join(workdir, name)) as f:
            run_logging.write_text_atomic(os.path.join(out, name), f.read())
    return out


def finished_dir(root: str, results: str, tier: grid.Tier, cell: grid.Cell) -> Optional[str]:
    """Where a finished cell's summary and metrics are: its run directory, else its record, else None."""
    for folder in (grid.cell_dir(root, tier, cell), record_dir(results, tier, cell)):
        if os.path.exists(os.path.join(folder, "summary.json")):
            return folder
    return None


def load(root: str, results: str, tier: grid.Tier) -> Dict[grid.Cell, Dict[str, Any]]:
    """Every finished cell of the tier: {cell: {"history", "summary"}}."""
    out = {}
    for cell in tier.cells:
        folder = finished_dir(root, results, tier, cell)
        if folder is not None:
            out[cell] = {"history": run_logging.read_history(folder),
                         "summary": run_logging.read_json(os.path.join(folder, "summary.json"))}
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
    lines = ["| task | algo | cell | seeds | final return (mean ± std) | AUC | % of dense | steps to dense's "
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


# ---------------------------------------------------------------------------- the papers' claims
def _compare(a: Dict[str, Any], b: Dict[str, Any], margin_pct: float = 0.0) -> tuple:
    """(verdict, text) for "a >= b - margin_pct% of b", by final return; a difference smaller than the
    seeds' spread (sqrt(std_a^2 + std_b^2)) is reported as not separable."""
    diff = a["final_return"] - b["final_return"] * (1 - margin_pct / 100)
    spread = float(np.hypot(a["final_return_std"], b["final_return_std"]))
    pct = 100 * a["final_return"] / b["final_return"] if b["final_return"] > 0 else None
    text = (f"{a['final_return']:.0f} ± {a['final_return_std']:.0f} vs {b['final_return']:.0f} ± "
            f"{b['final_return_std']:.0f}" + (f" ({pct:.0f}%)" if pct is not None else ""))
    if abs(diff) < spread:
        return "not separable", text
    return ("holds" if diff >= 0 else "does not hold"), text


CLAIMS = (
    # (claim, cell a, cell b, margin %): "a's final return >= b's (less margin% of b)"
    ("DS-TD3 at DS's ~50% ER densities >= dense TD3 (DS's settings)", "ds", "dense@ds_settings", 0.0),
    ("importance scoring improves DS at DS's densities", "ds+importance", "ds", 0.0),
    ("importance scoring improves DS at RLx2's sparsities", "ds+importance@rlx2_sparsity", "ds@rlx2_sparsity", 0.0),
    ("DS at RLx2's sparsities >= dense (DS: 'at 80% sparsity DS fails to learn well')", "ds@rlx2_sparsity",
     "dense@ds_settings", 0.0),
    ("RLx2 within 3% of dense at its sparsities", "rlx2", "dense", 3.0),
    ("RLx2 above static sparse at the same sparsity", "rlx2", "static", 0.0),
    ("RLx2 above RigL at the same sparsity", "rlx2", "rigl", 0.0),
    ("RLx2 above SET (DS) at the same sparsity", "rlx2", "ds@rlx2_sparsity", 0.0),
    ("importance scoring improves RLx2", "rlx2+importance", "rlx2", 0.0),
)


def claims(rows: List[Dict[str, Any]]) -> List[Dict[str, str]]:
    """Each claim of ALGORITHMS.md that the tier's cells can test, per task and algorithm, with a verdict
    by final return (and, for DS, whether it reached dense's final return within the budget)."""
    by = {(r["task"], r["algo"], r["cell"]): r for r in rows}
    out = []
    for task, algo in sorted({(r["task"], r["algo"]) for r in rows}):
        for claim, a, b, margin in CLAIMS:
            ra, rb = by.get((task, algo, a)), by.get((task, algo, b))
            if ra is None or rb is None:
                continue
            verdict, text = _compare(ra, rb, margin)
            out.append({"task": task, "algo": algo, "claim": claim, "verdict": verdict, "numbers": text})
        ds, ref = by.get((task, algo, "ds")), by.get((task, algo, "dense@ds_settings"))
        if ds is not None and ref is not None:
            reached = ds["steps_to_dense"]
            out.append({"task": task, "algo": algo,
                        "claim": "DS reaches dense's final return within 40-50% of the steps",
                        "verdict": "holds" if reached is not None and reached <= 0.5 * ds["env_steps"]
                        else "does not hold",
                        "numbers": f"reached at {reached:,} of {ds['env_steps']:,} steps" if reached is not None
                        else f"not reached in {ds['env_steps']:,} steps"})
    return out


def claims_markdown(items: List[Dict[str, str]], tier: grid.Tier) -> str:
    lines = [f"Claims checked on the {tier.name} tier's finished cells (final return: mean ± std over seeds; "
             "'not separable': the difference is smaller than the seeds' spread).", "",
             "| task | algo | claim | verdict | numbers |", "|---|---|---|---|---|"]
    lines += [f"| {c['task']} | {c['algo']} | {c['claim']} | {c['verdict']} | {c['numbers']} |" for c in items]
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
    runs = load(root, results, tier)
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
    run_logging.write_text_atomic(os.path.join(out, "claims.md"), claims_markdown(claims(rows), tier))
    for task, algo in sorted({(c.task, c.algo) for c in runs}):
        curves = {c.name: r["history"] for c, r in runs.items() if (c.task, c.algo) == (task, algo)}
        plotting.learning_curves(curves, os.path.join(out, f"{task}_{algo}.png"),
                                 title=f"{task} {algo.upper()} ({tier.name} tier)")
    return rows
