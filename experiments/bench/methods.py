"""Throughput of every method relative to dense, in one run.

    python -m experiments.bench.methods [--env halfcheetah --backend spring --iterations 1000 --repeats 7]

Each (method, algo) trains on one env with batch 256, 2x256 networks and one gradient update per env
step, with the method's own preset (topology period, target policy, n-step, dynamic buffer). All programs
are compiled and warmed up first (the warm-up chunk already runs gradient updates). Then each round
times one chunk of `--iterations` env steps of every program, in a fresh random order per round, so
neither background load drifting over the run nor the position in the round favours a program.

The reported ratio is the **median over rounds** of (time of the method / time of dense of the same
algorithm in the same round): a load spike during one round moves a method and its reference alike,
and one unlucky round cannot decide the result. Beside it: a 90% bootstrap interval of that median
(the rounds resampled with replacement, `CI_RESAMPLES` times, fixed seed), so a claim such as "within
1.10x" can be read against how far the median moves between runs (per-round ratios spread +-20% even on
a quiet 2-core machine); then the spread of the per-round ratios and the best-chunk ratio.

Topology updates run at the presets' periods (1000 for ds/rigl/gmp, 10000 for rlx2), so their cost is
included at its real amortised rate: with `--iterations 1000` every timed chunk holds one DS/RigL/GMP
topology update and none of RLx2's.

Two more programs per round set the floor (issue 11, item 6): ``floor`` is a plain jitted dense TD3 update
of the same sizes written with flax and optax alone (`experiments.bench.workers.ours.floor_program`: no
env, no replay, no framework), and ``update`` is this framework's dense TD3 update alone, as the trainer
runs it (`agent.update` under the seed ``vmap``, scanned over the same number of updates on a fixed
window, no env). Their ratio is what the framework's update costs over the plain one; the table's last
lines print it.
"""
from __future__ import annotations

import random
import statistics
import time
from typing import List, Tuple

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments.bench.workers import ours
from sparse_rl_jax import methods, presets, replay, runner, trainer

FLAGS = flags.FLAGS
WARMUP_ENV_STEPS = 1000  # random-action steps before learning starts (= iterations with 1 env)
flags.DEFINE_string("env", "halfcheetah", "Brax environment")
flags.DEFINE_string("backend", "spring", "Brax backend")
flags.DEFINE_integer("iterations", 1000, "timed env steps (= updates) per chunk", lower_bound=1)
flags.DEFINE_integer("repeats", 7, "rounds; each times one chunk of every program, in a random order",
                     lower_bound=1)
flags.DEFINE_integer("seed", 0, "seed of the per-round timing order")
flags.DEFINE_list("methods", list(methods.method_names()), "methods to time")
flags.DEFINE_list("algos", ["td3", "sac"], "algorithms to time")
flags.DEFINE_boolean("floor", True, "also time the plain jitted TD3 update and ours alone (see above)")
FLOOR, UPDATE = ("td3", "floor: plain TD3 update"), ("td3", "dense update alone")
CI_RESAMPLES = 2000


def bench_config(method: str, algo: str, iterations: int, repeats: int):
    return presets.make_config(method, algo, **{
        "env.name": FLAGS.env, "env.backend": FLAGS.backend, "env.num_envs": 1,
        "env.episode_length": 1000, "agent.batch_size": 256, "agent.hidden": (256, 256),
        "updates_per_env_step": 1.0, "warmup_env_steps": WARMUP_ENV_STEPS, "eval_every": iterations,
        "total_env_steps": WARMUP_ENV_STEPS + iterations * (repeats + 1), "replay.capacity": 100_000,
        "replay.min_size": 10_000,
    })


def update_chunk(iterations: int, repeats: int, method: str = "dense", algo: str = "td3"):
    """A method's update alone, vmapped over one seed as `Trainer.chunk` runs it, scanned over
    ``iterations`` updates on a fixed random window of the env's sizes (no env, no replay): returns the
    jitted ``chunk(states, first_update)`` and the agent states after its first (compiling) call."""
    return trainer_update_chunk(trainer.Trainer(bench_config(method, algo, iterations, repeats)), iterations)


def trainer_update_chunk(tr: trainer.Trainer, iterations: int, b: int = 256):
    """`update_chunk` for any trainer (its agent, sizes and config): batch ``b``."""
    agent, obs, act = tr.agent, tr.obs_dim, tr.action_dim
    k = jax.random.split(jax.random.PRNGKey(1), 4)
    window = replay.Window(
        obs=jax.random.normal(k[0], (b, obs)), action=jax.random.uniform(k[1], (b, act), minval=-1, maxval=1),
        rewards=jax.random.normal(k[2], (b, 1)), terminals=jnp.zeros((b, 1), bool),
        truncated=jnp.zeros((b, 1), bool), next_obs=jax.random.normal(k[3], (b, 1, obs)),
        valid=jnp.ones((b, 1), bool))

    def run(state, first):
        def one(st, i):
            return agent.update(st, window, i, 1, jax.random.fold_in(jax.random.PRNGKey(2), i))[0], None
        return jax.lax.scan(one, state, first + jnp.arange(iterations))[0]

    chunk = jax.jit(jax.vmap(run, in_axes=(0, None), axis_name=trainer.SEED_BATCH))
    states = runner.Runner(tr.config, num_seeds=1).init(trainer.seed_keys(0, 1)).agent
    states = chunk(states, jnp.int32(0))
    jax.block_until_ready(states)
    return chunk, states


