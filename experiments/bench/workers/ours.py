"""This framework's programs for the peers bench, plus the floor (a plain jitted TD3 update) and the matmul rate.

    python -m experiments.bench.workers.ours '{"steps": 1000, "warmup": 5000, "rounds": 5}'

Programs: ``dense_td3``, ``rlx2_td3``, ``dense_sac``, ``rlx2_sac`` (Brax halfcheetah on the spring backend,
1 env, batch 256, 2x256, one update per env step; RLx2 at its paper sparsities with its 3-step targets on,
as in the 2.7M of its 3M steps after the n-step delay), ``gym_td3`` (the dense TD3 on Gymnasium's
HalfCheetah-v5, stepped on the host through a callback inside the same compiled loop), ``floor_td3`` (the same dense TD3 update, written
plainly with flax and optax and scanned ``steps`` times on random data: no env, no replay, no
framework) and ``matmul`` (a 256x256 by 256x256 float32 product, 1000 times in one program). The floor
and matmul programs also print their FLOP rates in the ready line's ``info``.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Dict

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from experiments.bench.workers import protocol

OBS, ACT, HIDDEN, BATCH = 17, 6, (256, 256), 256  # Brax halfcheetah


def framework_program(method: str, algo: str, steps: int, warmup: int, rounds: int, task: str = "halfcheetah"):
    from sparse_rl_jax import presets, runner, trainer

    extra = {"replay.nstep_delay": 0} if method == "rlx2" else {}
    config = presets.make_config(method, algo, task, **{
        "env.num_envs": 1, "agent.batch_size": BATCH, "agent.hidden": HIDDEN, "updates_per_env_step": 1.0,
        "warmup_env_steps": warmup, "eval_every": steps, "total_env_steps": warmup + steps * (rounds + 2),
        "replay.capacity": 1_000_000, **extra})
    run = runner.Runner(config, num_seeds=1)
    states, chunk = run.init(trainer.seed_keys(0, 1)), run.chunk_fn
    first = 0
    # random-action warm-up (whole chunks), then one chunk of real updates: compile both branches
    while first < warmup + steps:
        states, _ = chunk(states, jnp.int32(first))
        jax.block_until_ready(states)
        first += steps
    box = {"states": states, "first": first}

    def run() -> float:
        t0 = time.perf_counter()
        box["states"], _ = chunk(box["states"], jnp.int32(box["first"]))
        jax.block_until_ready(box["states"])
        box["first"] += steps
        return time.perf_counter() - t0

    return run


# ---------------------------------------------------------------------------- the floor: plain TD3
class _MLP(nn.Module):
    out: int
    final_tanh: bool = False

    @nn.compact
    def __call__(self, x):
        for h in HIDDEN:
            x = nn.relu(nn.Dense(h)(x))
        x = nn.Dense(self.out)(x)
        return jnp.tanh(x) if self.final_tanh else x


def floor_program(steps: int):
    """Dense TD3 (twin Q, target nets, policy delay 2, target noise 0.2 clipped 0.5, Adam 3e-4, tau 0.005)
    on a fixed random buffer: the cost of the update alone, as a user would write it without a framework."""
    actor, q = _MLP(ACT, final_tanh=True), _MLP(1)
    k = jax.random.split(jax.random.key(0), 8)
    obs0, act0 = jnp.zeros((1, OBS)), jnp.zeros((1, ACT))
    pa = actor.init(k[0], obs0)
    pq = {"q1": q.init(k[1], jnp.concatenate([obs0, act0], -1)),
          "q2": q.init(k[2], jnp.concatenate([obs0, act0], -1))}
    opt = optax.adam(3e-4)
    size = 100_000
    data = {"obs": jax.random.normal(k[3], (size, OBS)), "act": jax.random.uniform(k[4], (size, ACT), minval=-1),
            "rew": jax.random.normal(k[5], (size,)), "next": jax.random.normal(k[6], (size, OBS)),
            "done": jnp.zeros((size,))}

    def qv(p, o, a):
        x = jnp.concatenate([o, a], -1)
        return q.apply(p["q1"], x)[:, 0], q.apply(p["q2"], x)[:, 0]

    def update(carry, i):
        pa, pq, ta, tq, oa, oq, key = carry
        key, kb, kn = jax.random.split(key, 3)
        idx = jax.random.randint(kb, (BATCH,), 0, size)
        b = jax.tree.map(lambda x: x[idx], data)
        noise = jnp.clip(0.2 * jax.random.normal(kn, (BATCH, ACT)), -0.5, 0.5)
        na = jnp.clip(actor.apply(ta, b["next"]) + noise, -1, 1)
        t1, t2 = qv(tq, b["next"], na)
        y = b["rew"] + 0.99 * (1 - b["done"]) * jnp.minimum(t1, t2)

        def q_loss(p):
            q1, q2 = qv(p, b["obs"], b["act"])
            return jnp.mean((q1 - y) ** 2) + jnp.mean((q2 - y) ** 2)

        g = jax.grad(q_loss)(pq)
        u, oq = opt.update(g, oq, pq)
        pq = optax.apply_updates(pq, u)

        def actor_step(args):
            pa, ta, tq, oa = args
            ga = jax.grad(lambda p: -jnp.mean(q.apply(pq["q1"], jnp.concatenate(
                [b["obs"], actor.apply(p, b["obs"])], -1))))(pa)
            u, oa = opt.update(ga, oa, pa)
            pa = optax.apply_updates(pa, u)
            ta = optax.incremental_update(pa, ta, 0.005)
            tq = optax.incremental_update(pq, tq, 0.005)
            return pa, ta, tq, oa

        pa, ta, tq, oa = jax.lax.cond(i % 2 == 1, actor_step, lambda a: a, (pa, ta, tq, oa))
        return (pa, pq, ta, tq, oa, oq, key), None

    @jax.jit
    def many(carry, start):
        return jax.lax.scan(update, carry, start + jnp.arange(steps))[0]

    box = {"carry": (pa, pq, pa, pq, opt.init(pa), opt.init(pq), k[7]), "start": 0}

    def run() -> float:
        t0 = time.perf_counter()
        box["carry"] = many(box["carry"], jnp.int32(box["start"]))
        jax.block_until_ready(box["carry"])
        box["start"] += steps
        return time.perf_counter() - t0

    run()  # compile
    return run


def td3_update_flops() -> float:
    """FLOPs (2 x multiply-adds) of one dense TD3 update of these sizes on average (policy delay 2), by the
    framework's pass model (`sparse_rl_jax.sparsity.flops`)."""
    from sparse_rl_jax import report

    r = report.compute_report("td3", OBS, ACT, 0.0, 0.0, "erk", HIDDEN)
    return 2.0 * r["train_flops"].dense * BATCH


