"""DST methods as small classes (the jaxpruner shape): a method differs from another only in its hooks.

A method object is static (frozen, hashable: jitted code closes over it) and describes what one network
does under the method. The hooks, each overridable by a subclass:

* `base_drop_score(x)` / `base_grow_score(x)`: the method's scorers ``LeafInputs -> scores`` (higher =
  keep / grow), which `drop_score` / `grow_score` use unless an `Importance` plugs in its own;
* `init_state(params, masks)` / `update_state(state, params, grads, masks)`: the method's own state,
  updated with every gradient step (the importance EMAs; ``None`` for the others);
* `make_schedule(topo, total_updates, scale)`: when events fire, read off the network's own update
  counter (`event(update)`, `sparsity.schedules`);
* `prune_count(mask, density, update)`: how many connections a prune-only event keeps (DS's last
  update, every GMP step; `prune_masks` applies it);
* fields set from the config: `target_masks` ('share': re-mask the target with the online masks;
  'prune': DS's top-k |w|), `regrow_dropped`, `skip_optimizer_step`, `reset_moments`;
* `dense_grad_every_step` / `dense_grad_on_events`: what the FLOP accounting must count.

The classes: `Static` (fixed masks), `SET` (DS: per-sign magnitude drop, random growth, prune-only last
event), `RigL` (SET with dense-gradient growth and magnitude drop), `RLx2` (RigL; its n-step target and
dynamic buffer are replay settings in its preset), `GMP` (dense-to-sparse magnitude pruning). `Importance`
plugs into any of them (``"ds+importance"``). `REGISTRY` maps a name to its class and its preset (the
config overrides of its paper, in `method_presets.py`), written out as data; adding a method is one class
and one `register` call.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Dict, NamedTuple, Optional, Tuple, Type

import jax
import jax.numpy as jnp

from sparse_rl_jax import method_presets
from sparse_rl_jax.sparsity import schedules
from sparse_rl_jax.sparsity import scores as score_lib
from sparse_rl_jax.sparsity import topology
from sparse_rl_jax.sparsity.masks import map_sparse

Overrides = Dict[str, Any]


# ---------------------------------------------------------------------------------------- importance
@dataclasses.dataclass(frozen=True)
class Importance:
    """Running importance per connection (ALGORITHMS.md, Method 3), usable by any method.

    Existing connections are scored by an EMA of the first-order saliency |w g|, absent ones by an EMA of
    |g|, both updated at every gradient step with that step's dense gradient. ``decay = 1 - 1/horizon``.
    Subclass and override `update_state` / `drop_score` / `grow_score` for another importance function.
    """
    horizon: int = 1000

    @property
    def decay(self) -> float:
        return 1.0 - 1.0 / max(self.horizon, 1)

    def init_state(self, params, masks):
        return score_lib.init_importance(params, masks)

    def update_state(self, state, params, grads, masks):
        return score_lib.update_importance(state, params, grads, masks, self.decay)

    def drop_score(self, x: score_lib.LeafInputs) -> jax.Array:
        return score_lib.importance_drop(x)

    def grow_score(self, x: score_lib.LeafInputs) -> jax.Array:
        return score_lib.importance_grow(x)


# ---------------------------------------------------------------------------------------- methods
@dataclasses.dataclass(frozen=True)
class Static:
    """Masks fixed at initialisation (with zero sparsity: the dense baseline). Base of every method."""
    schedule: Optional[schedules.TopologySchedule] = None
    regrow_dropped: bool = True
    skip_optimizer_step: bool = False
    reset_moments: bool = False
    target_masks: str = "share"
    importance: Optional[Importance] = None

    has_topology: ClassVar[bool] = False
    starts_dense: ClassVar[bool] = False  # GMP: masks start full and are pruned towards the densities
    scores_use_gradient: ClassVar[bool] = False  # a drop or grow score reads the dense gradient
    uses_drop_fraction: ClassVar[bool] = False  # drop/grow events with topology.drop_fraction

    # -- scores (higher = keep / grow) ------------------------------------------------------------
    def drop_score(self, x: score_lib.LeafInputs) -> jax.Array:
        return self.importance.drop_score(x) if self.importance else self.base_drop_score(x)

    def grow_score(self, x: score_lib.LeafInputs) -> jax.Array:
        return self.importance.grow_score(x) if self.importance else self.base_grow_score(x)

    def base_drop_score(self, x: score_lib.LeafInputs) -> jax.Array:
        return score_lib.magnitude(x)

    def base_grow_score(self, x: score_lib.LeafInputs) -> jax.Array:
        return score_lib.random(x)

    # -- the method's own state ---------------------------------------------------------------------
    def init_state(self, params, masks):
        return self.importance.init_state(params, masks) if self.importance else None

    def update_state(self, state, params, grads, masks):
        return self.importance.update_state(state, params, grads, masks) if self.importance else state

    # -- events -------------------------------------------------------------------------------------
    def event(self, update) -> jax.Array:
        """NO_EVENT / DROP_GROW / PRUNE at the network's ``update``-th update (1-based, may be traced)."""
        if self.schedule is None:
            return jnp.int32(schedules.NO_EVENT)
        return self.schedule.event(update)

    def drop_grow_masks(self, masks, params, grads, state, update, key, drop_fraction=None):
        """Exact-count drop and grow with this method's scores at the scheduled drop fraction
        (``drop_fraction``: the schedule's zeta0 as data, `TopologySchedule.fraction`)."""
        drop_key, grow_key = jax.random.split(key)
        drop = score_lib.score_tree(self.drop_score, params, masks, grads, state, drop_key)
        grow = score_lib.score_tree(self.grow_score, params, masks, grads, state, grow_key)
        return topology.update_masks(masks, drop, grow, self.schedule.fraction(update, drop_fraction),
                                     self.regrow_dropped)

    def prune_masks(self, masks, params, grads, state, densities, update, key, drop_fraction=None):
        """Prune-only event: keep the top `prune_count` active entries by this method's drop score."""
        drop = score_lib.score_tree(self.drop_score, params, masks, grads, state, key)

        def leaf(mask, score, density):
            return topology.keep_top(mask, score, self.prune_count(mask, density, update, drop_fraction))

        return map_sparse(leaf, masks, drop, densities)

    def prune_count(self, mask, density, update, drop_fraction=None) -> jax.Array:
        """Connections kept by a prune-only event: SET/DS drop the scheduled fraction, no regrowth."""
        return jnp.sum(mask, dtype=jnp.int32) - topology.drop_count(
            mask, self.schedule.fraction(update, drop_fraction))

    # -- accounting ---------------------------------------------------------------------------------
    @property
    def dense_grad_every_step(self) -> bool:
        """The importance EMA of |g| at absent connections needs the dense weight gradient each step."""
        return self.importance is not None

    @property
    def dense_grad_on_events(self) -> bool:
        """RigL-style scores need the dense weight gradient on event steps only."""
        return self.has_topology and self.scores_use_gradient and self.importance is None

    @classmethod
    def from_config(cls, topo, total_updates: int, scale: int = 1,
                    importance: Optional[Type[Importance]] = None) -> "Static":
        """This method for one network: ``total_updates`` of its own, its clock advancing ``scale`` per
        update (TD3's actor on the critic's clock: the policy delay)."""
        horizon = topo.importance_horizon or max(topo.period // scale, 1)
        return cls(
            schedule=cls.make_schedule(topo, total_updates, scale) if cls.has_topology else None,
            regrow_dropped=topo.regrow_dropped, skip_optimizer_step=topo.skip_optimizer_step,
            reset_moments=topo.reset_moments, target_masks=topo.target_masks,
            importance=importance(horizon=horizon) if importance else None)

    @classmethod
    def make_schedule(cls, topo, total_updates: int, scale: int) -> schedules.TopologySchedule:
        clock_total = max(total_updates * scale, 1)
        stop = min(int(topo.stop * clock_total), clock_total - topo.stop_margin)
        return schedules.TopologySchedule(
            period=topo.period, start=topo.start or topo.period, stop=max(stop, 0), drop_fraction=topo.drop_fraction,
            decay=topo.decay, end=clock_total, final_prune_only=topo.final_prune_only, scale=scale)


@dataclasses.dataclass(frozen=True)
class SET(Static):
    """SET / DS (Sokar et al.): drop the fraction of each sign's weights closest to zero, grow at random."""
    has_topology: ClassVar[bool] = True
    uses_drop_fraction: ClassVar[bool] = True

    def base_drop_score(self, x):
        return score_lib.signed_magnitude(x)


@dataclasses.dataclass(frozen=True)
class RigL(SET):
    """RigL (Evci et al.): drop the smallest |w|, grow where the dense gradient is largest."""
    scores_use_gradient: ClassVar[bool] = True

    def base_drop_score(self, x):
        return score_lib.magnitude(x)

    def base_grow_score(self, x):
        return score_lib.gradient(x)


@dataclasses.dataclass(frozen=True)
class RLx2(RigL):
    """RLx2 (Tan et al.): RigL's topology; its 3-step delayed target and dynamic buffer are replay
    settings (its preset), its skipped optimizer step and shared target masks are topology settings."""


@dataclasses.dataclass(frozen=True)
class GMP(Static):
    """Gradual magnitude pruning (Zhu & Gupta): dense at first, pruned by |w| on a cubic ramp."""
    gmp_begin: int = 0
    gmp_end: int = 0

    has_topology: ClassVar[bool] = True
    starts_dense: ClassVar[bool] = True

    def prune_count(self, mask, density, update, drop_fraction=None):
        del drop_fraction  # GMP's events prune on its ramp, not by a drop fraction
        ramp = schedules.gmp_sparsity(self.schedule.clock(update), 1.0, self.gmp_begin, self.gmp_end)
        keep = 1.0 - (1.0 - density) * ramp
        return jnp.round(keep * mask.size).astype(jnp.int32)

    @classmethod
    def from_config(cls, topo, total_updates, scale=1, importance=None):
        base = super().from_config(topo, total_updates, scale, importance)
        s = base.schedule
        return dataclasses.replace(base, gmp_begin=s.start, gmp_end=s.stop)

    @classmethod
    def make_schedule(cls, topo, total_updates, scale):
        clock_total = max(total_updates * scale, 1)
        begin = max(int(topo.gmp_begin * clock_total), 1)
        end = max(int(topo.gmp_end * clock_total), begin)
        # the ramp ends on the last event, so the final event prunes to exactly the target density
        end = begin + (end - begin) // topo.period * topo.period
        return schedules.TopologySchedule(period=topo.period, start=begin, stop=end, scale=scale,
                                          prune_only=True)


# ---------------------------------------------------------------------------------------- registry
class Entry(NamedTuple):
    cls: Type[Static]
    preset: Callable[[str], Overrides]  # algo -> config overrides of the method's paper
    doc: str


def _entry(cls: Type[Static], preset: Callable[[str], Overrides]) -> Entry:
    return Entry(cls, preset, (cls.__doc__ or "").strip().splitlines()[0])


# The built-in methods: each name once, with its class and its paper's settings (`method_presets`).
REGISTRY: Dict[str, Entry] = {
    "dense": _entry(Static, method_presets.dense),
    "static": _entry(Static, method_presets.static),
    "ds": _entry(SET, method_presets.ds),
    "set": _entry(SET, method_presets.set_),
    "rigl": _entry(RigL, method_presets.rigl),
    "rlx2": _entry(RLx2, method_presets.rlx2),
    "gmp": _entry(GMP, method_presets.gmp),
}
SCORERS: Dict[str, Type[Importance]] = {"importance": Importance}


def register(name: str, cls: Type[Static], preset: Callable[[str], Overrides]) -> None:
    """Make ``name`` (and, for a method with topology, ``name+importance``) a method of every tool."""
    if "+" in name:
        raise ValueError(f"method names may not contain '+': {name!r}")
    REGISTRY[name] = _entry(cls, preset)


def method_names() -> Tuple[str, ...]:
    names = list(REGISTRY)
    names += [f"{n}+{s}" for n, e in REGISTRY.items() if e.cls.has_topology for s in SCORERS]
    return tuple(names)


def parse(name: str) -> Tuple[Entry, Optional[Type[Importance]]]:
    """``'ds+importance'`` -> (the 'ds' entry, Importance); ValueError naming the allowed names."""
    base, _, scorer = name.partition("+")
    if base not in REGISTRY or (scorer and (scorer not in SCORERS or not REGISTRY[base].cls.has_topology)):
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(method_names())}")
    return REGISTRY[base], (SCORERS[scorer] if scorer else None)


def for_network(name: str, topo, total_updates: int, scale: int = 1) -> Static:
    """The method object of one network (``total_updates`` of its own, clock ``scale`` per update)."""
    entry, scorer = parse(name)
    return entry.cls.from_config(topo, total_updates, scale, scorer)

