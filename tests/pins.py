"""Checksums of a short run of every preset, to show a refactor leaves what a run computes unchanged.

    python -m tests.pins --check          # rerun every preset, compare with tests/data/preset_pins.json
    python -m tests.pins --write          # record them (only before a change meant to keep them)
    python -m tests.pins --check --only rlx2/sac,dense/td3
    python -m tests.pins --compare OLD.json NEW.json   # two recordings side by side, nothing rerun

Pins are recorded on the commit before a change, on the machine that checks them (see below), e.g.

    git worktree add /tmp/base HEAD && (cd /tmp/base && python -m tests.pins --write --pins /tmp/pins.json)
    ... change the code ...
    python -m tests.pins --check --pins /tmp/pins.json

Each pin is one `runner.train` run of a method's preset for TD3 or SAC: 2 vmapped seeds, 3,000 env steps
of inverted_pendulum (positional backend, 2 envs), small networks, and topology periods short enough that
every method with a topology has several events on both networks (and RLx2 turns on its n-step target and
checks its buffer). The checksum is a SHA-256 over the bytes of every leaf of the final train state (in
tree order, with its path) and over the metrics history as JSON, less its two timing metrics.

Exact equality is only promised on one machine and one JAX/XLA build: the CPU's vector width changes
XLA's float reassociation, and a trajectory amplifies the last bit. So this is a developer tool run
before and after a refactor, not part of `make test`; on a mismatch it prints where the first leaf differs
and by how much (the documented tolerance of a reassociating change is 1e-6 relative).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from typing import Any, Dict, List, Tuple

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import sparse_rl_jax as srj  # noqa: E402
from sparse_rl_jax import methods, run_logging, runner  # noqa: E402

PINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "preset_pins.json")
SETTINGS = {
    "total_env_steps": 3_000, "warmup_env_steps": 200, "eval_every": 1_000,
    "env.name": "inverted_pendulum", "env.backend": "positional", "env.num_envs": 2,
    "env.episode_length": 200, "env.eval_episodes": 2,
    "agent.hidden": (32, 32), "agent.batch_size": 64,
    "replay.capacity": 4_000, "replay.min_size": 1_000, "replay.check_every": 200, "replay.oldest": 128,
    "topology.period": 150, "replay.nstep_delay": 800,
}
SEEDS = 2


def cases() -> List[Tuple[str, str]]:
    return [(m, a) for m in methods.method_names() for a in ("td3", "sac")]


def config_of(method: str, algo: str) -> srj.Config:
    extra = {"sparsity.er_lambdas": (3.0, 8.0)} if method.startswith("ds") else {}  # ~50% at width 32
    return srj.make_config(method, algo, **{**SETTINGS, **extra})


# Leaves a refactor may add without changing what a run computes: the agent's hyperparameters as state
# (issue 11: numbers are data) hold the config's values, which the config part of the run already fixes;
# DS's target floors (dst.SparseNet.target_floor) only guess where each exact prune's search starts.
SKIP = (".hparams", ".target_floor")


def leaves(tree) -> List[Tuple[str, np.ndarray]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = [(jax.tree_util.keystr(p), np.asarray(v)) for p, v in flat]
    return [(p, v) for p, v in out if not any(s in p for s in SKIP)]


TIMING = ("training/sps", "training/walltime")  # the only metrics that are not a function of the run


def digest(states, history) -> str:
    h = hashlib.sha256()
    for path, v in leaves(states):
        h.update(path.encode())
        h.update(str(v.dtype).encode() + str(v.shape).encode())
        h.update(np.ascontiguousarray(v).tobytes())
    rows = [[steps, {k: v for k, v in m.items() if k not in TIMING}]
            for steps, m in run_logging.history_to_json(history)]
    h.update(json.dumps(rows, sort_keys=True).encode())
    return h.hexdigest()


def run(method: str, algo: str) -> Dict[str, Any]:
    result = runner.train(config_of(method, algo), num_seeds=SEEDS)
    last = result.history[-1][1]
    return {"sha256": digest(result.states, result.history),
            "final_return": [float(x) for x in np.asarray(last["eval/episode_reward"])],
            "leaf_norms": {p: float(np.abs(v.astype(np.float64)).sum()) for p, v in leaves(result.states)
                           if np.issubdtype(v.dtype, np.floating)}}


def compare(want: Dict[str, Any], got: Dict[str, Any]) -> str:
    if want["sha256"] == got["sha256"]:
        return "same"
    worst, where = 0.0, ""
    for path, a in want["leaf_norms"].items():
        b = got["leaf_norms"].get(path)
        rel = abs(a - b) / max(abs(a), 1e-30) if b is not None else float("inf")
        if rel > worst:
            worst, where = rel, path
    return f"DIFFERENT (largest leaf |sum| change {worst:.3g} relative, at {where or 'no float leaf'})"


def compare_files(old_path: str, new_path: str) -> int:
    """A markdown table of two recordings: per preset the mean final return of each and the checksum
    verdict (the largest leaf change where they differ)."""
    old, new = json.load(open(old_path)), json.load(open(new_path))
    print(f"| preset | return, {os.path.basename(old_path)} | return, {os.path.basename(new_path)} | checksum |")
    print("|---|---:|---:|---|")
    same = 0
    keys = [k for k in new if not k.startswith("_")]
    for key in keys:
        if key not in old:
            print(f"| {key} | | {np.mean(new[key]['final_return']):.2f} | not in {old_path} |")
            continue
        verdict = compare(old[key], new[key])
        same += verdict == "same"
        shown = verdict.replace("|", "\\|")  # a markdown cell
        print(f"| {key} | {np.mean(old[key]['final_return']):.2f} | {np.mean(new[key]['final_return']):.2f} | "
              f"{shown} |")
    print(f"\n{same}/{len(keys)} presets bit for bit")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="record the pins")
    mode.add_argument("--check", action="store_true", help="compare with the recorded pins")
    mode.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                      help="print two pins files side by side (final returns, checksums), nothing rerun")
    parser.add_argument("--pins", default=PINS, help="the pins file (default: tests/data/preset_pins.json)")
    parser.add_argument("--only", default="", help="comma-separated method/algo pairs, e.g. rlx2/sac")
    args = parser.parse_args(argv)
    if args.compare:
        return compare_files(*args.compare)
    todo = cases()
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {f"{m}/{a}" for m, a in todo}
        if unknown:
            parser.error(f"--only: unknown pair(s) {sorted(unknown)}; allowed: method/algo of "
                         f"{', '.join(methods.method_names())} and td3, sac")
        todo = [(m, a) for m, a in todo if f"{m}/{a}" in wanted]
    pins = json.load(open(args.pins)) if os.path.exists(args.pins) else {}
    if args.check and not pins:
        parser.error(f"--check: no pins recorded at {args.pins}; run --write first")
    bad = 0
    for method, algo in todo:
        key = f"{method}/{algo}"
        t0 = time.time()
        got = run(method, algo)
        if args.write:
            pins[key] = got
            verdict = "recorded"
        else:
            verdict = compare(pins[key], got) if key in pins else "NOT PINNED"
            bad += verdict != "same"
        print(f"{key:24s} {verdict}  return {np.mean(got['final_return']):8.2f}  ({time.time() - t0:.0f} s)",
              flush=True)
        if args.write:  # after every case: a long --write cut off keeps what it did
            os.makedirs(os.path.dirname(os.path.abspath(args.pins)), exist_ok=True)
            run_logging.write_text_atomic(args.pins, json.dumps(dict(sorted(pins.items())), indent=1) + "\n")
    if args.check:
        print(f"{len(todo) - bad}/{len(todo)} presets reproduce their pins", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
