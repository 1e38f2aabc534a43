"""Sparse target networks: the two policies of the papers, both jittable.

* RLx2 shares the online masks: after every soft update the target is re-masked with them.
* DS (Sokar et al.) keeps its own target support: after every soft update each sparse layer of the target
  is pruned back to its ``k`` largest |w|, ``k`` = the online layer's non-zero count. This runs after
  *every* soft update, so the exact top-k (:func:`masks.top_k_mask`) only runs when the target actually
  holds more than ``k`` non-zeros; otherwise keeping every non-zero is what the selection would return,
  at the cost of one counting pass. Under the seed ``vmap`` the per-seed test is agreed over
  ``batch_axes`` (any seed over its ``k``: every seed runs the selection, which returns every non-zero
  for the seeds under it), so the skip is a real ``lax.cond`` branch: a batched while loop
  (:func:`masks.run_if`, used without axes) costs about 3x the plain re-mask even when it never runs.

Dense leaves (mask ``None``: biases, dense layers) are returned untouched.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from sparse_rl_jax.sparsity.masks import apply_masks, map_sparse, run_if
from sparse_rl_jax.sparsity.topology import prune_to_count


def remask_target(target_params, masks):
    """RLx2: zero the target's weights outside the shared online masks."""
    return apply_masks(target_params, masks)


def prune_target(target_params, online_masks, batch_axes: Sequence[str] = ()):
    """DS: keep each sparse layer's top-k |w| of the target, k = online active count; returns params.

    Ties go to the lower flat index, so the result is deterministic and has exactly ``k`` non-zeros
    (fewer only if the target itself has fewer). Only non-zero entries are candidates: the result is
    the same, and in the steady state between topology updates (target support = online mask, so at
    most ``k`` non-zeros) the selection is skipped, even under ``vmap`` (see :func:`masks.run_if`).
    """
    def leaf(m, w):
        k = jnp.sum(m, dtype=jnp.int32)
        nonzero = w != 0
        over = jnp.sum(nonzero, dtype=jnp.int32) > k
        if batch_axes:
            over = jax.lax.pmax(over.astype(jnp.int32), tuple(batch_axes)) > 0
            keep = jax.lax.cond(over, lambda: prune_to_count(w, nonzero, k), lambda: nonzero)
        else:
            keep = run_if(over, lambda: prune_to_count(w, nonzero, k), nonzero)
        return jnp.where(keep, w, jnp.zeros((), w.dtype))

    return map_sparse(leaf, online_masks, target_params, keep_dense=True)
