"""Throughput against what users would pick instead, in one sitting, as ratios.

    python -m experiments.bench.peers [--steps 1000 --rounds 7 --warmup 5000] [--skip brax,sbx] [--only P,...]

The same work for every tool: HalfCheetah, 1 env, batch 256, 2x256 networks, one gradient update per env
step, timed over chunks of ``--steps`` env steps after each tool's warm-up (``--warmup`` random-action
steps, then one untimed chunk of learning that includes its compilation):

* this framework: dense TD3, dense SAC, RLx2-TD3 and RLx2-SAC at their paper sparsities (Brax
  ``halfcheetah``, spring backend: the study's env), and dense TD3 on Gymnasium ``HalfCheetah-v5``
  stepped on the host from inside the compiled loop (`sparse_rl_jax.host_envs`);
* Brax's own SAC trainer on the same Brax env, in its own environment (JAX 0.7.2);
* Stable-Baselines-Jax SAC and TD3 on Gymnasium ``HalfCheetah-v5`` (MuJoCo), in its own environment;
* the floor: a plain jitted dense TD3 update of the same sizes (no env, no replay, no framework), and
  the machine's float32 matmul rate at 256x256x256, which gives our update FLOP rate as a fraction of it.

Each tool runs in its own long-lived worker process (`experiments.bench.workers`), compiled and warmed up
first; start-up times are reported separately. Then each round times one chunk of every program, in a
fresh random order per round (A B C, C A B, ...), so load drifting over the sitting moves every tool
alike. A tool's time relative to ours is the **median over rounds** of (its chunk time / the chunk time
of our dense agent of the same algorithm in that round), per env step. The peers' environments are built
on first use under ``~/.cache/sparse_rl_jax/peers`` (`experiments.bench.venvs`).
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Dict, List

from absl import app, flags

from experiments.bench import venvs

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 1000, "env steps (= updates) per timed chunk", lower_bound=100)
flags.DEFINE_integer("rounds", 7, "timed rounds; each times one chunk of every program", lower_bound=1)
flags.DEFINE_integer("warmup", 5000, "random-action env steps before learning, for every tool", lower_bound=256)
flags.DEFINE_integer("seed", 0, "seed of the per-round order")
flags.DEFINE_list("skip", [], "peers to leave out: brax, sbx")
flags.DEFINE_list("only", [], "programs to time (default: all), e.g. dense_td3,gym_td3,sbx_td3,floor_td3,matmul; "
                  "a table row's reference (dense_<algo>) and the matmul rate are always included")
flags.DEFINE_string("json", None, "also write the raw per-round seconds here")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = [  # (program, label, algorithm, env)
    ("dense_td3", "sparse_rl_jax dense TD3", "td3", "Brax halfcheetah (spring)"),
    ("rlx2_td3", "sparse_rl_jax RLx2-TD3 (90%/85% sparse)", "td3", "Brax halfcheetah (spring)"),
    ("gym_td3", "sparse_rl_jax dense TD3, host env in the compiled loop", "td3", "Gymnasium HalfCheetah-v5 (MuJoCo)"),
    ("sbx_td3", "SBX TD3", "td3", "Gymnasium HalfCheetah-v5 (MuJoCo)"),
    ("floor_td3", "floor: plain jitted dense TD3 update (no env)", "td3", "none"),
    ("dense_sac", "sparse_rl_jax dense SAC", "sac", "Brax halfcheetah (spring)"),
    ("rlx2_sac", "sparse_rl_jax RLx2-SAC (90%/80% sparse)", "sac", "Brax halfcheetah (spring)"),
    ("brax_sac", "Brax SAC trainer", "sac", "Brax halfcheetah (spring)"),
    ("sbx_sac", "SBX SAC", "sac", "Gymnasium HalfCheetah-v5 (MuJoCo)"),
]


class Worker:
    """One worker process; ``run(program)`` times one chunk."""

    def __init__(self, name: str, python: str, module: str, args: Dict):
        env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu",
                   TF_CPP_MIN_LOG_LEVEL="3")
        self.name, t0 = name, time.perf_counter()
        self.proc = subprocess.Popen([python, "-m", module, json.dumps(args)], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self._read()
        self.startup: Dict[str, float] = ready["ready"]
        self.info = ready.get("info", {})
        self.wall = time.perf_counter() - t0
        print(f"  {name}: ready in {self.wall:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in self.startup.items())})",
              flush=True)

    def _read(self) -> Dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"peers: worker {self.name} exited (status {self.proc.wait()}); see its stderr")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, program: str) -> float:
        self.proc.stdin.write(program + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        assert reply["program"] == program, reply
        return float(reply["seconds"])

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()


def time_rounds(workers: Dict[str, Worker], programs: List[str], rounds: int, seed: int) -> Dict[str, List[float]]:
    owner = {p: w for w in workers.values() for p in w.startup}
    rng, seconds = random.Random(seed), {p: [] for p in programs}
    for r in range(rounds):
        order = list(programs)
        rng.shuffle(order)
        for p in order:
            seconds[p].append(owner[p].run(p))
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{p} {seconds[p][-1]:.2f} s" for p in programs), flush=True)
    return seconds


def table(seconds: Dict[str, List[float]], workers: Dict[str, Worker], steps: int) -> str:
    startup = {p: t for w in workers.values() for p, t in w.startup.items()}
    lines = ["| tool | algo | env | env steps/s (median chunk) | time vs ours (median of rounds) | per-round range "
             "| start-up s |", "|---|---|---|---:|---:|---:|---:|"]
    for program, label, algo, env in ROWS:
        if program not in seconds:
            continue
        ref = f"dense_{algo}"
        ratios = [t / d for t, d in zip(seconds[program], seconds[ref])]
        lines.append(f"| {label} | {algo.upper()} | {env} | {steps / statistics.median(seconds[program]):,.0f} | "
                     f"{statistics.median(ratios):.2f}x | {min(ratios):.2f}-{max(ratios):.2f} | "
                     f"{startup[program]:.0f} |")
    return "\n".join(lines)


def flop_rates(seconds: Dict[str, List[float]], info: Dict, steps: int) -> str:
    mm = info["matmul_flops"] / statistics.median(seconds["matmul"])
    per_update = info["td3_update_flops"]
    out = [f"float32 matmul 256x256x256: {mm / 1e9:.1f} GFLOP/s (median chunk)",
           f"dense TD3 update: {per_update / 1e6:.0f} MFLOP (pass model, batch 256, policy delay 2)"]
    for p in (p for p in ("floor_td3", "dense_td3") if p in seconds):
        rate = per_update * steps / statistics.median(seconds[p])
        out.append(f"{p}: {rate / 1e9:.1f} GFLOP/s of update arithmetic = {100 * rate / mm:.0f}% of the matmul rate"
                   + (" (env steps and replay included)" if p == "dense_td3" else ""))
    return "\n".join(out)


def main(argv) -> int:
    del argv
    args = {"steps": FLAGS.steps, "warmup": FLAGS.warmup, "rounds": FLAGS.rounds}
    if FLAGS.only:
        known = [row[0] for row in ROWS] + ["matmul"]
        if any(p not in known for p in FLAGS.only):
            bad = next(p for p in FLAGS.only if p not in known)
            print(f"peers: error: invalid --only={bad!r}: allowed {', '.join(known)}", file=sys.stderr)
            return 2
        refs = {f"dense_{algo}" for program, _, algo, _ in ROWS if program in FLAGS.only}
        args["programs"] = sorted(set(FLAGS.only) | refs | {"matmul"})
    bad = [s for s in FLAGS.skip if s not in venvs.PEERS]
    if bad:
        print(f"peers: error: invalid --skip={bad[0]!r}: allowed {', '.join(venvs.PEERS)}", file=sys.stderr)
        return 2
    print(f"peers: {FLAGS.steps} env steps per chunk, {FLAGS.rounds} rounds, warm-up {FLAGS.warmup}; starting workers",
          flush=True)
    workers: Dict[str, Worker] = {}
    try:
        workers["ours"] = Worker("ours", sys.executable, "experiments.bench.workers.ours", args)
        if "brax" not in FLAGS.skip:
            workers["brax"] = Worker("brax", venvs.python("brax"), "experiments.bench.workers.brax_sac",
                                     {**args, "mode": "bench"})
        if "sbx" not in FLAGS.skip:
            workers["sbx"] = Worker("sbx", venvs.python("sbx"), "experiments.bench.workers.sbx_worker", args)
        programs = [p for w in workers.values() for p in w.startup]
        seconds = time_rounds(workers, programs, FLAGS.rounds, FLAGS.seed)
    finally:
        for w in workers.values():
            w.close()
    info = {k: v for w in workers.values() for k, v in w.info.items() if k in ("td3_update_flops", "matmul_flops")}
    print(f"\nHalfCheetah, 1 env, batch 256, 2x256, 1 update per env step, {FLAGS.steps} env steps per timed "
          f"chunk, {FLAGS.rounds} rounds in random order; reference: sparse_rl_jax dense of the same algorithm")
    print(table(seconds, workers, FLAGS.steps))
    print("\n" + flop_rates(seconds, info, FLAGS.steps))
    print("\nversions: " + "; ".join(f"{n}: {w.info.get('jax') and 'jax ' + w.info['jax']}"
                                      + (f", sbx {w.info['sbx']}" if "sbx" in w.info else "")
                                      for n, w in workers.items()))
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump({"seconds": seconds, "startup": {n: w.startup for n, w in workers.items()},
                       "args": args}, f, indent=1)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
