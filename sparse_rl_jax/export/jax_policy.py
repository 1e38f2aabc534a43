"""Run an exported policy in JAX (jitted, batched): ``load_jax_policy(path)(obs) -> action``.

Kernels (``kernel=``):

* ``'gather'`` (default): each sparse layer in padded-row (ELL) form, ``idx, val: [out, K]`` with ``K``
  the largest row count (padding: index 0, value 0). Activations are feature-major ``[features, B]``,
  so ``h[idx[:, k]]`` gathers whole contiguous rows of the batch and the layer is a sum of ``K``
  row-gathers times per-row weights: no scatter, which XLA handles badly on CPU and GPU alike.
  Narrow layers (``min(in, out) < min_sparse_width``, default 32: the 17-wide input layer and the
  6-wide output layer of a locomotion actor, ~8% of the weights) are densified at load time and run
  as one small dense matmul. Measured on CPU: gathers of 6 or 17 rows are inefficient, and when the
  output layer was a gather XLA fused the whole previous layer into it (recomputing it per gathered
  element; ~3x slower overall, and which networks it hit depended on K). A dense dot is never fused
  that way, so it also pins the hidden activations in memory. ``min_sparse_width=0`` keeps every
  layer sparse.
* ``'bcoo'``: ``jax.experimental.sparse.BCOO`` of W^T times the feature-major activations (XLA lowers
  it to gather + scatter-add).
* ``'dense'``: the exported weights densified at load time (the sparse *file*, dense *compute*), for
  comparison and for accelerators where dense matmuls win at these sizes.

Padding entries contribute ``0 * h[0]``, which is 0 for finite activations (a NaN/inf observation gives
NaN actions, as in the dense actor).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
from jax.experimental import sparse as jsparse

from .format import ExportedPolicy, Layer, read_policy

KERNELS = ("gather", "bcoo", "dense")


def ell_arrays(layer: Layer) -> Tuple[np.ndarray, np.ndarray]:
    """Padded-row (ELL) ``(idx int32 [out, K], val float32 [out, K])`` of a CSR layer (K >= 1)."""
    out_dim, _ = layer.shape
    indptr = layer.indptr.astype(np.int64)
    counts = np.diff(indptr)
    width = max(int(counts.max(initial=0)), 1)
    rows = np.repeat(np.arange(out_dim), counts)
    slots = np.arange(indptr[-1]) - np.repeat(indptr[:-1], counts)
    idx = np.zeros((out_dim, width), np.int32)
    val = np.zeros((out_dim, width), np.float32)
    idx[rows, slots] = layer.indices
    val[rows, slots] = layer.values
    return idx, val


def _gather_matmul(arrays: Dict[str, jax.Array], h: jax.Array, max_unroll: int = 64) -> jax.Array:
    """``W^T h`` for feature-major ``h [in, B]`` as a sum of K row-gathers times per-row weights.

    K is static. Sparse layers (K up to ``max_unroll``) are fully unrolled, which measured fastest on
    CPU; wide rows use a ``fori_loop`` (unroll 8) because unrolling K=256 takes seconds to compile and
    the einsum form ``h[idx] -> [out, K, B]`` materialises a huge intermediate (~50x slower at K=256).
    """
    idx, val = arrays["idx"], arrays["val"]

    def term(k, acc):
        return acc + h.at[idx[:, k]].get(mode="promise_in_bounds") * val[:, k, None]

    acc = jnp.zeros((idx.shape[0], h.shape[1]), h.dtype)
    if idx.shape[1] > max_unroll:
        return lax.fori_loop(0, idx.shape[1], term, acc, unroll=8)
    for k in range(idx.shape[1]):
        acc = term(k, acc)
    return acc


def _bcoo_matmul(arrays: Dict[str, Any], h: jax.Array) -> jax.Array:
    return arrays["bcoo"] @ h


def _dense_matmul(arrays: Dict[str, jax.Array], h: jax.Array) -> jax.Array:
    return arrays["weight"] @ h


_MATMULS = {"gather": _gather_matmul, "bcoo": _bcoo_matmul, "dense": _dense_matmul}


def _bcoo(layer: Layer) -> jsparse.BCOO:
    """BCOO of W^T built from the CSR arrays on the host (sorted, unique: lets XLA skip a sort)."""
    rows = np.repeat(np.arange(layer.shape[0]), np.diff(layer.indptr.astype(np.int64)))
    indices = np.stack([rows, layer.indices.astype(np.int64)], axis=1).astype(np.int32)
    return jsparse.BCOO((jnp.asarray(layer.values), jnp.asarray(indices)), shape=layer.shape,
                        indices_sorted=True, unique_indices=True)


def _layer_arrays(layer: Layer, kernel: str, min_sparse_width: int) -> Tuple[str, Dict[str, Any]]:
    """(matmul kind, device arrays) for one layer; stored-dense layers always use the dense matmul."""
    narrow = kernel == "gather" and min(layer.shape) < min_sparse_width
    if not layer.is_sparse or kernel == "dense" or narrow:
        return "dense", {"weight": jnp.asarray(layer.dense_kernel().T)}
    if kernel == "bcoo":
        return "bcoo", {"bcoo": _bcoo(layer)}
    idx, val = ell_arrays(layer)
    return "gather", {"idx": jnp.asarray(idx), "val": jnp.asarray(val)}


def _layer_norm(h: jax.Array, arrays: Dict[str, jax.Array], eps: float) -> jax.Array:
    """LayerNorm over the features of feature-major ``h [features, B]`` (flax's formula)."""
    mean = jnp.mean(h, axis=0, keepdims=True)
    var = jnp.maximum(jnp.mean(h * h, axis=0, keepdims=True) - mean * mean, 0.0)
    return (h - mean) * lax.rsqrt(var + eps) * arrays["norm_scale"][:, None] + arrays["norm_bias"][:, None]


def _make_forward(kinds: Tuple[str, ...], layers: Tuple[Layer, ...], normalize: bool) -> Callable:
    """Pure forward ``(arrays, obs [B, obs_dim]) -> actions [B, act]``; structure is closed over."""
    relu = tuple(l.activation == "relu" for l in layers)
    norms = tuple(l.norm_eps if l.has_norm else None for l in layers)
    skips = tuple(l.skip_from for l in layers)

    def forward(arrays: Dict[str, Any], obs: jax.Array) -> jax.Array:
        h = obs.astype(jnp.float32).T
        if normalize:
            h = (h - arrays["obs_mean"][:, None]) / arrays["obs_std"][:, None]
        inputs = []
        for kind, act, eps, skip, layer in zip(kinds, relu, norms, skips, arrays["layers"]):
            inputs.append(h)
            if eps is not None:
                h = _layer_norm(h, layer, eps)
            h = _MATMULS[kind](layer, h) + layer["bias"][:, None]
            if act:
                h = jax.nn.relu(h)
            if skip is not None:
                h = h + inputs[skip]
        return jnp.tanh(h).T

    return forward


class JaxPolicy:
    """Jitted deterministic action of an exported actor; ``policy(obs)`` returns a ``jax.Array``.

    ``obs``: ``[obs_dim]`` or ``[B, obs_dim]``; one compilation per batch size. ``policy.apply`` is
    the pure function ``(policy.arrays, obs_batch) -> actions`` for use inside larger jitted code.
    """

    def __init__(self, exported: ExportedPolicy, kernel: str = "gather", min_sparse_width: int = 32):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.exported = exported
        self.obs_dim, self.action_dim = exported.obs_dim, exported.action_dim
        kinds, layers = [], []
        for layer in exported.layers:
            kind, arrays = _layer_arrays(layer, kernel, min_sparse_width)
            arrays["bias"] = jnp.asarray(layer.bias)
            if layer.has_norm:
                arrays["norm_scale"], arrays["norm_bias"] = jnp.asarray(layer.norm_scale), jnp.asarray(layer.norm_bias)
            kinds.append(kind)
            layers.append(arrays)
        self.kinds = tuple(kinds)  # per layer: 'gather' | 'bcoo' | 'dense' (what actually runs)
        self.arrays: Dict[str, Any] = {"layers": layers}
        if exported.obs_mean is not None:
            self.arrays["obs_mean"] = jnp.asarray(exported.obs_mean)
            self.arrays["obs_std"] = jnp.asarray(exported.obs_std)
        self.apply = _make_forward(tuple(kinds), exported.layers, exported.obs_mean is not None)
        self._batch = jax.jit(self.apply)
        # A separate program for one observation, so adding/removing the batch axis is not an extra
        # eager dispatch per call (that would cost more than the sparse layers themselves).
        self._one = jax.jit(lambda arrays, obs: self.apply(arrays, obs[None])[0])

    def __call__(self, obs) -> jax.Array:
        if not isinstance(obs, (np.ndarray, jax.Array)):
            obs = np.asarray(obs, np.float32)
        if obs.shape == (self.obs_dim,):
            return self._one(self.arrays, obs)
        if obs.ndim == 2 and obs.shape[1] == self.obs_dim:
            return self._batch(self.arrays, obs)
        raise ValueError(f"obs must have shape [{self.obs_dim}] or [B, {self.obs_dim}], got {obs.shape}")


def load_jax_policy(path: str | os.PathLike, kernel: str = "gather",
                    min_sparse_width: int = 32) -> JaxPolicy:
    """Read, verify and prepare an exported policy for jitted JAX inference (see module docstring)."""
    return JaxPolicy(read_policy(path), kernel=kernel, min_sparse_width=min_sparse_width)