def update_program(iterations: int, repeats: int):
    """Our dense TD3 update alone (`update_chunk`) as a ``(chunk, state)`` pair like `prepare`'s."""
    chunk, states = update_chunk(iterations, repeats)
    return lambda s, first: (chunk(s, first), None), states


def floor_program(iterations: int):
    """`ours.floor_program` in the ``(chunk, state)`` shape (its state lives inside its closure)."""
    run = ours.floor_program(iterations)

    def chunk(states, first):
        run()
        return None, None

    return chunk, None


def prepare(method: str, algo: str, iterations: int, repeats: int):
    """Compile the method's chunk and run the warm-up chunk; returns (chunk_fn, states)."""
    run = runner.Runner(bench_config(method, algo, iterations, repeats), num_seeds=1)
    states, chunk = run.init(trainer.seed_keys(0, 1)), run.chunk_fn
    # Compile, collect random-action data, then one chunk of real updates: the timed rounds must not
    # include the first execution of the learning branch.
    for first in (0, WARMUP_ENV_STEPS):
        states, _ = chunk(states, jnp.int32(first))
        jax.block_until_ready(states)
    return chunk, states


def time_rounds(prepared, cells, iterations: int, repeats: int, seed: int):
    """Seconds per chunk: {cell: [one per round]}; every round runs all cells in a random order."""
    order_rng = random.Random(seed)
    seconds = {cell: [] for cell in cells}
    for r in range(1, repeats + 1):
        order = list(cells)
        order_rng.shuffle(order)
        for cell in order:
            chunk, states = prepared[cell]
            t0 = time.perf_counter()
            states, _ = chunk(states, jnp.int32(WARMUP_ENV_STEPS + r * iterations))
            jax.block_until_ready(states)
            seconds[cell].append(time.perf_counter() - t0)
            prepared[cell] = (chunk, states)
    return seconds


def median_interval(ratios: List[float], level: float = 0.90, seed: int = 0) -> Tuple[float, float]:
    """Bootstrap interval of the median of ``ratios`` (percentile method, `CI_RESAMPLES` resamples)."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(CI_RESAMPLES))
    tail = (1.0 - level) / 2.0
    return medians[int(tail * (CI_RESAMPLES - 1))], medians[int((1.0 - tail) * (CI_RESAMPLES - 1))]


def ratio_summary(seconds, cell, dense_cell):
    """(median per-round ratio, its 90% interval, lowest, highest, best-chunk ratio) of a cell vs its
    dense reference."""
    ratios = [t / d for t, d in zip(seconds[cell], seconds[dense_cell])]
    return (statistics.median(ratios), median_interval(ratios), min(ratios), max(ratios),
            min(seconds[cell]) / min(seconds[dense_cell]))


def main(argv):
    del argv
    cells = [(a, m) for a in FLAGS.algos for m in FLAGS.methods]
    build = {cell: (lambda c=cell: prepare(c[1], c[0], FLAGS.iterations, FLAGS.repeats)) for cell in cells}
    if FLAGS.floor:
        build[FLOOR] = lambda: floor_program(FLAGS.iterations)
        build[UPDATE] = lambda: update_program(FLAGS.iterations, FLAGS.repeats)
        cells += [FLOOR, UPDATE]
    prepared = {}
    for cell in cells:
        t0 = time.perf_counter()
        prepared[cell] = build[cell]()
        print(f"  compiled {cell[0]:4s} {cell[1]:18s} in {time.perf_counter() - t0:6.1f} s", flush=True)
    seconds = time_rounds(prepared, cells, FLAGS.iterations, FLAGS.repeats, FLAGS.seed)
    print(f"\n{FLAGS.env} ({FLAGS.backend} backend), 1 env, batch 256, 2x256, 1 update per env step, "
          f"{FLAGS.iterations} steps per timed chunk, {FLAGS.repeats} rounds in random order")
    print("| algo | method | updates/s (median chunk) | time vs dense (median of rounds) | 90% interval "
          "| per-round range | best chunk vs best dense |\n|---|---|---:|---:|---:|---:|---:|")
    for algo, method in cells:
        rate = FLAGS.iterations / statistics.median(seconds[(algo, method)])
        if (algo, method) in (FLOOR, UPDATE):
            med, (c_lo, c_hi), lo, hi, best = ratio_summary(seconds, (algo, method), FLOOR)
            print(f"| {algo} | {method} (no env) | {rate:.0f} | {med:.2f}x of the floor | {c_lo:.2f}-{c_hi:.2f} "
                  f"| {lo:.2f}-{hi:.2f} | {best:.2f}x |")
            continue
        if (algo, "dense") in seconds:
            med, (c_lo, c_hi), lo, hi, best = ratio_summary(seconds, (algo, method), (algo, "dense"))
            rel = f"{med:.2f}x | {c_lo:.2f}-{c_hi:.2f} | {lo:.2f}-{hi:.2f} | {best:.2f}x"
        else:
            rel = "n/a | n/a | n/a | n/a"
        print(f"| {algo} | {method} | {rate:.0f} | {rel} |")


if __name__ == "__main__":
    app.run(main)