def matmul_program(reps: int = 1000):
    a = jax.random.normal(jax.random.key(1), (256, 256), jnp.float32)

    @jax.jit
    def many(x):
        return jax.lax.fori_loop(0, reps, lambda i, y: (y @ a) * (1.0 / 16.0), x)

    x = jax.block_until_ready(many(a))

    def run() -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(many(x))
        return time.perf_counter() - t0

    return run


def main(argv) -> None:
    args: Dict[str, Any] = json.loads(argv[1]) if len(argv) > 1 else {}
    steps, warmup, rounds = args.get("steps", 1000), args.get("warmup", 5000), args.get("rounds", 5)
    builders = {f"{m}_{a}": (lambda m=m, a=a: framework_program(m, a, steps, warmup, rounds))
                for a in ("td3", "sac") for m in ("dense", "rlx2")}
    builders["gym_td3"] = lambda: framework_program("dense", "td3", steps, warmup, rounds, "gym/HalfCheetah-v5")
    builders["floor_td3"] = lambda: floor_program(steps)
    builders["matmul"] = matmul_program
    only = args.get("programs")
    protocol.serve({k: v for k, v in builders.items() if not only or k in only},
                   info={"td3_update_flops": td3_update_flops(), "matmul_flops": 2.0 * 256 ** 3 * 1000,
                         "jax": jax.__version__, "backend": jax.default_backend()})


if __name__ == "__main__":
    main(sys.argv)
