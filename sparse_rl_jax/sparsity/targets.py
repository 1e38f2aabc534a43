"""Sparse target networks: the two policies of the papers, both jittable.

* RLx2 shares the online masks: after every soft update the target is re-masked with them.
* DS (Sokar et al.) keeps its own target support: after every soft update each sparse layer of the target
  is pruned back to its ``k`` largest |w|, ``k`` = the online layer's active count. After a topology
  event the target holds a few hundred to a few thousand more non-zeros than ``k`` at every soft update
  (a connection the online network dropped decays by ``1 - tau`` but never reaches 0, and each grown one
  enters at ``tau`` times its online weight), so this exact top-k runs after nearly every soft update.
  It is cheap because the search starts from a guess (:func:`threshold_guesses`): the previous target's
  smallest kept magnitude, decayed as a dropped connection decays. On a real DS-TD3 chunk that guess
  brackets the new threshold in ~3 count passes where a search over all keys takes ~13
  (docs/benchmarks.md). The guess changes only the pass count: the result is the exact top-k.

Dense leaves (mask ``None``: biases, dense layers) are returned untouched.
"""
from __future__ import annotations

import jax.numpy as jnp

from sparse_rl_jax.sparsity.masks import apply_masks, map_sparse, smallest_magnitude
from sparse_rl_jax.sparsity.topology import prune_to_count


def remask_target(target_params, masks):
    """RLx2: zero the target's weights outside the shared online masks."""
    return apply_masks(target_params, masks)


def threshold_guesses(previous_target, masks, tau):
    """Per sparse leaf, ``(1 - tau)`` times the smallest non-zero |w| of the previous (pruned) target.

    That weight is the last one the previous prune kept; if the online network no longer holds it (the
    usual case for a small kept weight after an event) the soft update moves it to exactly this value,
    so the new k-th magnitude is close to it. ``inf`` for a leaf with no non-zero (any guess is exact).
    """
    return map_sparse(lambda m, w: (1 - tau) * smallest_magnitude(w), masks, previous_target)


def prune_target(target_params, online_masks, counts=None, guesses=None):
    """DS: keep each sparse layer's top-k |w| of the target, k = online active count; returns params.

    Ties go to the lower flat index, so the result is deterministic and has exactly ``k`` non-zeros
    (fewer only if the target itself has fewer); only non-zero entries are candidates. ``counts``
    (mask-shaped, int32 scalars) are the online active counts when the caller holds them (saves a count
    pass per layer); ``guesses`` (mask-shaped magnitudes, :func:`threshold_guesses`) speed the search
    without changing its result.
    """
    if counts is None:
        counts = map_sparse(lambda m: jnp.sum(m, dtype=jnp.int32), online_masks)
    if guesses is None:
        guesses = map_sparse(lambda m: None, online_masks)

    def leaf(m, w, k, g):
        keep = prune_to_count(w, w != 0, k, guess=g)
        return jnp.where(keep, w, jnp.zeros((), w.dtype))

    return map_sparse(leaf, online_masks, target_params, counts, guesses, keep_dense=True)
