"""Drop and grow scores. A scorer is any function ``LeafInputs -> scores`` (same shape as the weight).

Convention: higher = keep (drop removes the *lowest* scores among active entries) and higher = grow
(grow adds the *highest* scores among inactive entries). Methods differ only in their scorers:

    SET / DS:  drop signed_magnitude, grow random        RigL / RLx2: drop magnitude, grow gradient
    +importance: drop importance_drop, grow importance_grow

A user scorer only has to read the fields it needs; fields a method does not provide are ``None``.
Importance (our design after Xu et al.; see ALGORITHMS.md) keeps per-connection moving averages that are
updated every gradient step (elementwise, negligible cost) because one mini-batch gradient is a very noisy
signal in RL (Graesser et al.).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from sparse_rl_jax.sparsity.masks import leaf_keys, map_sparse


class LeafInputs(NamedTuple):
    """Everything a scorer may look at for one sparse leaf (unused fields may be ``None``).

    weight: stored (masked) weights; mask: bool active set; grad: dense gradient w.r.t. the stored
    weights (RigL growth needs it dense); saliency / grad_ema: :class:`ImportanceState` leaves;
    key: a PRNG key private to this leaf and this call.
    """
    weight: jax.Array
    mask: jax.Array
    grad: Optional[jax.Array] = None
    saliency: Optional[jax.Array] = None
    grad_ema: Optional[jax.Array] = None
    key: Optional[jax.Array] = None


Scorer = Callable[[LeafInputs], jax.Array]


def magnitude(x: LeafInputs) -> jax.Array:
    """|w|: RigL / RLx2 drop score (and GMP)."""
    return jnp.abs(x.weight)


def signed_magnitude(x: LeafInputs) -> jax.Array:
    """SET / DS drop score: the normalised rank of |w| within its own sign group among active entries.

    SET removes the fraction closest to zero of the positive weights and, separately, of the negative
    weights. Scoring an entry by ``rank / count`` inside its sign group (0 = closest to zero) makes
    "drop the ``k`` lowest" take from both groups in proportion to their sizes, so one exact-count
    selection implements it. Active exact zeros score -1 (dropped first); inactive entries score -1
    too but are never drop candidates. Uses one sort: it runs once per topology period.
    """
    w = jnp.ravel(x.weight)
    active = jnp.ravel(x.mask).astype(bool)
    group = jnp.where(active & (w > 0), 2, jnp.where(active & (w < 0), 1, 0)).astype(jnp.int32)
    n = w.size
    order = jnp.lexsort((jnp.abs(w), group))  # by group, then |w| ascending, then flat index
    position = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    counts = jnp.stack([jnp.sum(group == g, dtype=jnp.int32) for g in range(3)])
    starts = jnp.cumsum(counts) - counts
    rank = (position - starts[group]).astype(jnp.float32)
    score = rank / jnp.maximum(counts[group], 1).astype(jnp.float32)
    return jnp.where(group == 0, -1.0, score).reshape(x.weight.shape)


def random(x: LeafInputs) -> jax.Array:
    """Uniform [0, 1) scores from the leaf's key: SET / DS random growth."""
    return jax.random.uniform(x.key, x.weight.shape)


def gradient(x: LeafInputs) -> jax.Array:
    """|g| of the dense gradient: RigL / RLx2 growth."""
    return jnp.abs(x.grad)


def importance_drop(x: LeafInputs) -> jax.Array:
    """EMA of the first-order saliency |w * g| (loss change if the connection were removed)."""
    return x.saliency


def importance_grow(x: LeafInputs) -> jax.Array:
    """EMA of |g| (loss change per unit weight if the connection were grown)."""
    return x.grad_ema


class ImportanceState(NamedTuple):
    """Running importance per connection: mask-shaped trees (arrays at sparse leaves, None at dense)."""
    saliency: Any
    grad_ema: Any


def init_importance(params, masks) -> ImportanceState:
    """Zero moving averages at every sparse leaf."""
    def zeros(m, p):
        return jnp.zeros(p.shape, p.dtype)

    return ImportanceState(map_sparse(zeros, masks, params), map_sparse(zeros, masks, params))


def update_importance(state: ImportanceState, params, grads, masks, decay) -> ImportanceState:
    """One EMA step with this gradient step's dense grads: ``s <- decay s + (1 - decay) |w g|``.

    Horizon about ``1 / (1 - decay)`` steps (default choice: the topology period). Inactive entries have
    w = 0, so their saliency decays to 0 while their |g| average keeps tracking growth potential.
    A newly grown weight starts at 0 and thus with a small saliency; it earns importance as it trains.
    """
    def ema(old, new):
        return decay * old + (1.0 - decay) * new

    saliency = map_sparse(lambda m, s, w, g: ema(s, jnp.abs(w * g)), masks, state.saliency, params,
                          grads)
    grad_ema = map_sparse(lambda m, e, g: ema(e, jnp.abs(g)), masks, state.grad_ema, grads)
    return ImportanceState(saliency, grad_ema)


def score_tree(scorer: Scorer, params, masks, grads=None, importance: Optional[ImportanceState] = None,
               key: Optional[jax.Array] = None):
    """Mask-shaped tree of ``scorer(LeafInputs)`` at sparse leaves (None at dense leaves).

    Each leaf gets its own key split from ``key``; use different keys for the drop and the grow call.
    """
    none = map_sparse(lambda m: None, masks)
    grads = none if grads is None else grads
    saliency, grad_ema = (none, none) if importance is None else importance
    keys = none if key is None else leaf_keys(key, masks)

    def leaf(m, w, g, s, e, k):
        return scorer(LeafInputs(weight=w, mask=m, grad=g, saliency=s, grad_ema=e, key=k))

    return map_sparse(leaf, masks, params, grads, saliency, grad_ema, keys)
