"""The reproduction study: one resumable command per tier.

    python -m experiments.reproduce --tier small                 # the 2-core CPU grid (about 1 h a cell here)
    python -m experiments.reproduce --tier small --cells halfcheetah/td3/dense@rlx2.scaled,halfcheetah/td3/rlx2
    python -m experiments.reproduce --tier paper                 # the papers' budgets, for a GPU/TPU
    python -m experiments.reproduce --tier small --report_only   # tables and figures from the records
    python -m experiments.reproduce --list [--tier paper]        # each cell's state, then the hours left

Each cell (`experiments.reproduce.grid`) runs as launcher runs (``python -m experiments.train
--config=experiments/reproduce/config.py:<tier>,<cell> --seeds N --config.seed=FIRST``), one per
**batch** of seeds, in ``<workdir>/<tier>/<task>/<algo>/<cell>/seeds_<first>-<last>/``, with the seeds
vmapped in one compiled program and a checkpoint every evaluation period; the sparsity curve's cells of
a method run as one batch with their levels vmapped too (``--sparsity_levels``, in
``<method>__levels/``), each level then recorded as its own cell's batch. A finished batch's record
(`experiments.reproduce.records`: config, summary, per-seed metrics, provenance) is copied to
``<results>/<tier>/runs/`` for committing. A rerun resumes a batch cut off mid-run from its newest
checkpoint, adds a batch with the next free seeds to a cell that has fewer than ``--seeds`` (``--seeds
20`` on a finished 10-seed cell runs seeds 10-19), and starts the rest, in grid order. A cell that needs
a family choice (`experiments.reproduce.choices`) makes it from the records once its deciding cells are
done, and waits (is skipped with a note) until then.

After each batch, and with ``--report_only``, the records are turned into ``<results>/<tier>/``'s tables
and figures (`experiments.reproduce.report`). A batch that fails is reported and left for the next rerun.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
from typing import List, Optional, Sequence, Tuple

from absl import app, flags

from experiments.reproduce import choices, grid, records, report

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "experiments", "reproduce", "config.py")
flags.DEFINE_enum("tier", "small", list(grid.TIERS), "which grid: small (2-core CPU) or paper (GPU/TPU)")
flags.DEFINE_list("cells", [], "only these cells, as <task>/<algo>/<method>[@<tag>.<tag>] (see --list)")
flags.DEFINE_string("workdir", "runs/reproduce", "root of the cells' run directories")
flags.DEFINE_string("results", "docs/results", "root of the committed records, tables and plots")
flags.DEFINE_integer("seeds", None, "seeds every cell should have (default: the tier's: small 10, paper 8)",
                     lower_bound=2)
flags.DEFINE_integer("max_batches", None, "stop after running this many batches", lower_bound=1)
flags.DEFINE_multi_string("set", [], "extra launcher override for every batch started, e.g. "
                          "--set total_env_steps=20000 (becomes --config.total_env_steps=20000)")
flags.DEFINE_string("markdown", None, "the page whose <!-- study:<tier> --> section the report fills "
                    "(default: docs/RESULTS.md when --results is docs/results, else none)")
flags.DEFINE_boolean("report_only", False, "only turn the committed records into tables and figures")
flags.DEFINE_boolean("list", False, "print the tier's cells and their state, and an estimate of the hours "
                     "left at the recorded rates, then exit")


def _final(results: str, tier: grid.Tier):
    def final(cell: grid.Cell):
        data = records.load(results, tier, cell)
        return None if data is None else report.final_return(data.steps, data.returns)
    return final


def _untrained(results: str, tier: grid.Tier):
    """Per seed, a finished cell's first evaluation: after the random warm-up, before any update."""
    def first(cell: grid.Cell):
        data = records.load(results, tier, cell)
        return None if data is None else np.asarray(data.returns[0], float)
    return first


def partial_batch(workdir: str) -> Optional[str]:
    """A batch of the cell's run directory that was cut off after its first checkpoint."""
    if not os.path.isdir(workdir):
        return None
    for name in sorted(os.listdir(workdir)):
        d = os.path.join(workdir, name)
        if records.parse_batch(name) and not os.path.exists(os.path.join(d, "summary.json")) \
                and os.path.isdir(os.path.join(d, "checkpoints")):
            return d
    return None


