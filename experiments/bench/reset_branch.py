"""Env auto-reset inside training chunks: one branch for all vmapped seeds vs a reset every step.

    python -m experiments.bench.reset_branch [--env halfcheetah] [--num_envs 1] [--seeds 1] [--rounds 5]

Both variants run the same compiled training chunk (RLx2-TD3, past warm-up, 50 iterations) and give
bit-identical states; they differ only in `trainer.env.conditional_reset`: the branch taken only when some
env of some seed finished (the default), or the reset computed every step and selected per env (what a
per-seed predicate under `vmap` would compile to). Timed round-robin; prints the median per chunk and the
ratio to the every-step reset.
"""
from __future__ import annotations

import time
from typing import Dict, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from sparse_rl_jax import cli, presets, runner
from sparse_rl_jax import trainer as trainer_lib

ITERATIONS = 50
VARIANTS = (("reset every step (select)", False), ("branch (default)", True))


def _define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("env", "halfcheetah", "Brax env name.", flag_values=fv)
    flags.DEFINE_integer("num_envs", 1, "Parallel envs per seed.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("seeds", 1, "Vmapped seeds.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("rounds", 5, "Timed rounds (after one warm-up round).", lower_bound=1, flag_values=fv)
    return fv


def time_variants(env: str, num_envs: int, seeds: int, rounds: int) -> Dict[str, List[float]]:
    config = presets.make_config("rlx2", "td3", **{
        "env.name": env, "env.num_envs": num_envs, "eval_every": ITERATIONS * num_envs,
        "warmup_env_steps": 0, "total_env_steps": 10**6})
    programs = {}
    for name, conditional in VARIANTS:
        run = runner.Runner(config, num_seeds=seeds)
        run.trainer.env.conditional_reset = conditional  # read when the chunk first compiles
        programs[name] = (run.chunk_fn, run.init(trainer_lib.seed_keys(0, seeds)))
    times: Dict[str, List[float]] = {name: [] for name in programs}
    for r in range(rounds + 1):
        for name, (chunk, states) in programs.items():
            states = jax.tree.map(jnp.copy, states)  # the chunk donates its input
            start = time.perf_counter()
            jax.block_until_ready(chunk(states, jnp.int32(1)))
            if r:  # round 0 compiles
                times[name].append(time.perf_counter() - start)
    return times


def main(argv: Sequence[str]) -> int:
    fv = _define_flags()
    if not cli.parse(fv, argv, "reset_branch"):
        return cli.USAGE_ERROR
    times = time_variants(fv.env, fv.num_envs, fv.seeds, fv.rounds)
    base = float(np.median(times[VARIANTS[0][0]]))
    print(f"{fv.env}, {fv.num_envs} env(s), {fv.seeds} seed(s), RLx2-TD3 chunks of {ITERATIONS} iterations, "
          f"median of {fv.rounds} round-robin rounds")
    print(f"{'variant':<28} {'ms per chunk':>13} {'x every-step':>13}")
    for name, values in times.items():
        median = float(np.median(values))
        print(f"{name:<28} {median * 1e3:>13.1f} {median / base:>13.2f}")
    return 0


if __name__ == "__main__":
    cli.run(main)
