"""When topology updates happen and how much they change; the GMP sparsity ramp.

All methods take a network's update count, which may be traced, and return ``jnp`` values, so the same
schedule drives a jitted step's ``lax.switch``. Under ``vmap`` the count is batched (it lives in the
network's state); `dst` agrees the event over the vmap axes so the switch stays a real branch.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp


NO_EVENT, DROP_GROW, PRUNE = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class TopologySchedule:
    """When a network's topology changes, read off the network's own update counter.

    Frozen and hashable (a static jit argument). Events sit on a grid ``start, start + period, ...`` of a
    *clock* that advances ``scale`` units per own update (``scale = 1``: the network's own updates;
    TD3's actor on the critic's clock: ``scale = policy_delay``). An event fires on the first update at
    or after each grid point, so no grid point is ever skipped, whatever the update interval. Integers
    throughout: exact for any run length.

    ``stop`` (clock units, ``None``: never): grid points after it are not used, except, with
    ``final_prune_only`` (DS's code), the first one after it, whose event only drops. ``drop_fraction``
    is zeta0; ``decay='cosine'`` anneals it as ``zeta0 / 2 * (1 + cos(pi t / end))`` with ``t`` the clock,
    clipped at ``end`` (RLx2: the network's total updates; defaults to ``stop``). ``prune_only``: every
    event is a prune (GMP).
    """

    period: int
    start: int = 1
    stop: Optional[int] = None
    drop_fraction: float = 0.3
    decay: str = "constant"
    end: Optional[int] = None
    final_prune_only: bool = False
    scale: int = 1
    prune_only: bool = False

    def __post_init__(self):
        if self.period <= 0:
            raise ValueError("period must be positive")
        if self.scale < 1 or int(self.scale) != self.scale:
            raise ValueError("scale must be a positive integer")
        if self.decay not in ("constant", "cosine"):
            raise ValueError(f"unknown decay {self.decay!r}")
        if self.decay == "cosine" and self.end is None and self.stop is None:
            raise ValueError("cosine decay needs end (or stop)")
        if self.final_prune_only and self.stop is None:
            raise ValueError("final_prune_only needs stop")

    def _grid_points_upto(self, t):
        """Grid points ``<= t`` (``t`` a Python or traced int)."""
        return jnp.where(t >= self.start, (t - self.start) // self.period + 1, 0)

    @property
    def num_events(self) -> Optional[int]:
        """Events over the whole run (``None``: unbounded)."""
        if self.stop is None:
            return None
        n = max((self.stop - self.start) // self.period + 1, 0) if self.stop >= self.start else 0
        return n + (1 if self.final_prune_only else 0)

    def events_upto(self, update):
        """Events fired by own updates ``1..update`` (host or traced ints)."""
        crossed = self._grid_points_upto(jnp.asarray(update, jnp.int32) * self.scale)
        return crossed if self.num_events is None else jnp.minimum(crossed, self.num_events)

    def event(self, update) -> jax.Array:
        """What the network's ``update``-th gradient update (1-based) does: NO_EVENT, DROP_GROW or PRUNE."""
        update = jnp.asarray(update, jnp.int32)
        now, before = self.events_upto(update), self.events_upto(update - 1)
        fired = now > before
        if self.prune_only:
            kind = jnp.int32(PRUNE)
        elif self.final_prune_only:
            kind = jnp.where(now == self.num_events, PRUNE, DROP_GROW).astype(jnp.int32)
        else:
            kind = jnp.int32(DROP_GROW)
        return jnp.where(fired, kind, NO_EVENT).astype(jnp.int32)

    def clock(self, update):
        return jnp.asarray(update, jnp.int32) * self.scale

    def fraction(self, update, drop_fraction=None) -> jax.Array:
        """Drop fraction at own update ``update`` (float32): constant zeta0 or its cosine annealing.
        ``drop_fraction``: zeta0 as data (a traced per-seed value), in place of the schedule's number."""
        zeta0 = self.drop_fraction if drop_fraction is None else drop_fraction
        if self.decay == "constant":
            return jnp.asarray(zeta0, jnp.float32)
        end = self.end if self.end is not None else self.stop
        t = jnp.clip(self.clock(update).astype(jnp.float32), 0.0, float(end))
        return (0.5 * zeta0 * (1.0 + jnp.cos(math.pi * t / end))).astype(jnp.float32)


def gmp_window(total_steps: int, begin_fraction: float = 0.2, end_fraction: float = 0.8) -> tuple:
    """(begin, end) steps of the pruning ramp: 20%-80% of training by default (Graesser et al.)."""
    return int(begin_fraction * total_steps), int(end_fraction * total_steps)


def gmp_sparsity(step, final_sparsity, begin: Optional[int] = None, end: Optional[int] = None, *,
                 total_steps: Optional[int] = None, initial_sparsity=0.0) -> jax.Array:
    """Zhu & Gupta cubic ramp ``s_F + (s_0 - s_F) (1 - p)^3``, ``p = clip((t - t0) / (t1 - t0), 0, 1)``.

    With ``s_0 = 0`` this is ``s_F (1 - (1 - p)^3)``. ``begin``/``end`` default to 20% / 80% of
    ``total_steps``. ``step`` and the sparsities may be traced.
    """
    if begin is None or end is None:
        if total_steps is None:
            raise ValueError("give begin and end, or total_steps")
        default_begin, default_end = gmp_window(total_steps)
        begin = default_begin if begin is None else begin
        end = default_end if end is None else end
    span = max(end - begin, 1)
    p = jnp.clip((jnp.asarray(step, jnp.float32) - begin) / span, 0.0, 1.0)
    s_f = jnp.asarray(final_sparsity, jnp.float32)
    return s_f + (jnp.asarray(initial_sparsity, jnp.float32) - s_f) * (1.0 - p) ** 3
