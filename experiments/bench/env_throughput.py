"""Env-step throughput of Brax envs inside one jitted ``lax.scan`` (no Python dispatch per step).

Usage (each configuration prints one JSON line; results go to docs/envs.md)::

    JAX_PLATFORMS=cpu .venv/bin/python -m experiments.bench.env_throughput \
        --envs inverted_pendulum,halfcheetah --backends generalized,positional,spring,mjx \
        --num-envs 1,4,16 --steps 1000 --autoreset fresh

``--autoreset``: ``fresh`` = our ``make_env`` stack (fresh key per episode under ``lax.cond``);
``always`` = the same reset without the ``cond`` (reset computed every step, as under an outer vmap);
``cached`` = Brax's own ``AutoResetWrapper`` stack (restores the first state). Actions are uniform in
[-1, 1]. The best of ``--repeats`` timed runs is kept (shared machine). ``compile_s`` is lower+compile
of the scan plus the jitted reset's first call (``compile_cpu_s`` the same in CPU seconds);
``env_steps_per_s`` counts every env (``num_envs`` per scan iteration) per wall second;
``env_steps_per_cpu_s`` per second of this process's CPU time (all threads), which is what an idle
machine would give when the run is single-threaded and is robust to other jobs on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
from brax.envs.wrappers import training as brax_training

from sparse_rl_jax import envs


class _AlwaysReset(envs.TrainingEnv):
    conditional_reset = False


def build(name: str, backend: str, num_envs: int, autoreset: str, episode_length: int):
    """(reset_fn, step_fn, action_size) for the chosen auto-reset variant."""
    if autoreset == "cached":
        base = envs.make_base_env(name, backend)
        env = brax_training.AutoResetWrapper(  # the order of brax.envs.create
            brax_training.VmapWrapper(brax_training.EpisodeWrapper(base, episode_length, 1), num_envs))
        return env.reset, env.step, base.action_size
    cls = _AlwaysReset if autoreset == "always" else envs.TrainingEnv
    env = cls(name, backend, episode_length, 1, num_envs)
    return env.reset, (lambda s, a: envs.env_step(env, s, a)[0]), env.action_size


def measure(name: str, backend: str, num_envs: int, steps: int, autoreset: str, episode_length: int,
            repeats: int = 3) -> dict:
    reset, step, action_size = build(name, backend, num_envs, autoreset, episode_length)

    def rollout(state, key):
        def body(carry, _):
            state, key = carry
            key, sub = jax.random.split(key)
            action = jax.random.uniform(sub, (num_envs, action_size), minval=-1.0, maxval=1.0)
            state = step(state, action)
            return (state, key), state.reward.sum()

        (state, key), rewards = jax.lax.scan(body, (state, key), None, length=steps)
        return state, rewards.sum()

    key = jax.random.PRNGKey(0)
    t0, c0 = time.perf_counter(), time.process_time()
    state = jax.block_until_ready(jax.jit(reset)(key))
    compiled = jax.jit(rollout).lower(state, key).compile()
    compile_s, compile_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    jax.block_until_ready(compiled(state, key))  # warm-up run
    run_s = cpu_s = float("inf")
    for i in range(repeats):  # best of ``repeats``: the machine is shared, the minimum is the least disturbed
        t0, c0 = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(compiled(state, jax.random.PRNGKey(i + 1)))
        run_s, cpu_s = min(run_s, time.perf_counter() - t0), min(cpu_s, time.process_time() - c0)
    return dict(env=name, backend=backend, num_envs=num_envs, autoreset=autoreset, steps=steps,
                compile_s=round(compile_s, 1), compile_cpu_s=round(compile_cpu_s, 1),
                env_steps_per_s=round(steps * num_envs / run_s), iters_per_s=round(steps / run_s),
                env_steps_per_cpu_s=round(steps * num_envs / cpu_s), finite=bool(jnp.isfinite(out[1])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", default="inverted_pendulum,halfcheetah")
    p.add_argument("--backends", default="generalized,positional,spring,mjx")
    p.add_argument("--num-envs", default="1,4,16")
    p.add_argument("--steps", type=int, default=1000, help="scan iterations per timed run")
    p.add_argument("--autoreset", default="fresh", choices=("fresh", "always", "cached"))
    p.add_argument("--episode-length", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration; the best is kept")
    a = p.parse_args()
    for name in a.envs.split(","):
        for backend in a.backends.split(","):
            for n in (int(x) for x in a.num_envs.split(",")):
                try:
                    row = measure(name, backend, n, a.steps, a.autoreset, a.episode_length, a.repeats)
                except Exception as e:  # noqa: BLE001 - report and go on with the survey
                    row = dict(env=name, backend=backend, num_envs=n, error=f"{type(e).__name__}: {e}"[:300])
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
