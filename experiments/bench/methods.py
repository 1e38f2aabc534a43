"""Throughput of every method relative to dense, in one run.

    python -m experiments.bench.methods [--env halfcheetah --backend spring --iterations 2000]

Each (method, algo) trains on one env with batch 256, 2x256 networks and one gradient update per env
step, with the method's own preset (topology period, target policy, n-step, dynamic buffer). All programs
are compiled and warmed up first; then each repeat times one chunk of `--iterations` env steps of every
method in turn (round-robin, so machine noise hits all alike) and the best time per method is kept.
Prints env steps/s, updates/s (equal: one update per env step) and wall time relative to dense of the
same algorithm. Topology updates run at the presets' periods (1000 for ds/rigl/gmp, 10000 for rlx2), so
their cost is included at its real amortised rate.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from absl import app, flags

from sparse_rl_jax import methods, trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("env", "halfcheetah", "Brax environment")
flags.DEFINE_string("backend", "spring", "Brax backend")
flags.DEFINE_integer("iterations", 2000, "timed env steps (= updates) per method")
flags.DEFINE_integer("repeats", 2, "timed chunks per method; the fastest is reported")
flags.DEFINE_list("methods", list(methods.method_names()), "methods to time")
flags.DEFINE_list("algos", ["td3", "sac"], "algorithms to time")


def prepare(method: str, algo: str, iterations: int, repeats: int):
    """Compile the method's chunk and run the warm-up chunk; returns (chunk_fn, states)."""
    config = methods.make_config(method, algo, **{
        "env.name": FLAGS.env, "env.backend": FLAGS.backend, "env.num_envs": 1,
        "env.episode_length": 1000, "agent.batch_size": 256, "agent.hidden": (256, 256),
        "updates_per_env_step": 1.0, "warmup_env_steps": 1000, "eval_every": iterations,
        "total_env_steps": 1000 + iterations * (repeats + 1), "replay.capacity": 100_000,
        "replay.min_size": 10_000,
    })
    tr = trainer.Trainer(config)
    states = trainer.init_states(tr, trainer.seed_keys(0, 1))
    chunk = trainer.make_chunk_fn(tr)
    states, _ = chunk(states, jnp.int32(0))  # compile + warm-up data (+ first updates)
    jax.block_until_ready(states)
    return chunk, states


def main(argv):
    del argv
    cells = [(a, m) for a in FLAGS.algos for m in FLAGS.methods]
    prepared = {}
    for cell in cells:
        t0 = time.perf_counter()
        prepared[cell] = prepare(cell[1], cell[0], FLAGS.iterations, FLAGS.repeats)
        print(f"  compiled {cell[0]:4s} {cell[1]:18s} in {time.perf_counter() - t0:6.1f} s", flush=True)
    best = {cell: float("inf") for cell in cells}
    # Round-robin: every repeat times each method once, so background load hits all of them alike.
    for r in range(1, FLAGS.repeats + 1):
        for cell in cells:
            chunk, states = prepared[cell]
            t0 = time.perf_counter()
            states, _ = chunk(states, jnp.int32(r * FLAGS.iterations))
            jax.block_until_ready(states)
            best[cell] = min(best[cell], time.perf_counter() - t0)
            prepared[cell] = (chunk, states)
    print(f"\n{FLAGS.env} ({FLAGS.backend} backend), 1 env, batch 256, 2x256, 1 update per env step, "
          f"{FLAGS.iterations} steps per timed chunk, best of {FLAGS.repeats} round-robin repeats")
    print("| algo | method | env steps/s | updates/s | time vs dense |\n|---|---|---:|---:|---:|")
    for algo, method in cells:
        seconds = best[(algo, method)]
        rate = FLAGS.iterations / seconds
        dense = best.get((algo, "dense"))
        rel = f"{seconds / dense:.2f}x" if dense else "n/a"
        print(f"| {algo} | {method} | {rate:.0f} | {rate:.0f} | {rel} |")


if __name__ == "__main__":
    app.run(main)
