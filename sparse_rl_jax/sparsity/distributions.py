"""Per-layer densities from one global target: uniform, ER (Sokar) and ERK (RLx2, RigL, Graesser).

Outputs are *density trees*: the params' structure with a density at sparse leaves and ``None`` at dense
leaves. Every density may be a traced scalar (runs vmapped over sparsity levels), so ERK's dense-overflow
loop runs a fixed number of iterations in ``jnp`` with no Python branching on values.

``overrides`` maps layer-path suffixes (e.g. ``'dense_0'`` or ``'q1/dense_2'``; the longest match wins)
to fixed densities. Overridden layers keep their density and leave the allocation: for ERK the remaining
layers share ``density * (their total size)`` among themselves, as in RigL's ``custom_sparsity_map``.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from sparse_rl_jax.sparsity.masks import best_match, layer_string

Scalar = Union[float, jax.Array]


def _as_list(tree) -> tuple:
    return (list(tree), True) if isinstance(tree, (list, tuple)) else ([tree], False)


def _with_overrides(structure, overrides: Optional[Mapping[str, Scalar]], fn, params=None):
    """Density tree: ``overrides[match]`` at overridden sparse leaves, ``fn(path, param)`` elsewhere.

    ``param`` is the params leaf when ``params`` is given, else ``None``.
    """
    def leaf(path, sparse, p=None):
        if not sparse:
            return None
        hit = best_match(layer_string(path), overrides)
        return overrides[hit] if hit is not None else fn(path, p)

    if params is None:
        return jax.tree_util.tree_map_with_path(leaf, structure)
    return jax.tree_util.tree_map_with_path(leaf, structure, params)


def erdos_renyi_score(shape) -> float:
    """``(n_in + n_out) / (n_in * n_out)``; for kernels with more dims ``sum(shape) / prod(shape)``."""
    return float(sum(shape)) / float(math.prod(shape))


def uniform_densities(structure, density: Scalar, overrides: Optional[Mapping[str, Scalar]] = None):
    """The same ``density`` at every sparse leaf (overrides apart)."""
    return _with_overrides(structure, overrides, lambda path, p: density)


def er_densities(params, structure, lambdas: Union[Scalar, Mapping[str, Scalar]],
                 overrides: Optional[Mapping[str, Scalar]] = None):
    """ER (Sokar): ``min(1, lambda_l * (n_in + n_out) / (n_in * n_out))``.

    ``lambdas`` is one value or a mapping from layer-path suffix to lambda, e.g. DS-TD3 on HalfCheetah
    ``{'dense_0': 7, 'dense_1': 64}``. The global density follows from the lambdas.
    """
    def lam(path):
        if not isinstance(lambdas, Mapping):
            return lambdas
        hit = best_match(layer_string(path), lambdas)
        if hit is None:
            raise ValueError(f"no ER lambda for sparse layer {layer_string(path)!r}")
        return lambdas[hit]

    def density(path, p):
        return jnp.minimum(1.0, jnp.asarray(lam(path), jnp.float32) * erdos_renyi_score(p.shape))

    return _with_overrides(structure, overrides, density, params)


@jax.jit
def erk_solve(sizes: jax.Array, raw: jax.Array, density: Scalar) -> jax.Array:
    """ERK densities for layers of ``sizes`` with raw scores ``raw`` sharing one epsilon.

    ``eps`` makes ``sum(d_l * n_l) = density * sum(n_l)`` with ``d_l = eps * raw_l``; layers with
    ``d_l > 1`` become dense and ``eps`` is re-solved for the rest. A layer overflowing at some ``eps``
    overflows at every later (larger) one, so marking all overflowing layers at once and iterating
    ``len(sizes)`` times reaches the fixed point; the loop is unrolled in ``jnp`` for traced densities.
    Jitted (one compilation per number of layers) so eager callers do not pay op-by-op dispatch.
    """
    sizes = jnp.asarray(sizes, jnp.float32)
    raw = jnp.asarray(raw, jnp.float32)
    budget = jnp.asarray(density, jnp.float32) * jnp.sum(sizes)

    def epsilon(dense):
        left = budget - jnp.sum(jnp.where(dense, sizes, 0.0))
        denom = jnp.sum(jnp.where(dense, 0.0, raw * sizes))
        return jnp.where(denom > 0, left / jnp.where(denom > 0, denom, 1.0), 0.0)

    dense = jnp.zeros(sizes.shape, bool)
    for _ in range(sizes.shape[0]):
        dense = dense | (epsilon(dense) * raw > 1.0)
    return jnp.where(dense, 1.0, jnp.clip(epsilon(dense) * raw, 0.0, 1.0))


def erk_densities(params, structure, density: Scalar,
                  overrides: Optional[Mapping[str, Scalar]] = None):
    """ERK density tree(s); one allocation (one epsilon) over all sparse leaves of all given trees.

    ``params`` / ``structure`` are one tree or equal-length lists of trees (one per network sharing the
    allocation); the result has the same form. RLx2's twin critic is one tree, so q1 and q2 share one
    epsilon; pass actor and critic separately for separate allocations.
    """
    params_list, was_list = _as_list(params)
    structures, _ = _as_list(structure)
    if len(params_list) != len(structures):
        raise ValueError("params and structure lists differ in length")
    slots = [(i, path, p.shape)  # allocated leaves: sparse and not overridden, in flatten order
             for i, (s, ps) in enumerate(zip(structures, params_list))
             for (path, sparse), p in zip(jax.tree_util.tree_flatten_with_path(s)[0], jax.tree.leaves(ps))
             if sparse and best_match(layer_string(path), overrides) is None]
    sizes = np.array([math.prod(s) for _, _, s in slots], np.float32)
    raw = np.array([erdos_renyi_score(s) for _, _, s in slots], np.float32)
    solved = erk_solve(sizes, raw, density) if slots else jnp.zeros((0,))
    lookup = {(i, jax.tree_util.keystr(path)): solved[j] for j, (i, path, _) in enumerate(slots)}
    out = [_with_overrides(structures[i], overrides,
                           lambda path, p, i=i: lookup[(i, jax.tree_util.keystr(path))])
           for i in range(len(structures))]
    return out if was_list else out[0]


def densities_for(params, structure, sparsity: Scalar, distribution: str = "erk",
                  overrides: Optional[Mapping[str, Scalar]] = None,
                  lambdas: Union[None, Scalar, Mapping[str, Scalar]] = None):
    """Density tree for a global ``sparsity`` (= 1 - density) and a distribution name.

    'uniform' and 'erk' use ``sparsity``. 'er' with ``lambdas`` uses them and ignores ``sparsity`` (the
    global sparsity follows from the lambdas); without ``lambdas`` one lambda is solved for
    ``sparsity``, which with clipping at 1 is exactly the ERK allocation. ``params``/``structure`` may
    be lists (ERK: one shared allocation).
    """
    density = 1.0 - jnp.asarray(sparsity, jnp.float32)
    if distribution == "erk" or (distribution == "er" and lambdas is None):
        return erk_densities(params, structure, density, overrides)
    structures, was_list = _as_list(structure)
    params_list, _ = _as_list(params)
    if distribution == "uniform":
        out = [uniform_densities(s, density, overrides) for s in structures]
    elif distribution == "er":
        out = [er_densities(p, s, lambdas, overrides) for p, s in zip(params_list, structures)]
    else:
        raise ValueError(f"unknown distribution {distribution!r}")
    return out if was_list else out[0]
