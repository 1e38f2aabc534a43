"""Rebuild lost cell records from the committed per-cell curves and ``cells.csv``.

    python -m experiments.reproduce.recover --tier small [--results docs/results]

Until 2026-12-02 the repository's ``.gitignore`` held ``runs/``, which also matched
``docs/results/<tier>/runs/``: the records `aggregate.keep_record` wrote were never committed, and the
cells finished in earlier sessions left only their aggregated files (``curves/<cell>.csv``: every
evaluation return per seed; ``cells.csv``: the sparsities, sizes, FLOP fractions and wall time of the
run's own summary). This rebuilds, for every cell with a curve and a row but no record, a record the
aggregator reads as before, so the grid skips those cells and the tables are recomputed from the same
numbers. What a rebuilt record cannot hold is said in its ``summary.json`` (``recovered``): the per-period
wall times are lost, so the whole run's wall time sits on the last evaluation; training metrics other
than the evaluation return are lost. Cells with a record are left alone.
"""
from __future__ import annotations

import csv
import json
import os
import sys

from absl import app, flags

from experiments.reproduce import aggregate, grid
from sparse_rl_jax import run_logging

FLAGS = flags.FLAGS
flags.DEFINE_enum("tier", "small", list(grid.TIERS), "which tier's records to rebuild")
flags.DEFINE_string("results", "docs/results", "root of the aggregated files (as for experiments.reproduce)")

SUMMARY_KEYS = ("sparsity_actor", "sparsity_critic", "total_size", "train_flops", "inference_flops")


def _number(text: str):
    return float(text) if text != "" else None


def recover(results: str, tier: grid.Tier) -> list:
    """Rebuild the missing records of ``tier``; returns the keys of the cells rebuilt."""
    out = os.path.join(results, tier.name)
    with open(os.path.join(out, "cells.csv")) as f:
        rows = {(r["task"], r["algo"], r["cell"]): r for r in csv.DictReader(f)}
    done = []
    for cell in tier.cells:
        record = aggregate.record_dir(results, tier, cell)
        curve = os.path.join(out, "curves", f"{cell.task}_{cell.algo}_{cell.dirname}.csv")
        row = rows.get((cell.task, cell.algo, cell.name))
        if os.path.exists(os.path.join(record, "summary.json")) or row is None or not os.path.exists(curve):
            continue
        with open(curve) as f:
            points = list(csv.DictReader(f))
        seeds = int(row["seeds"])
        os.makedirs(os.path.join(record, "metrics"), exist_ok=True)
        for i in range(seeds):
            lines = []
            for j, p in enumerate(points):
                entry = {"env_steps": int(p["env_steps"]), run_logging.RETURN_KEY: float(p[f"seed_{i}"])}
                if j == len(points) - 1 and row["wall_time_s"]:
                    entry["training/walltime"] = float(row["wall_time_s"])
                lines.append(json.dumps(entry))
            run_logging.write_text_atomic(os.path.join(record, "metrics", f"seed_{i}.jsonl"),
                                          "\n".join(lines) + "\n")
        summary = {"mean": {k: _number(row[k]) for k in SUMMARY_KEYS},
                   "recovered": "rebuilt by experiments.reproduce.recover from curves/ and cells.csv: "
                                "evaluation returns per seed and the summary's sparsities, sizes and FLOP "
                                "fractions are the run's; per-period wall times are lost (the run's total "
                                "sits on its last evaluation), as are its training metrics"}
        run_logging.write_text_atomic(os.path.join(record, "summary.json"), json.dumps(summary, indent=1) + "\n")
        done.append(cell.key)
    return done


def main(argv) -> int:
    del argv
    keys = recover(FLAGS.results, grid.TIERS[FLAGS.tier])
    print(f"recover: rebuilt {len(keys)} record(s): {', '.join(keys) or 'none'}")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