def state_of(results: str, root: str, tier: grid.Tier, cell: grid.Cell, seeds: int) -> str:
    data = records.load(results, tier, cell)
    have = data.num_seeds if data is not None else 0
    chosen = choices.of(results, tier, cell)
    try:
        grid.overrides(cell, tier, chosen)
    except grid.NotChosen:
        return "not chosen (second task)"
    except grid.MissingChoice:
        pass
    if have >= grid.seeds_wanted(tier, cell, seeds, chosen):
        return f"done ({have} seeds)"
    group = grid.level_group(tier, cell)
    if partial_batch(grid.cell_dir(root, tier, cell)) or (group and partial_batch(grid.group_dir(root, tier, group))):
        return f"partial ({have} seeds recorded)"
    return f"{have} seeds" if have else "new"


def estimate(results: str, root: str, tier: grid.Tier, cells: Sequence[grid.Cell], seeds: int) -> str:
    """One line: what is left of ``cells`` in seed-steps and in hours at the recorded rates
    (`report.seed_steps_left`, `report.hours_at_rates`)."""
    todo = [c for c in cells if not state_of(results, root, tier, c, seeds).startswith(("done", "not chosen"))]
    count, left = report.seed_steps_left(results, tier, todo, seeds)
    if not left:
        return "remaining: nothing"
    hours, parts = report.hours_at_rates(report.seed_step_rates(report.load(results, tier).cells), left)
    if hours is None:
        return f"remaining: {count:.0f} cells, {sum(left.values()) / 1e6:.1f}M seed-steps (no finished batch " \
               "yet to take a rate from)"
    return (f"remaining: {count:.0f} cells, {sum(left.values()) / 1e6:.1f}M seed-steps, about {hours:.1f} hours of "
            f"wall time at the recorded rates ({'; '.join(parts)}; each the rate its batches ran at, on a machine "
            "shared or not); a cut batch's progress is not subtracted")


