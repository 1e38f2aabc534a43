"""Exact-count topology updates: drop / grow and magnitude pruning.

Convention (docs/ARCHITECTURE.md): *drop* removes the active entries with the lowest drop score, *grow*
adds the inactive entries with the highest grow score; within each selection ties go to the lower flat
index. Every function here is pure, jittable and vmappable, with traced fractions and counts: counts are
computed with ``jnp`` and selections use :func:`masks.top_k_mask`, so no shape depends on a value and
one compiled program serves every drop fraction.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from sparse_rl_jax.sparsity.masks import map_sparse, top_k_mask


def drop_count(mask: jax.Array, drop_fraction) -> jax.Array:
    """``round(drop_fraction * active)`` (float32, half to even), clipped to [0, active]; int32."""
    active = jnp.sum(mask, dtype=jnp.int32)
    k = jnp.round(jnp.asarray(drop_fraction, jnp.float32) * active.astype(jnp.float32))
    return jnp.clip(k.astype(jnp.int32), 0, active)


@functools.partial(jax.jit, static_argnames="regrow_dropped")
def update_mask(mask: jax.Array, drop_scores: jax.Array, grow_scores: jax.Array, drop_fraction,
                regrow_dropped: bool = True, *, grow=True) -> jax.Array:
    """Drop ``k = round(drop_fraction * active)`` lowest-scored active entries and grow ``k`` new ones.

    Grown entries are the highest ``grow_scores`` among inactive entries; with ``regrow_dropped`` (RigL,
    RLx2) the just-dropped entries are candidates too, without it (SET as written) they are not, and
    ``k`` is capped by the number of old inactive entries so the active count is preserved *exactly*.
    ``grow`` (may be traced) set to False only drops: DS's final prune-only update.
    ``regrow_dropped`` is static (Python bool); ``drop_fraction`` may be traced.
    """
    mask = mask.astype(bool)
    k = drop_count(mask, drop_fraction)
    if not regrow_dropped:
        inactive = jnp.int32(mask.size) - jnp.sum(mask, dtype=jnp.int32)
        k = jnp.where(grow, jnp.minimum(k, inactive), k)
    dropped = top_k_mask(drop_scores, k, valid=mask, lowest=True)
    kept = mask & ~dropped
    candidates = ~kept if regrow_dropped else ~mask
    grown = top_k_mask(grow_scores, jnp.where(grow, k, 0), valid=candidates)
    return kept | grown


def update_masks(masks, drop_scores, grow_scores, drop_fraction, regrow_dropped: bool = True, *,
                 grow=True):
    """:func:`update_mask` at every sparse leaf; score trees are mask-shaped (dense leaves ignored).

    ``drop_fraction`` is one scalar shared by all layers (each layer drops its own fraction).
    """
    def leaf(m, d, g):
        return update_mask(m, d, g, drop_fraction, regrow_dropped, grow=grow)

    return map_sparse(leaf, masks, drop_scores, grow_scores)


def prune_to_count(weights: jax.Array, mask: Optional[jax.Array], count, guess=None) -> jax.Array:
    """Mask of the ``count`` largest |w| among ``mask`` (all entries when ``None``), ties to lower index.

    Used by GMP (recompute the mask by magnitude); ``count`` may be traced. (DS's target prune calls
    `masks.top_k_floor` itself, for the floor it keeps.)
    Selects ``min(count, candidates)`` entries. ``guess``: a magnitude near the threshold (speed only).
    """
    return top_k_mask(jnp.abs(weights), count, valid=mask, guess=guess)


def keep_top(mask: jax.Array, scores: jax.Array, count) -> jax.Array:
    """The ``count`` highest-scored entries among the active ones (ties to the lower index): a prune-only
    event with any drop score (DS's last update with its per-sign score, GMP with |w| or importance)."""
    return top_k_mask(scores, count, valid=mask.astype(bool))
