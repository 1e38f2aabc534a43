"""Micro-benchmark: one full RigL-style topology update of a TD3 agent vs one dense gradient update.

    python -m experiments.bench.topology_update [--repeats 50] [--batch 256]

Setup: TD3 HalfCheetah dimensions (obs 17, act 6), actor and twin critic 2x256, ERK at RLx2's
HalfCheetah sparsities (actor 0.9, critic 0.85; critics one allocation), magnitude-initialised masks.

Timed programs (each jitted, warmed up, ``block_until_ready``, median over ``--repeats`` calls,
interleaved round-robin so background load affects all programs alike):

* ``dense step``: the reference; critic TD loss + actor loss gradients on a batch, Adam on both.
* ``topology (masks)``: what a topology update adds when it reuses the step's gradients (RLx2 skips the
  optimizer step and uses that mini-batch's dense gradient): magnitude drop and |gradient| grow scores,
  exact-count ``update_masks`` on every sparse layer of actor and critic (drop fraction 0.5, RLx2's
  zeta_0), re-masking of the weights.
* ``topology (+grads)``: the same plus computing both dense gradients itself (a stand-alone update).
* ``topology (+grads, reset)``: also zeroing the Adam moments of grown connections (jaxpruner style).

The ratio column says how many dense steps one update costs; amortised over RLx2's period of 10,000
iterations it is negligible, which is why the trainer keeps the update in a real ``lax.cond`` branch.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax
from absl import flags

from sparse_rl_jax import cli, networks
from sparse_rl_jax.sparsity import distributions, masks, optim, scores, topology

OBS_DIM, ACT_DIM, HIDDEN = 17, 6, (256, 256)
ACTOR_SPARSITY, CRITIC_SPARSITY, DROP_FRACTION = 0.9, 0.85, 0.5


def _define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_integer("repeats", 50, "Timed calls per program (median reported).", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_integer("batch", 256, "Mini-batch size.", lower_bound=1, flag_values=fv)
    return fv


def _setup(key: jax.Array, batch: int):
    """Networks, masked params, masks, Adam states and one batch of random transitions."""
    actor_net, critic_net = networks.DeterministicActor(ACT_DIM, HIDDEN), networks.TwinCritic(HIDDEN)
    k = jax.random.split(key, 8)
    obs, act = jnp.zeros((1, OBS_DIM)), jnp.zeros((1, ACT_DIM))
    params = {"actor": actor_net.init(k[0], obs), "critic": critic_net.init(k[1], obs, act)}
    sparsity = {"actor": ACTOR_SPARSITY, "critic": CRITIC_SPARSITY}
    mask_tree = {}
    for name, p in params.items():  # actor and twin critic: one ERK allocation each
        structure = masks.sparse_structure(p)
        dens = distributions.densities_for(p, structure, sparsity[name], "erk")
        mask_tree[name] = masks.init_masks(k[2], p, dens, method="magnitude")
    params = masks.apply_masks(params, mask_tree)
    data = (jax.random.normal(k[3], (batch, OBS_DIM)), jax.random.uniform(k[4], (batch, ACT_DIM), minval=-1),
            jax.random.normal(k[5], (batch,)), jax.random.normal(k[6], (batch, OBS_DIM)))
    return (actor_net, critic_net), params, mask_tree, data


def _loss_fns(nets, targets):
    """TD3 critic (clipped double-Q, target smoothing) and actor losses, closed over target params."""
    actor_net, critic_net = nets

    def critic_loss(critic_p, actor_p, data, key):
        obs, act, rew, next_obs = data
        noise = jnp.clip(0.2 * jax.random.normal(key, act.shape), -0.5, 0.5)
        next_act = jnp.clip(actor_net.apply(targets["actor"], next_obs) + noise, -1.0, 1.0)
        tq1, tq2 = critic_net.apply(targets["critic"], next_obs, next_act)
        target = jax.lax.stop_gradient(rew + 0.99 * jnp.minimum(tq1, tq2))
        q1, q2 = critic_net.apply(critic_p, obs, act)
        return jnp.mean((q1 - target) ** 2 + (q2 - target) ** 2)

    def actor_loss(actor_p, critic_p, data):
        q1, _ = critic_net.apply(critic_p, data[0], actor_net.apply(actor_p, data[0]))
        return -jnp.mean(q1)

    def grads(params, data, key):
        g_critic = jax.grad(critic_loss)(params["critic"], params["actor"], data, key)
        g_actor = jax.grad(actor_loss)(params["actor"], params["critic"], data)
        return {"actor": g_actor, "critic": g_critic}

    return grads


def _programs(nets, params, mask_tree, data) -> List[Tuple[str, Callable, tuple]]:
    """The jitted programs to time, each with its arguments."""
    grads_fn = _loss_fns(nets, params)
    opt = optax.adam(3e-4)
    opt_state = opt.init(params)
    key = jax.random.key(1)

    def dense_step(params, opt_state, data, key):
        updates, opt_state = opt.update(grads_fn(params, data, key), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def topo_masks(params, mask_tree, grads):
        drop = scores.score_tree(scores.magnitude, params, mask_tree)
        grow = scores.score_tree(scores.gradient, params, mask_tree, grads)
        new_masks = topology.update_masks(mask_tree, drop, grow, DROP_FRACTION)
        return masks.apply_masks(params, new_masks), new_masks

    def topo_grads(params, mask_tree, data, key):
        return topo_masks(params, mask_tree, grads_fn(params, data, key))

    def topo_reset(params, mask_tree, opt_state, data, key):
        new_params, new_masks = topo_grads(params, mask_tree, data, key)
        grown = optim.grown_mask(mask_tree, new_masks)
        return new_params, new_masks, optim.reset_grown_moments(opt_state, grown, opt)

    grads = jax.jit(grads_fn)(params, data, key)
    return [
        ("dense step (critic+actor grads, Adam)", jax.jit(dense_step), (params, opt_state, data, key)),
        ("topology (masks: scores, drop/grow)", jax.jit(topo_masks), (params, mask_tree, grads)),
        ("topology (+grads)", jax.jit(topo_grads), (params, mask_tree, data, key)),
        ("topology (+grads, reset moments)", jax.jit(topo_reset), (params, mask_tree, opt_state, data, key)),
    ]


def time_interleaved(programs: Sequence[Tuple[str, Callable, tuple]], repeats: int,
                     warmup: int = 3) -> List[Tuple[str, float]]:
    """Median wall time (s) per program after compilation and warm-up.

    Calls are interleaved round-robin (one call of each program per round) so that load from other
    processes on the shared machine hits every program alike and the ratios stay meaningful.
    """
    for _, fn, args in programs:
        for _ in range(warmup):
            jax.block_until_ready(fn(*args))
    samples: List[List[float]] = [[] for _ in programs]
    for _ in range(repeats):
        for i, (_, fn, args) in enumerate(programs):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            samples[i].append(time.perf_counter() - start)
    return [(name, statistics.median(t)) for (name, _, _), t in zip(programs, samples)]


def check_counts(nets, params, mask_tree, data) -> None:
    """Sanity check: the update keeps every layer's active count exactly."""
    grads = jax.jit(_loss_fns(nets, params))(params, data, jax.random.key(1))
    drop = scores.score_tree(scores.magnitude, params, mask_tree)
    grow = scores.score_tree(scores.gradient, params, mask_tree, grads)
    new = topology.update_masks(mask_tree, drop, grow, DROP_FRACTION)
    same = jax.tree.leaves(jax.tree.map(lambda a, b: int(a.sum()) == int(b.sum()), mask_tree, new))
    if not all(same):
        raise AssertionError("topology update changed an active count")


def format_table(rows: Sequence[Tuple[str, float]]) -> str:
    base = rows[0][1]
    lines = [f"{'program':<40} {'median ms':>10} {'x dense step':>13}", "-" * 65]
    lines += [f"{name:<40} {t * 1e3:>10.3f} {t / base:>13.2f}" for name, t in rows]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    fv = _define_flags()
    if not cli.parse(fv, argv, "topology_update"):
        return cli.USAGE_ERROR
    nets, params, mask_tree, data = _setup(jax.random.key(0), fv["batch"].value)
    check_counts(nets, params, mask_tree, data)
    rows = time_interleaved(_programs(nets, params, mask_tree, data), fv["repeats"].value)
    print(f"TD3 obs {OBS_DIM} act {ACT_DIM} hidden {HIDDEN} batch {fv['batch'].value}, ERK actor "
          f"{ACTOR_SPARSITY} critic {CRITIC_SPARSITY}, drop fraction {DROP_FRACTION}, "
          f"backend {jax.default_backend()}, repeats {fv['repeats'].value}")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    cli.run(main)