def launch_args(tier: grid.Tier, cell: grid.Cell, batch_dir: str, first: int, count: int, results: str,
                extra: Sequence[str]) -> List[str]:
    """The launcher command of a batch: resume when it has a checkpoint, else start it."""
    cmd = [sys.executable, "-m", "experiments.train", "--workdir", batch_dir, "--noplots"]
    if os.path.isdir(os.path.join(batch_dir, "checkpoints")):
        return cmd + ["--resume"]
    for name in ("config.json", "metrics", "tensorboard"):  # cut off before its first checkpoint
        path = os.path.join(batch_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    sets = [f"--config.{s}" for s in extra]
    return cmd + [f"--config={CONFIG}:{tier.name},{cell.key},{os.path.abspath(results)}", "--seeds", str(count),
                  f"--config.seed={first}"] + sets


def run_batch(cmd: List[str], batch_dir: str) -> int:
    os.makedirs(batch_dir, exist_ok=True)
    records.start_attempt(batch_dir, REPO, cmd)  # a resumed batch keeps its start and adds this attempt
    t0 = time.time()
    # the launcher runs from the repository (it imports `experiments`), wherever this was started
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    rc = subprocess.call(cmd, cwd=REPO, env=env)
    records.finish_provenance(batch_dir, rc, time.time() - t0)
    return rc


def _markdown() -> Optional[str]:
    if FLAGS.markdown is not None:
        return FLAGS.markdown or None
    default = FLAGS["results"].default
    return "docs/RESULTS.md" if os.path.abspath(FLAGS.results) == os.path.abspath(default) else None


def level_group(results: str, root: str, tier: grid.Tier, cell: grid.Cell,
                selected: Sequence[grid.Cell]) -> Tuple[grid.Cell, ...]:
    """The cells that run in one program with ``cell``: its level group among ``selected``
    (`grid.level_group`: the sparsity levels vmapped beside the seeds), or () to run it on its own (no
    level, the only one selected, or the group's records hold different seeds, or a cell has a batch of
    its own cut off, which finishes first)."""
    group = tuple(c for c in grid.level_group(tier, cell) if c in selected)
    if len(group) < 2:
        return ()
    if partial_batch(grid.group_dir(root, tier, group)):  # a cut-off group run resumes as one
        return group
    have = {tuple(data.seeds) if data else () for data in (records.load(results, tier, c) for c in group)}
    if len(have) > 1 or any(partial_batch(grid.cell_dir(root, tier, c)) for c in group):
        return ()
    return group


def _run_cell(tier: grid.Tier, c: grid.Cell, seeds: int, results: str, root: str,
              waiting: List[str], selected: Sequence[grid.Cell] = ()) -> Optional[int]:
    """Run the cell's next batch (its exit code), or None when it has its seeds or waits for a choice. A
    sparsity-curve cell runs with its level group in one program (`level_group`), each level's run then
    recorded as its cell's batch."""
    group = level_group(results, root, tier, c, selected)
    cells = group or (c,)
    cdir = grid.group_dir(root, tier, group) if group else grid.cell_dir(root, tier, c)
    for d in records.finished_batches(cdir):  # finished but not recorded (cut off in between)
        for cell in cells:
            if not os.path.exists(os.path.join(records.cell_record(results, tier, cell), os.path.basename(d),
                                               "summary.json")):
                records.keep(d, results, tier, cell)
    have = min(data.num_seeds if data else 0 for data in (records.load(results, tier, cell) for cell in cells))
    batch = partial_batch(cdir)
    if have >= seeds and batch is None:
        return None
    chosen = choices.choose(results, tier, c, _final(results, tier), _untrained(results, tier))
    want = grid.seeds_wanted(tier, c, seeds, chosen)
    if have >= want and batch is None:
        return None
    try:
        grid.make_config(c, tier, chosen)
    except grid.NotChosen:
        return None
    except grid.MissingChoice as err:
        waiting.append(c.key)
        print(f"reproduce: {c.key} waits: {err}", flush=True)
        return None
    if batch is None:
        used = [records.next_seed(results, root, tier, cell) for cell in cells]
        used += [records.parse_batch(n).stop for n in (os.listdir(cdir) if os.path.isdir(cdir) else [])
                 if group and records.parse_batch(n)]
        first, count = max(used), want - have
        batch = os.path.join(cdir, records.batch_name(first, count))
    else:
        rng = records.parse_batch(os.path.basename(batch))
        first, count = rng.start, len(rng)
    batch = os.path.abspath(batch)
    cmd = launch_args(tier, cells[0], batch, first, count, results, FLAGS.set)
    label = c.key
    if group:
        levels = ",".join(f"{grid.level_of(cell):g}" for cell in group)
        cmd += [] if cmd[-1] == "--resume" else ["--sparsity_levels", levels]
        label = f"{c.task}/{c.algo}/{c.method} at sparsity levels {levels} ({', '.join(x.key for x in group)})"
    print(f"\n=== {label} seeds {first}-{first + count - 1} ===\n{' '.join(cmd)}", flush=True)
    t0 = time.time()
    rc = run_batch(cmd, batch)
    print(f"=== {label}: exit {rc} after {time.time() - t0:.0f} s ===", flush=True)
    if rc == 0:
        for cell in cells:
            records.keep(batch, results, tier, cell)
        report.write(results, tier, _markdown())
    return rc


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
    seeds, results, root = FLAGS.seeds or tier.seeds, FLAGS.results, FLAGS.workdir
    if FLAGS.list:
        for c in cells:
            group = grid.level_group(tier, c)  # a curve cell runs in its level group's directory
            where = grid.group_dir(root, tier, group) if group else grid.cell_dir(root, tier, c)
            print(f"{state_of(results, root, tier, c, seeds):26s} {c.key:48s} {where}")
        print(estimate(results, root, tier, cells, seeds))
        return 0
    failed, waiting, ran = [], [], 0
    if not FLAGS.report_only:
        print(f"reproduce: tier {tier.name}: {len(cells)} cells, {seeds} seeds each", flush=True)
        # passes in grid order until nothing more can run: a cell waiting for a choice runs in a later pass
        # once the cells that decide it have finished
        progressed = True
        while progressed and not (FLAGS.max_batches and ran >= FLAGS.max_batches):
            progressed, waiting = False, []
            for c in cells:
                if (FLAGS.max_batches and ran >= FLAGS.max_batches) or c.key in failed:
                    continue
                outcome = _run_cell(tier, c, seeds, results, root, waiting, cells)
                if outcome is None:
                    continue
                ran += 1
                if outcome == 0:
                    progressed = True
                    continue
                failed.append(c.key)
                if outcome in (130, 143):  # interrupted / terminated: stop the grid too
                    progressed = False
                    break
    written = report.write(results, tier, _markdown())
    print(f"\nreproduce: {written} finished cells reported in {os.path.join(results, tier.name)}")
    if waiting:
        print(f"reproduce: waiting for choices: {', '.join(waiting)}")
    if failed:
        print(f"reproduce: failed cells (rerun to retry): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
