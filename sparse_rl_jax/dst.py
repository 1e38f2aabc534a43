"""One sparse network under a DST method: its state, and the rules applied at every gradient step.

`SparseNet` bundles everything a network carries (params, target, optimizer state, masks, importance,
RNG). `NetRules` is the static (hashable) description of the method for that network, built once from
the config. `apply_gradients` is the single entry point agents call with *dense* gradients (taken w.r.t.
the stored, already masked weights):

1. update the running importance (only when a scorer uses it);
2. on a topology step (a real `lax.switch`: the clock is shared by all vmapped seeds, so only the
   chosen branch runs) compute the new masks: exact-count drop/grow, a prune-only final update (DS), or
   a gradual-magnitude-pruning step;
3. one masked optimizer step (skipped on a topology step when the method says so, as RLx2 does),
   re-mask the weights, and optionally zero the Adam moments of newly grown connections.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from sparse_rl_jax.sparsity import masks as mask_lib
from sparse_rl_jax.sparsity import optim as optim_lib
from sparse_rl_jax.sparsity import schedules
from sparse_rl_jax.sparsity import scores as score_lib
from sparse_rl_jax.sparsity import targets as target_lib
from sparse_rl_jax.sparsity import topology

NO_UPDATE, DROP_GROW, PRUNE = 0, 1, 2

DROP_SCORERS = {
    "magnitude": score_lib.magnitude,
    "signed_magnitude": score_lib.signed_magnitude,
    "random": score_lib.random,
    "importance": score_lib.importance_drop,
}
GROW_SCORERS = {
    "gradient": score_lib.gradient,
    "random": score_lib.random,
    "importance": score_lib.importance_grow,
}


@struct.dataclass
class SparseNet:
    params: Any
    target: Any  # None when the algorithm keeps no target copy (SAC actor)
    opt_state: Any
    masks: Any  # params-shaped; bool at sparse leaves, None at dense leaves
    densities: Any  # params-shaped; target density (float32 scalar) at sparse leaves, None elsewhere
    importance: Any  # ImportanceState or None
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class NetRules:
    """Static per-network method description (hashable, so it can close over jitted code)."""

    kind: str = "none"  # none | dst | gmp
    schedule: Optional[schedules.TopologySchedule] = None
    drop: str = "magnitude"
    grow: str = "gradient"
    regrow_dropped: bool = True
    skip_optimizer_step: bool = False
    reset_moments: bool = False
    target_masks: str = "share"
    importance_decay: Optional[float] = None
    gmp_begin: int = 0
    gmp_end: int = 0

    @property
    def uses_importance(self) -> bool:
        return self.importance_decay is not None

    def branch(self, clock: jax.Array) -> jax.Array:
        """Which topology action runs at this clock value (0 none, 1 drop/grow, 2 prune)."""
        if self.kind == "dst":
            grow = self.schedule.is_update(clock)
            prune = self.schedule.is_final_prune(clock) if self.schedule.final_prune_only else False
            return jnp.where(prune, PRUNE, jnp.where(grow, DROP_GROW, NO_UPDATE)).astype(jnp.int32)
        if self.kind == "gmp":
            on = (clock % self.schedule.period == 0) & (clock >= self.gmp_begin) & (clock <= self.gmp_end)
            return jnp.where(on, PRUNE, NO_UPDATE).astype(jnp.int32)
        return jnp.int32(NO_UPDATE)


def rules_from_config(topo, total_clock: int) -> NetRules:
    """Build a network's rules from a `TopologyConfig`; `total_clock` = this network's total updates."""
    if topo.kind == "none":
        return NetRules()
    uses_importance = "importance" in (topo.drop, topo.grow)
    decay = 1.0 - 1.0 / max(topo.importance_horizon, 1) if uses_importance else None
    stop = max(int(topo.stop * total_clock), 1)
    # updates fall on multiples of the period, never before `start` (RigL / RLx2 convention)
    first = max(-(-topo.start // topo.period), 1) * topo.period
    schedule = schedules.TopologySchedule(
        period=topo.period, start=first, stop=stop, drop_fraction=topo.drop_fraction,
        decay=topo.decay, end=max(total_clock, 1), final_prune_only=topo.final_prune_only)
    return NetRules(
        kind=topo.kind, schedule=schedule, drop=topo.drop, grow=topo.grow,
        regrow_dropped=topo.regrow_dropped, skip_optimizer_step=topo.skip_optimizer_step,
        reset_moments=topo.reset_moments, target_masks=topo.target_masks, importance_decay=decay,
        gmp_begin=int(topo.gmp_begin * total_clock), gmp_end=int(topo.gmp_end * total_clock))


def init_net(key, params, masks, densities, optimizer, rules: NetRules, with_target: bool) -> SparseNet:
    params = mask_lib.apply_masks(params, masks)
    importance = score_lib.init_importance(params, masks) if rules.uses_importance else None
    return SparseNet(
        params=params, target=params if with_target else None, opt_state=optimizer.init(params),
        masks=masks, densities=densities, importance=importance, key=key)


def _drop_grow(net: SparseNet, grads, fraction, rules: NetRules, key):
    drop_fn, grow_fn = DROP_SCORERS[rules.drop], GROW_SCORERS[rules.grow]
    drop_key, grow_key = jax.random.split(key)
    drop = score_lib.score_tree(drop_fn, net.params, net.masks, grads, net.importance, drop_key)
    grow = score_lib.score_tree(grow_fn, net.params, net.masks, grads, net.importance, grow_key)
    return topology.update_masks(net.masks, drop, grow, fraction, rules.regrow_dropped)


def _prune(net: SparseNet, clock, rules: NetRules):
    """DS's final prune-only update, or one GMP step towards the scheduled density."""
    if rules.kind == "gmp":
        ramp = schedules.gmp_sparsity(clock, 1.0, rules.gmp_begin, rules.gmp_end)
        density = lambda d: 1.0 - (1.0 - d) * ramp
    else:
        fraction = rules.schedule.fraction(clock)
        density = None

    def prune_leaf(mask, weight, target_density):
        active = jnp.sum(mask)
        if density is None:
            count = active - jnp.round(fraction * active).astype(active.dtype)
        else:
            count = jnp.round(density(target_density) * mask.size).astype(active.dtype)
        return topology.prune_to_count(weight, mask, count)

    return mask_lib.map_sparse(prune_leaf, net.masks, net.params, net.densities)


