"""One sparse network under a DST method: its state, and what every gradient step does to it.

`SparseNet` bundles everything a network carries: params, target, optimizer state, masks, target
densities, the method's own state (importance EMAs), an RNG key, and its **own update counter**
(``updates``, as Adam counts its steps). Every schedule is read off that counter, so an event fires on
the network's first update at or after each boundary whatever the policy delay, updates per env step or
warm-up (the bug this shape rules out: an actor handed a clock its schedule never matches).

`apply_gradients(net, grads, method, optimizer, batch_axes, drop_fraction)` is the single entry point agents
call with *dense* gradients (taken w.r.t. the stored, already masked weights):

1. the method's state is updated (importance EMAs; identity for the others);
2. the event of this update (`methods.Static.event`) picks one branch of a real `lax.switch`: nothing,
   drop/grow, or a prune-only event. Under ``vmap`` the counter is batched, but every seed of a program
   holds the same count, so the event is agreed with a `lax.pmax` over ``batch_axes``: an unbatched
   index, so only the chosen branch runs;
3. one masked optimizer step (skipped on a drop/grow event when the method says so, as RLx2 does),
   re-mask the weights, optionally zero the Adam moments of newly grown connections.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from sparse_rl_jax.sparsity import masks as mask_lib
from sparse_rl_jax.sparsity import optim as optim_lib
from sparse_rl_jax.sparsity import schedules
from sparse_rl_jax.sparsity import targets as target_lib


@struct.dataclass
class SparseNet:
    params: Any
    target: Any  # None when the algorithm keeps no target copy (SAC actor)
    opt_state: Any
    masks: Any  # params-shaped; bool at sparse leaves, None at dense leaves
    densities: Any  # params-shaped; target density (float32 scalar) at sparse leaves, None elsewhere
    method_state: Any  # the method's own state (ImportanceState) or None
    key: jax.Array
    updates: jax.Array  # int32: gradient updates this network has made
    active: jax.Array  # int32 [sparse leaves]: active count per sparse leaf (recounted on events only)
    # float32 [sparse leaves]: the last target prune's floor per sparse leaf (targets.floor_guesses: the
    # next prune's starting guess); 0 until a prune runs and for methods that share the online masks
    target_floor: jax.Array


def init_net(key, params, masks, densities, optimizer, method) -> SparseNet:
    """A network at update 0 (``target`` is set by the agent: `with_target`)."""
    params = mask_lib.apply_masks(params, masks)
    active = active_vector(masks)
    return SparseNet(
        params=params, target=None, opt_state=optimizer.init(params), masks=masks, densities=densities,
        method_state=method.init_state(params, masks), key=key, updates=jnp.int32(0),
        active=active, target_floor=jnp.zeros_like(active, jnp.float32))


def with_target(net: SparseNet) -> SparseNet:
    return net.replace(target=net.params)


def active_vector(masks) -> jax.Array:
    """int32 vector: the active count of each sparse leaf in tree order (read by the FLOP accounting;
    summed over a chunk's updates it gives the exact mean size of the network over those updates)."""
    counts = [jnp.sum(m, dtype=jnp.int32) for m in _sparse_leaves(masks)]
    # a dense network gets one unused 0 (orbax cannot save zero-size arrays)
    return jnp.stack(counts) if counts else jnp.zeros((1,), jnp.int32)


def agreed(value: jax.Array, batch_axes: Sequence[str]) -> jax.Array:
    """``value`` made unbatched over the named vmap axes. Only for values equal across them (update
    counts), so the maximum is the value itself; a `lax.switch` on the result is a real branch."""
    return jax.lax.pmax(value, tuple(batch_axes)) if batch_axes else value


def next_masks(net: SparseNet, grads, method, update, event, key, drop_fraction=None):
    """(new masks, mask change, active counts) for this update's event; the mask-change summary and the
    counts are computed inside the event branches only (on the other updates nothing changes).
    ``drop_fraction``: the method's zeta0 as data (the agent's hyperparameters), else the schedule's."""
    if method.schedule is None:
        return net.masks, jnp.float32(0.0), net.active

    def with_change(new):
        return new, mask_change(net.masks, new), active_vector(new)

    return jax.lax.switch(event, [
        lambda: (net.masks, jnp.float32(0.0), net.active),
        lambda: with_change(method.drop_grow_masks(
            net.masks, net.params, grads, net.method_state, update, key, drop_fraction)),
        lambda: with_change(method.prune_masks(
            net.masks, net.params, grads, net.method_state, net.densities, update, key, drop_fraction)),
    ])


def apply_gradients(net: SparseNet, grads, method, optimizer, batch_axes: Sequence[str] = (),
                    drop_fraction=None, **optimizer_args) -> Tuple[SparseNet, Dict]:
    """One gradient update of a sparse network under its method. Returns (net, metrics)."""
    chex.assert_trees_all_equal_shapes(grads, net.params)  # trace-time check: costs nothing per step
    key, topo_key = jax.random.split(net.key)
    update = net.updates + 1
    net = net.replace(key=key, method_state=method.update_state(
        net.method_state, net.params, grads, net.masks))
    event = agreed(method.event(update), batch_axes)
    masks, change, active = next_masks(net, grads, method, update, event, topo_key, drop_fraction)
    skip = (event == schedules.DROP_GROW) if method.skip_optimizer_step else False
    updates, opt_state = optimizer.update(grads, net.opt_state, net.params, masks=masks, skip=skip,
                                          **optimizer_args)
    params = mask_lib.apply_masks(optax.apply_updates(net.params, updates), masks)
    if method.reset_moments:
        grown = optim_lib.grown_mask(net.masks, masks)
        opt_state = optim_lib.reset_grown_moments(opt_state, grown)
    metrics = {"mask_change": change, "topology_events": (event != schedules.NO_EVENT).astype(jnp.int32),
               "updates": jnp.int32(1), "active": active, "grad_norm": optax.tree.norm(grads)}
    return net.replace(params=params, opt_state=opt_state, masks=masks, updates=update, active=active), metrics


def zero_metrics(net: SparseNet) -> Dict:
    """The metrics of an update that did not happen (TD3's actor between its delayed updates)."""
    return {"mask_change": jnp.float32(0.0), "topology_events": jnp.int32(0), "updates": jnp.int32(0),
            "active": jnp.zeros_like(net.active), "grad_norm": jnp.float32(0.0)}


def mask_change(old, new) -> jax.Array:
    """Fraction of active connections that moved (grown count / old active count) across a network."""
    pairs = [(o, n) for o, n in zip(_sparse_leaves(old), _sparse_leaves(new))]
    if not pairs:
        return jnp.float32(0.0)
    grown = sum(jnp.sum(n & ~o) for o, n in pairs)
    active = sum(jnp.sum(o) for o, _ in pairs)
    return grown / jnp.maximum(active, 1)


def _sparse_leaves(masks):
    return [m for m in jax.tree.leaves(masks) if m is not None]


def update_target(net: SparseNet, tau: float, method) -> SparseNet:
    """Polyak average, then the method's target-mask policy (share online masks, or prune to count)."""
    target = optax.incremental_update(net.params, net.target, tau)
    if _sparse_leaves(net.masks):
        if method.target_masks == "prune":
            guesses = target_lib.floor_guesses(_per_leaf_tree(net.masks, net.target_floor), tau)
            target, floors = target_lib.prune_target_with_floors(
                target, net.masks, _per_leaf_tree(net.masks, net.active), guesses)
            net = net.replace(target_floor=jnp.stack(_sparse_leaves(floors)))  # float32: top_k_floor's
        else:
            target = target_lib.remask_target(target, net.masks)
    return net.replace(target=target)


def _per_leaf_tree(masks, vector: jax.Array):
    """A per-sparse-leaf vector (``active``, ``target_floor``: tree order) as a mask-shaped tree."""
    index = iter(range(len(_sparse_leaves(masks))))
    return mask_lib.map_sparse(lambda m: vector[next(index)], masks)


def kernel_sparsity(net: SparseNet) -> jax.Array:
    """Fraction of inactive connections over all kernels (sparse and dense layers), as papers report.

    Counted from the masks, not from zero weights: a just-grown connection is active even while its
    weight is still exactly 0.
    """
    flat_masks = jax.tree.leaves(net.masks, is_leaf=lambda x: x is None)
    flat_params = jax.tree_util.tree_leaves_with_path(net.params)
    total, active = 0, 0
    for mask, (path, leaf) in zip(flat_masks, flat_params):
        if getattr(path[-1], "key", None) != "kernel":
            continue
        total += leaf.size
        active = active + (leaf.size if mask is None else jnp.sum(mask))
    return 1.0 - active / total
