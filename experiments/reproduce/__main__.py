"""The reproduction study: one resumable command per tier.

    python -m experiments.reproduce --tier small                 # the 2-core CPU grid (15-25 min a cell here)
    python -m experiments.reproduce --tier small --cells halfcheetah/td3/dense,halfcheetah/td3/rlx2
    python -m experiments.reproduce --tier paper --seeds 8       # the papers' budgets, for a GPU/TPU
    python -m experiments.reproduce --tier small --aggregate_only
    python -m experiments.reproduce --list [--tier paper]

Each cell (`experiments.reproduce.grid`) is one launcher run, ``python -m experiments.train
--config=experiments/reproduce/config.py:<tier>,<cell> --seeds N``, in its own work directory
``<workdir>/<tier>/<task>/<algo>/<cell>/``, with the seeds vmapped in one compiled program and a
checkpoint every evaluation period. A finished cell's record (summary, config, per-seed metrics: a few kB)
is copied to ``<results>/<tier>/runs/`` for committing, since run directories stay on one machine. A rerun
skips cells whose ``summary.json`` exists in either, resumes a cell cut
off mid-run from its newest checkpoint (``--resume``), and starts the rest, in grid order (the dense
references first). After each cell, and with ``--aggregate_only``, the finished cells are collected into
``<results>/<tier>/``: one CSV of evaluation returns per cell, ``cells.csv`` and ``table.md`` with the
per-cell figures, and one learning-curve plot per task and algorithm (`experiments.reproduce.aggregate`).

A cell that fails (non-zero exit of its run) is reported and left for the next rerun; the others go on.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import List, Sequence

from absl import app, flags

from experiments.reproduce import aggregate, grid

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "experiments", "reproduce", "config.py")
flags.DEFINE_enum("tier", "small", list(grid.TIERS), "which grid: small (2-core CPU) or paper (GPU/TPU)")
flags.DEFINE_list("cells", [], "only these cells, as <task>/<algo>/<method>[@<regime>] (see --list)")
flags.DEFINE_string("workdir", "runs/reproduce", "root of the cells' run directories")
flags.DEFINE_string("results", "docs/results", "root of the aggregated CSVs, tables and plots")
flags.DEFINE_integer("seeds", None, "seeds per cell, vmapped (default: the tier's: small 3, paper 5)",
                     lower_bound=1)
flags.DEFINE_integer("max_cells", None, "stop after running this many cells (each resumed or started)",
                     lower_bound=1)
flags.DEFINE_multi_string("set", [], "extra launcher override for every cell started, e.g. "
                          "--set total_env_steps=20000 (becomes --config.total_env_steps=20000)")
flags.DEFINE_boolean("aggregate_only", False, "only collect the finished cells into --results")
flags.DEFINE_boolean("list", False, "print the tier's cells and their state, then exit")


def state_of(workdir: str, record: str = "") -> str:
    """done (its run or its committed record has a summary), partial (a checkpoint), or new."""
    if any(os.path.exists(os.path.join(d, "summary.json")) for d in (workdir, record) if d):
        return "done"
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        return "partial"
    return "new"


def launch_args(tier: grid.Tier, cell: grid.Cell, workdir: str, seeds: int, extra: Sequence[str]) -> List[str]:
    """The launcher command of a cell: resume when it has a checkpoint, else start it."""
    cmd = [sys.executable, "-m", "experiments.train", "--workdir", workdir, "--noplots"]
    if state_of(workdir) == "partial":
        return cmd + ["--resume"]
    if os.path.exists(os.path.join(workdir, "config.json")):
        # started but cut off before its first checkpoint: nothing worth keeping
        for name in ("config.json", "metrics", "tensorboard"):
            path = os.path.join(workdir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    sets = [f"--config.{s}" for s in extra]
    return cmd + [f"--config={CONFIG}:{tier.name},{cell.key}", "--seeds", str(seeds)] + sets


def main(argv) -> int:
    del argv
    tier = grid.TIERS[FLAGS.tier]
    try:
        cells = grid.select(tier, FLAGS.cells)
    except ValueError as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2
    bad = [s for s in FLAGS.set if "=" not in s]
    if bad:
        print(f"reproduce: error: invalid --set={bad[0]!r}: expected <field>=<value>", file=sys.stderr)
        return 2
    seeds = FLAGS.seeds or tier.seeds
    if FLAGS.list:
        for c in cells:
            w = grid.cell_dir(FLAGS.workdir, tier, c)
            print(f"{state_of(w, aggregate.record_dir(FLAGS.results, tier, c)):8s} {c.key:50s} scale {grid.scale(c, tier):.4g}  {w}")
        return 0
    failed = []
    if not FLAGS.aggregate_only:
        todo = [c for c in cells if state_of(grid.cell_dir(FLAGS.workdir, tier, c),
                                             aggregate.record_dir(FLAGS.results, tier, c)) != "done"]
        print(f"reproduce: tier {tier.name}: {len(cells) - len(todo)}/{len(cells)} cells done, "
              f"{len(todo)} to run ({seeds} seeds each)", flush=True)
        for i, c in enumerate(todo[:FLAGS.max_cells] if FLAGS.max_cells else todo, 1):
            w = os.path.abspath(grid.cell_dir(FLAGS.workdir, tier, c))
            os.makedirs(w, exist_ok=True)
            cmd = launch_args(tier, c, w, seeds, FLAGS.set)
            print(f"\n=== [{i}/{len(todo)}] {c.key} ({state_of(w)}) ===\n{' '.join(cmd)}", flush=True)
            t0 = time.time()
            # the launcher runs from the repository (it imports `experiments`), wherever this was started
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
            rc = subprocess.call(cmd, cwd=REPO, env=env)
            print(f"=== {c.key}: exit {rc} after {time.time() - t0:.0f} s ===", flush=True)
            if rc != 0:
                failed.append(c.key)
                if rc in (130, 143):  # interrupted / terminated: stop the grid too
                    break
                continue
            aggregate.keep_record(w, FLAGS.results, tier, c)
            aggregate.write(FLAGS.workdir, FLAGS.results, tier)
    rows = aggregate.write(FLAGS.workdir, FLAGS.results, tier)
    print(f"\nreproduce: {len(rows)} finished cells aggregated into {os.path.join(FLAGS.results, tier.name)}")
    if failed:
        print(f"reproduce: failed cells (rerun to retry): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