def next_masks(net: SparseNet, grads, clock, rules: NetRules, key):
    """(new masks, branch index, mask change) for this step; the branch is a real switch, not a select.

    The mask-change summary is computed inside the updating branches only: on the ~999 steps out of
    1000 without an update the masks are unchanged and the summary is exactly 0, so those steps skip
    its reductions over every mask.
    """
    if rules.kind == "none":
        return net.masks, jnp.int32(NO_UPDATE), jnp.float32(0.0)
    branch = rules.branch(clock)
    fraction = rules.schedule.fraction(clock)

    def with_change(new):
        return new, topology_change(net.masks, new)

    new, change = jax.lax.switch(branch, [
        lambda: (net.masks, jnp.float32(0.0)),
        lambda: with_change(_drop_grow(net, grads, fraction, rules, key)),
        lambda: with_change(_prune(net, clock, rules)),
    ])
    return new, branch, change


def apply_gradients(net: SparseNet, grads, clock, rules: NetRules, optimizer) -> Tuple[SparseNet, Dict]:
    """One gradient step of a sparse network under its method's rules. Returns (net, metrics)."""
    key, topo_key = jax.random.split(net.key)
    importance = net.importance
    if rules.uses_importance:
        importance = score_lib.update_importance(importance, net.params, grads, net.masks,
                                                 rules.importance_decay)
    net = net.replace(importance=importance, key=key)
    masks, branch, change = next_masks(net, grads, clock, rules, topo_key)
    skip = (branch == DROP_GROW) if rules.skip_optimizer_step else False
    updates, opt_state = optimizer.update(grads, net.opt_state, net.params, masks=masks, skip=skip)
    params = mask_lib.apply_masks(optax.apply_updates(net.params, updates), masks)
    if rules.reset_moments:
        grown = mask_lib.map_sparse(lambda new, old: new & ~old, masks, net.masks)
        opt_state = optim_lib.reset_grown_moments(opt_state, grown)
    metrics = {"mask_change": change, "topology_updates": (branch != NO_UPDATE).astype(jnp.int32)}
    return net.replace(params=params, opt_state=opt_state, masks=masks), metrics


def topology_change(old, new) -> jax.Array:
    """Fraction of active connections that moved (grown count / old active count) across a network."""
    pairs = [(o, n) for o, n in zip(_sparse_leaves(old), _sparse_leaves(new))]
    if not pairs:
        return jnp.float32(0.0)
    grown = sum(jnp.sum(n & ~o) for o, n in pairs)
    active = sum(jnp.sum(o) for o, _ in pairs)
    return grown / jnp.maximum(active, 1)


def _sparse_leaves(masks):
    return [m for m in jax.tree.leaves(masks) if m is not None]


def update_target(net: SparseNet, tau: float, rules: NetRules) -> SparseNet:
    """Polyak average, then the method's target-mask policy (share online masks, or prune to count)."""
    target = optax.incremental_update(net.params, net.target, tau)
    if any(m is not None for m in jax.tree.leaves(net.masks, is_leaf=lambda x: x is None)):
        if rules.target_masks == "prune":
            target = target_lib.prune_target(target, net.masks)
        else:
            target = target_lib.remask_target(target, net.masks)
    return net.replace(target=target)


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
