"""Sparse target networks: the two policies of the papers, both jittable.

* RLx2 shares the online masks: after every soft update the target is re-masked with them.
* DS (Sokar et al.) keeps its own target support: after every soft update each sparse layer of the target
  is pruned back to its ``k`` largest |w|, ``k`` = the online layer's active count. After a topology
  event the target holds a few hundred to a few thousand more non-zeros than ``k`` at every soft update
  (a connection the online network dropped decays by ``1 - tau`` but never reaches 0, and each grown one
  enters at ``tau`` times its online weight), so this exact top-k runs after nearly every soft update.
  It is cheap because the search starts from a guess (:func:`floor_guesses`): the previous prune's
  *floor* (its threshold magnitude, kept by the caller as state: `dst.SparseNet.target_floor`), decayed
  as a dropped connection decays. On a real DS-TD3 chunk that guess brackets the new threshold in ~3
  count passes where a search over all keys takes ~13 (docs/benchmarks.md), and keeping it costs
  nothing where recomputing it (the target's smallest kept magnitude) costs a masked min per layer.
  The guess changes only the pass count: the result is the exact top-k.

Dense leaves (mask ``None``: biases, dense layers) are returned untouched.
"""
from __future__ import annotations

import jax.numpy as jnp

from sparse_rl_jax.sparsity.masks import apply_masks, map_sparse, top_k_floor


def remask_target(target_params, masks):
    """RLx2: zero the target's weights outside the shared online masks."""
    return apply_masks(target_params, masks)


def floor_guesses(floors, tau):
    """Per sparse leaf, ``(1 - tau)`` times the previous prune's floor (mask-shaped tree of scalars).

    The floor lies between the last weight the previous prune kept and the largest it dropped; if the
    online network does not hold that kept weight (the usual case for a small one after an event) the
    soft update moves it to exactly ``(1 - tau)`` times its magnitude, so the new ``k``-th magnitude is
    close to the guess. A floor of ``-inf`` (nothing was dropped) or 0 (a fresh target) guesses 0.
    """
    return map_sparse(lambda f: (1 - tau) * jnp.maximum(f, 0.0), floors)


def prune_target(target_params, online_masks, counts=None, guesses=None):
    """DS: keep each sparse layer's top-k |w| of the target, k = online active count; returns params.

    Ties go to the lower flat index, so the result is deterministic and has exactly ``k`` non-zeros
    (fewer only if the target itself has fewer); only non-zero entries are candidates. ``counts``
    (mask-shaped, int32 scalars) are the online active counts when the caller holds them (saves a count
    pass per layer); ``guesses`` (mask-shaped magnitudes, :func:`floor_guesses`) speed the search
    without changing its result.
    """
    return prune_target_with_floors(target_params, online_masks, counts, guesses)[0]


def prune_target_with_floors(target_params, online_masks, counts=None, guesses=None):
    """:func:`prune_target` and each sparse leaf's floor (`masks.top_k_floor`: a magnitude at or below
    every kept |w| and at or above every dropped one), mask-shaped: the next prune's guess."""
    if counts is None:
        counts = map_sparse(lambda m: jnp.sum(m, dtype=jnp.int32), online_masks)
    if guesses is None:
        guesses = map_sparse(lambda m: None, online_masks)

    def leaf(m, w, k, g):
        keep, floor = top_k_floor(jnp.abs(w), k, w != 0, guess=g)
        return jnp.where(keep, w, jnp.zeros((), w.dtype)), floor

    pairs = map_sparse(leaf, online_masks, target_params, counts, guesses)
    params = map_sparse(lambda m, w, pair: pair[0], online_masks, target_params, pairs, keep_dense=True)
    floors = map_sparse(lambda m, pair: pair[1], online_masks, pairs)
    return params, floors
