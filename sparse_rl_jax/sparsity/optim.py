"""Optimizer integration for dynamic sparse training, as composable optax transforms.

Why a wrapper and not a masked forward pass: stored weights are kept exactly 0 where the mask is False and
the forward pass never multiplies by the mask, so the gradients the trainer computes are *dense* (RigL and
importance growth need them). The mask is applied to the optimizer instead:

* gradients are zeroed at inactive positions *before* the inner transform, so Adam's moments of inactive
  weights only ever decay and never accumulate the dense gradient (a connection that is regrown later does
  not inherit a stale moment built while it was absent);
* the resulting updates are masked too, because a just-dropped weight still has decaying non-zero moments
  and would otherwise move away from 0;
* on a topology-update step RLx2 skips the optimizer step entirely. ``skip`` may be a traced (or vmapped)
  bool, so the step is selected with ``jnp.where`` rather than Python control flow: the update is all
  zeros and the state is returned unchanged (Adam's count does not advance either).

``reset_grown_moments`` zeroes every parameter-shaped tree of an optimizer state (Adam ``mu``/``nu``,
momentum ``trace``, ...) at newly grown positions (jaxpruner does this; RLx2's code does not, so it is an
option of the agents, not a default). Masks follow the package convention: the params' structure with a
bool array at sparse leaves and ``None`` at dense leaves; ``masks=None`` means fully dense.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax


def _is_none(x: Any) -> bool:
    return x is None


def mask_tree(tree: Any, masks: Any) -> Any:
    """Zero ``tree`` where the mask is False; dense leaves (mask ``None``) pass through unchanged."""
    if masks is None:
        return tree

    def leaf(mask, value):
        if mask is None:
            return value
        return jnp.where(mask, value, jnp.zeros_like(value))

    return jax.tree.map(leaf, masks, tree, is_leaf=_is_none)


def grown_mask(old_masks: Any, new_masks: Any) -> Any:
    """Positions active in ``new_masks`` but not in ``old_masks`` (``None`` kept at dense leaves)."""

    def leaf(old, new):
        return None if old is None else jnp.logical_and(new, jnp.logical_not(old))

    return jax.tree.map(leaf, old_masks, new_masks, is_leaf=_is_none)


def _select_tree(pred: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Leafwise ``jnp.where(pred, a, b)``: a jittable, vmappable ``if`` over whole pytrees."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def scale_by_learning_rate_arg() -> optax.GradientTransformationExtraArgs:
    """``optax.scale_by_learning_rate`` with the rate given to each update (``learning_rate=``, which may
    be traced: a per-seed leaf) instead of fixed when the transform is built; the same arithmetic
    (``-1 * rate * g``) and the same empty state."""

    def update_fn(updates, state, params=None, *, learning_rate, **extra_args):
        del params, extra_args
        step_size = -1 * learning_rate
        return jax.tree.map(lambda g: step_size * g, updates), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def adam(**adam_args) -> optax.GradientTransformationExtraArgs:
    """``optax.adam`` whose learning rate is an argument of each update (`scale_by_learning_rate_arg`)."""
    return optax.chain(optax.scale_by_adam(**adam_args), scale_by_learning_rate_arg())


def masked_optimizer(inner: optax.GradientTransformation, mask_gradients: bool = True
                     ) -> optax.GradientTransformationExtraArgs:
    """Wrap ``inner`` so that gradients and updates are masked and a step can be skipped.

    ``mask_gradients=False`` hands ``inner`` the dense gradients (DS's code: torch Adam sees them all and
    the weights are re-masked after the step), so moments of absent connections accumulate; the
    updates are still masked.

    The state is exactly ``inner``'s state (no wrapper node), so ``optax.tree_utils`` helpers and
    checkpoints see the familiar structure. ``update(grads, state, params=None, *, masks, skip=False,
    **extra_args)``: ``masks`` is the mask tree (or ``None`` for dense), ``skip`` a Python or traced bool;
    other keyword arguments are forwarded to ``inner`` (e.g. ``value`` for line-search optimizers).
    """
    inner = optax.with_extra_args_support(inner)

    def update_fn(grads, state, params=None, *, masks, skip=False, **extra_args):
        grads = mask_tree(grads, masks) if mask_gradients else grads
        updates, new_state = inner.update(grads, state, params, **extra_args)
        updates = mask_tree(updates, masks)
        if skip is False:  # static fast path: no select ops in the compiled step
            return updates, new_state
        skip = jnp.asarray(skip, dtype=bool)
        zeros = jax.tree.map(jnp.zeros_like, updates)
        return _select_tree(skip, zeros, updates), _select_tree(skip, state, new_state)

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def _zero_where(value: Any, grown: Optional[jax.Array]) -> Any:
    if grown is None:
        return value
    return jnp.where(grown, jnp.zeros_like(value), value)


def _param_like(node: Any, ref_def: Any, ref_shapes: list) -> bool:
    """True if ``node`` has the params' tree structure and the sparse leaves' shapes."""
    if node is None:
        return False
    leaves, treedef = jax.tree.flatten(node)
    if treedef != ref_def:
        return False
    return all(s is None or getattr(l, "shape", None) == s for l, s in zip(leaves, ref_shapes))


def _reset_by_structure(opt_state: Any, grown: Any) -> Any:
    """Fallback without the optimizer: find parameter-shaped subtrees of the state by structure."""
    ref = jax.tree.map(lambda g: 0, grown, is_leaf=_is_none)
    ref_def = jax.tree.structure(ref)
    ref_shapes = [None if g is None else g.shape for g in jax.tree.leaves(grown, is_leaf=_is_none)]

    def is_param_tree(node):
        return _param_like(node, ref_def, ref_shapes)

    def visit(node):
        if is_param_tree(node):
            return jax.tree.map(_zero_where, node, grown)
        return node

    return jax.tree.map(visit, opt_state, is_leaf=is_param_tree)


def reset_grown_moments(opt_state: Any, grown: Any,
                        optimizer: Optional[optax.GradientTransformation] = None) -> Any:
    """Zero every parameter-shaped tree in ``opt_state`` (Adam mu/nu, momentum trace...) where ``grown``.

    Why: a regrown connection starts at weight 0 (or its old value) and should start with fresh moments,
    not with second-moment estimates that would shrink its first steps. ``grown`` is a mask tree (True =
    newly grown, ``None`` at dense leaves), e.g. ``grown_mask(old_masks, new_masks)``.

    With ``optimizer`` (the transform that made the state; the masked wrapper or its inner one, both have
    the same state) the parameter trees are located exactly with ``optax.tree_utils.tree_map_params``.
    Without it they are found by structure: any subtree with the params' tree structure and kernel shapes.
    Non-parameter fields (counts, schedule states) are never touched. Jittable and vmappable.
    """
    if optimizer is not None:
        return optax.tree_utils.tree_map_params(optimizer, _zero_where, opt_state, grown)
    return _reset_by_structure(opt_state, grown)
