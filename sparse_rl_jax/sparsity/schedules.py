"""When topology updates happen and how much they change; the GMP sparsity ramp.

All methods take a step that may be a traced integer (a ``lax.scan`` counter) and return ``jnp`` values,
so the same schedule drives a jitted step's ``lax.cond``. Keep that counter unbatched under ``vmap``
(see DESIGN.md) so the predicate stays a real branch.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class TopologySchedule:
    """Periodic drop/grow schedule (frozen and hashable: safe as a static jit argument).

    Updates happen at ``start, start + period, ...`` up to ``stop`` inclusive (``None``: never stop).
    ``drop_fraction`` is zeta0. ``decay='cosine'`` anneals it as ``zeta0 / 2 * (1 + cos(pi t / end))``
    with ``t`` the step itself, clipped at ``end`` (RLx2: ``end`` = total iterations; defaults to
    ``stop``). ``final_prune_only`` (DS code): the last update at or before ``stop`` only drops.
    """

    period: int
    start: int = 0
    stop: Optional[int] = None
    drop_fraction: float = 0.3
    decay: str = "constant"
    end: Optional[int] = None
    final_prune_only: bool = False

    def __post_init__(self):
        if self.period <= 0:
            raise ValueError("period must be positive")
        if self.decay not in ("constant", "cosine"):
            raise ValueError(f"unknown decay {self.decay!r}")
        if self.decay == "cosine" and self.end is None and self.stop is None:
            raise ValueError("cosine decay needs end (or stop)")
        if self.final_prune_only and self.stop is None:
            raise ValueError("final_prune_only needs stop")

    def is_update(self, step) -> jax.Array:
        """True at ``start + j * period`` (j >= 0) while ``step <= stop``."""
        step = jnp.asarray(step, jnp.int32)
        on_grid = (step >= self.start) & ((step - self.start) % self.period == 0)
        return on_grid if self.stop is None else on_grid & (step <= self.stop)

    def is_final_prune(self, step) -> jax.Array:
        """True at the last update (the one with no further update before ``stop``) when enabled."""
        if not self.final_prune_only:
            return jnp.asarray(False)
        step = jnp.asarray(step, jnp.int32)
        return self.is_update(step) & (step + self.period > self.stop)

    def fraction(self, step) -> jax.Array:
        """Drop fraction at ``step`` (float32): constant zeta0 or its cosine annealing."""
        if self.decay == "constant":
            return jnp.asarray(self.drop_fraction, jnp.float32)
        end = self.end if self.end is not None else self.stop
        t = jnp.clip(jnp.asarray(step, jnp.float32), 0.0, float(end))
        return (0.5 * self.drop_fraction * (1.0 + jnp.cos(math.pi * t / end))).astype(jnp.float32)


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
