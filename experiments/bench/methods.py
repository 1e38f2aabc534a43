"""Throughput of every method relative to dense, in one run.

    python -m experiments.bench.methods [--env halfcheetah --backend spring --iterations 2000]

Each (method, algo) trains on one env with batch 256, 2x256 networks and one gradient update per env
step, with the method's own preset (topology period, target policy, n-step, dynamic buffer). A first
chunk (warm-up data + compile) is discarded; the second chunk of `--iterations` env steps is timed.
Prints env steps/s, updates/s and wall time relative to dense of the same algorithm.
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


def time_method(method: str, algo: str, iterations: int, repeats: int) -> float:
    """Seconds for `iterations` env steps + updates, after compile and warm-up."""
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
    states, _ = chunk(states, jnp.int32(0))  # compile + warm-up data
    jax.block_until_ready(states)
    best = float("inf")
    for r in range(1, repeats + 1):
        t0 = time.perf_counter()
        states, _ = chunk(states, jnp.int32(r * iterations))
        jax.block_until_ready(states)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv):
    del argv
    rows = []
    for algo in FLAGS.algos:
        dense = None
        for method in FLAGS.methods:
            seconds = time_method(method, algo, FLAGS.iterations, FLAGS.repeats)
            dense = seconds if method == "dense" else dense
            rows.append((algo, method, seconds))
            print(f"  timed {algo:4s} {method:18s} {seconds:8.2f} s", flush=True)
    print(f"\n{FLAGS.env} ({FLAGS.backend}), 1 env, batch 256, 2x256, 1 update per env step, "
          f"{FLAGS.iterations} steps timed (best of {FLAGS.repeats})")
    print(f"| algo | method | env steps/s | updates/s | time vs dense |\n|---|---|---:|---:|---:|")
    dense_time = {a: s for a, m, s in rows if m == "dense"}
    for algo, method, seconds in rows:
        rate = FLAGS.iterations / seconds
        rel = seconds / dense_time[algo] if algo in dense_time else float("nan")
        print(f"| {algo} | {method} | {rate:.0f} | {rate:.0f} | {rel:.2f}x |")


if __name__ == "__main__":
    app.run(main)
