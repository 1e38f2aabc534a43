"""A cell's committed record: batches of seeds, each with its full provenance, never overwritten.

``<results>/<tier>/runs/<task>/<algo>/<cell>/seeds_<first>-<last>/`` holds one **batch**: one launcher run
of seeds ``first..last`` (seed ``i`` of a vmapped run is the single run with ``config.seed + i``), with

* ``config.json``: the run's full config;
* ``summary.json``: its summary, including ``platform`` (Python, jax, flax, ... versions, backend);
* ``metrics/seed_<i>.jsonl``: every training and evaluation metric of seed ``first + i``;
* ``provenance.json``: the commit it ran from (and whether the tree had changes), the command, the CPU
  model and core count, host, start and end time.

A rerun adds a batch with the next free seeds; an existing batch is never replaced (`keep` refuses).
A run directory (checkpoints, TensorBoard) stays on its machine; the record is a few kB a seed.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from typing import Any, Dict, List, NamedTuple, Optional

import numpy as np

from experiments.reproduce import grid
from sparse_rl_jax import launch, run_logging

BATCH = re.compile(r"^seeds_(\d+)-(\d+)$")
PROVENANCE = "provenance.json"
SHARED = "one_program"  # provenance key of a batch whose program also ran other cells (sparsity levels)


def batch_name(first: int, count: int) -> str:
    return f"seeds_{first}-{first + count - 1}"


def parse_batch(name: str) -> Optional[range]:
    m = BATCH.match(name)
    return range(int(m.group(1)), int(m.group(2)) + 1) if m else None


def cell_record(results: str, tier: grid.Tier, cell: grid.Cell) -> str:
    return os.path.join(results, tier.name, "runs", cell.task, cell.algo, cell.dirname)


def finished_batches(folder: str) -> List[str]:
    """The batch folders under ``folder`` whose run finished (``summary.json`` present), by first seed."""
    if not os.path.isdir(folder):
        return []
    names = [n for n in os.listdir(folder) if parse_batch(n) is not None
             and os.path.exists(os.path.join(folder, n, "summary.json"))]
    return [os.path.join(folder, n) for n in sorted(names, key=lambda n: parse_batch(n).start)]


def _git(repo: str, *args: str) -> Optional[str]:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance(repo: str, command: List[str]) -> Dict[str, Any]:
    """What a batch is about to run from: commit, uncommitted changes, command, machine."""
    changes = (_git(repo, "status", "--porcelain", "--untracked-files=no") or "").splitlines()
    return {"commit": _git(repo, "rev-parse", "HEAD"), "uncommitted_changes": len(changes),
            "uncommitted_files": changes[:40],
            "command": command, "cpu_model": run_logging.cpu_model(), "cpu_count": os.cpu_count(),
            "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def start_attempt(run_dir: str, repo: str, command: List[str]) -> None:
    """Record a batch's start (its provenance) or, for a resumed batch, one more attempt in ``runs``: the
    commit and uncommitted files this attempt runs from. An attempt cut off (the machine or session gone)
    keeps its entry without an end, so every piece of code that computed part of a batch is on record."""
    path = os.path.join(run_dir, PROVENANCE)
    now = provenance(repo, command)
    data = run_logging.read_json(path) if os.path.exists(path) else now
    data.setdefault("runs", []).append({k: now[k] for k in ("started", "commit", "uncommitted_changes",
                                                            "uncommitted_files", "host")})
    run_logging.write_json(path, data)


def finish_provenance(run_dir: str, exit_code: int, seconds: float) -> None:
    """The end of the attempt `start_attempt` recorded last."""
    path = os.path.join(run_dir, PROVENANCE)
    data = run_logging.read_json(path) if os.path.exists(path) else {}
    runs = data.setdefault("runs", [])
    if not runs or "ended" in runs[-1]:  # a batch started before attempts had their own entry
        runs.append({})
    runs[-1].update({"ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "exit_code": exit_code,
                     "wall_seconds": round(seconds, 1)})
    run_logging.write_json(path, data)


class RecordExists(RuntimeError):
    pass


def keep(run_dir: str, results: str, tier: grid.Tier, cell: grid.Cell) -> str:
    """Copy a finished batch's record out of its run directory; refuses to replace an existing one. A
    levels run (`launch.LEVELS_FILE`: the group's levels in one program) gives the cell its level's own
    run, with the run's provenance and, under `SHARED`, the levels it shared the program with."""
    out = os.path.join(cell_record(results, tier, cell), os.path.basename(run_dir))
    if os.path.exists(os.path.join(out, "summary.json")):
        raise RecordExists(f"record {out} exists: records are never replaced (a rerun adds a new batch)")
    src_dir, provenance = run_dir, None
    levels_file = os.path.join(run_dir, launch.LEVELS_FILE)
    if os.path.exists(levels_file):
        levels = run_logging.read_json(levels_file)["sparsity_levels"]
        src_dir = launch.level_dir(run_dir, grid.level_of(cell))
        path = os.path.join(run_dir, PROVENANCE)
        provenance = run_logging.read_json(path) if os.path.exists(path) else {}
        provenance[SHARED] = {"sparsity_levels": levels, "level": grid.level_of(cell),
                              "note": "one program ran every level's seeds; its wall time is shared by them"}
    metrics = [os.path.join("metrics", n) for n in sorted(os.listdir(os.path.join(src_dir, "metrics")))
               if n.endswith(".jsonl")]
    os.makedirs(os.path.join(out, "metrics"), exist_ok=True)
    # summary.json last: its presence is what marks the record complete
    for name in ["config.json", PROVENANCE, *metrics, "summary.json"]:
        if name == PROVENANCE and provenance is not None:
            run_logging.write_json(os.path.join(out, name), provenance)
            continue
        src = os.path.join(run_dir if name == PROVENANCE else src_dir, name)
        if os.path.exists(src):
            with open(src) as f:
                run_logging.write_text_atomic(os.path.join(out, name), f.read())
    return out


def programs_sharing(batch: str) -> int:
    """How many cells' batches one program computed (a levels run: its levels; else 1), from the
    batch's provenance: its wall time is theirs together."""
    path = os.path.join(batch, PROVENANCE)
    shared = run_logging.read_json(path).get(SHARED) if os.path.exists(path) else None
    return len(shared["sparsity_levels"]) if shared else 1


class CellData(NamedTuple):
    """A cell's finished seeds, all batches together."""
    cell: grid.Cell
    steps: np.ndarray  # [T] evaluation env steps (common to every batch)
    returns: np.ndarray  # [T, seeds]
    seeds: List[int]
    batches: List[str]
    summaries: List[Dict[str, Any]]
    configs: List[Dict[str, Any]]
    histories: List[List[list]]

    @property
    def num_seeds(self) -> int:
        return self.returns.shape[1]


def curve(history: List[list]):
    """(steps[T], returns[T, seeds]) of a run's evaluations."""
    seeds = len(history[0][1].get(run_logging.RETURN_KEY, [])) if history else 0
    per_seed = [run_logging.returns_of(history, i) for i in range(seeds)]
    if not per_seed:
        return np.zeros(0), np.zeros((0, 0))
    return per_seed[0][0], np.stack([r for _, r in per_seed], axis=1)


def load(results: str, tier: grid.Tier, cell: grid.Cell) -> Optional[CellData]:
    """Every finished batch of ``cell``'s record, concatenated over seeds (None: none finished)."""
    parts = []
    for folder in finished_batches(cell_record(results, tier, cell)):
        history = run_logging.read_history(folder)
        steps, returns = curve(history)
        if not len(steps):
            continue
        cfg_path = os.path.join(folder, "config.json")
        parts.append((folder, steps, returns, history, run_logging.read_json(os.path.join(folder, "summary.json")),
                      run_logging.read_json(cfg_path) if os.path.exists(cfg_path) else {}))
    if not parts:
        return None
    common = parts[0][1]
    for p in parts[1:]:
        common = np.intersect1d(common, p[1])
    rets, seeds = [], []
    for folder, steps, returns, *_ in parts:
        rets.append(returns[np.isin(steps, common)])
        seeds += list(parse_batch(os.path.basename(folder)))[:returns.shape[1]]
    return CellData(cell, common, np.concatenate(rets, axis=1), seeds, [p[0] for p in parts],
                    [p[4] for p in parts], [p[5] for p in parts], [p[3] for p in parts])


def next_seed(results: str, root: str, tier: grid.Tier, cell: grid.Cell) -> int:
    """The first seed no batch of the cell (recorded or in a run directory) has used."""
    used = [-1]
    for folder in (cell_record(results, tier, cell), grid.cell_dir(root, tier, cell)):
        if os.path.isdir(folder):
            used += [parse_batch(n).stop - 1 for n in os.listdir(folder) if parse_batch(n) is not None]
    return max(used) + 1


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
