"""Run an exported policy with NumPy/SciPy alone (no JAX): ``load_policy(path)(obs) -> action``.

Where the time goes at HalfCheetah size (17-256-256-6) is what shaped this module:

* Batch 1 is dominated by per-call Python work, not arithmetic: a 95%-sparse actor has ~3.6k weights,
  a few microseconds of multiply-adds, while the public ``csr_array @ x`` spends several microseconds
  per layer in SciPy's Python dispatch (type/shape checks, result allocation). So every layer's
  mat-vec is bound once, at load time, to SciPy's compiled CSR kernel ``csr_matvec`` (which computes
  ``y += A x`` in place on a copy of the bias), and a call is one loop over three prebuilt closures.
  That kernel lives in the private ``scipy.sparse._sparsetools``; it is probed against the public
  operator at load time and the public operator is used whenever the probe fails (``kernel='scipy'``
  forces it). Index arrays are widened to intp at load time (the kernel measured faster with them).
* Batches run feature-major: activations are ``[features, B]``, so each layer is ``csr @ H`` (SciPy's
  ``csr_matvecs``, whose inner loop is a contiguous axpy over the batch) and nothing is transposed
  between layers.

The hand-written pure-NumPy CSR mat-vec (gather, multiply, ``bincount``) measured slower than SciPy at
every size we tried, see docs/export.md.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Optional

import numpy as np
import scipy.sparse as sp

from .format import ExportedPolicy, Layer, read_policy

KERNELS = ("auto", "sparsetools", "scipy")

# accumulate(h, y) computes y += W^T h for a 1-D h (y already holds the bias).
Accumulate = Callable[[np.ndarray, np.ndarray], None]


def _public_accumulate(matrix) -> Accumulate:
    def accumulate(h: np.ndarray, y: np.ndarray) -> None:
        y += matrix @ h
    return accumulate


def _sparsetools_accumulate(layer: Layer) -> Optional[Accumulate]:
    """``functools.partial`` of SciPy's compiled CSR kernel, or None where it is unavailable."""
    try:
        from scipy.sparse import _sparsetools  # private: guarded and probed, see module docstring
        kernel = _sparsetools.csr_matvec
    except (ImportError, AttributeError):
        return None
    out_dim, in_dim = layer.shape
    return functools.partial(kernel, out_dim, in_dim, layer.indptr.astype(np.intp),
                             layer.indices.astype(np.intp), np.ascontiguousarray(layer.values))


def _probe(fast: Accumulate, reference: Accumulate, layer: Layer) -> bool:
    """True when ``fast`` runs and agrees with the public operator on a random input."""
    rng = np.random.default_rng(0)
    h = rng.standard_normal(layer.shape[1]).astype(np.float32)
    y_fast, y_ref = layer.bias.copy(), layer.bias.copy()
    try:
        fast(h, y_fast)
    except Exception:  # noqa: BLE001 - any failure of a private API means: do not use it
        return False
    reference(h, y_ref)
    return bool(np.allclose(y_fast, y_ref, rtol=1e-5, atol=1e-5))


def _layer_accumulate(layer: Layer, matrix, kernel: str) -> Accumulate:
    """Batch-1 mat-vec for one layer: dense BLAS, SciPy's compiled kernel, or the public operator."""
    public = _public_accumulate(matrix)
    if not layer.is_sparse or kernel == "scipy":
        return public
    fast = _sparsetools_accumulate(layer)
    if fast is not None and _probe(fast, public, layer):
        return fast
    if kernel == "sparsetools":
        raise RuntimeError("kernel='sparsetools' requested but scipy.sparse._sparsetools.csr_matvec "
                           "is unavailable or disagrees with scipy's public CSR product")
    return public


def layer_norm(h: np.ndarray, layer: Layer, axis: int) -> np.ndarray:
    """``layer``'s LayerNorm of its input ``h`` over the features (``axis``), as flax computes it: the
    variance as E[h^2] - E[h]^2, floored at 0."""
    mean = h.mean(axis=axis, keepdims=True)
    var = np.maximum((h * h).mean(axis=axis, keepdims=True) - mean * mean, 0)
    shape = (-1,) if h.ndim == 1 else ((1, -1) if axis == 1 else (-1, 1))
    return ((h - mean) / np.sqrt(var + np.float32(layer.norm_eps)) * layer.norm_scale.reshape(shape)
            + layer.norm_bias.reshape(shape)).astype(np.float32)


def _layer_matrix(layer: Layer):
    """W^T as a SciPy CSR array (sparse layers) or a C-contiguous ndarray (dense layers)."""
    if not layer.is_sparse:
        return np.ascontiguousarray(layer.weight, np.float32)
    return sp.csr_array((layer.values, layer.indices.astype(np.int32), layer.indptr.astype(np.int32)),
                        shape=layer.shape)


class NumpyPolicy:
    """Deterministic action of an exported actor: ``policy(obs)`` with obs ``[obs_dim]`` or ``[B, obs_dim]``.

    Returns float32 actions in [-1, 1], shape ``[action_dim]`` or ``[B, action_dim]``. Observations are
    cast to float32 first, like the JAX actor does with JAX's default 32-bit mode. Thread-safe: calls
    allocate their own outputs and never write to the prebuilt arrays.
    """

    def __init__(self, exported: ExportedPolicy, kernel: str = "auto"):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.exported = exported
        self.obs_dim, self.action_dim = exported.obs_dim, exported.action_dim
        # (mean, std) for one observation and for feature-major batches; None without a normaliser.
        self._norm = (None if exported.obs_mean is None else (exported.obs_mean, exported.obs_std))
        self._norm_t = (None if exported.obs_mean is None
                        else (exported.obs_mean[:, None], exported.obs_std[:, None]))
        layers = exported.layers
        matrices = [_layer_matrix(l) for l in layers]
        relu = [l.activation == "relu" for l in layers]
        biases = [l.bias for l in layers]
        self._single = tuple(zip([_layer_accumulate(l, m, kernel) for l, m in zip(layers, matrices)],
                                 biases, relu, layers))
        self._batched = tuple(zip(matrices, [b[:, None] for b in biases], relu, layers))
        self._saved = frozenset(exported.saved_inputs)  # inputs a later layer's skip adds
        self._zero = np.float32(0)

    @property
    def metadata(self):
        return self.exported.metadata

    def __call__(self, obs) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim == 1 and x.shape[0] == self.obs_dim:
            return self._act_one(x)
        if x.ndim == 2 and x.shape[1] == self.obs_dim:
            return self._act_batch(x)
        raise ValueError(f"obs must have shape [{self.obs_dim}] or [B, {self.obs_dim}], got {x.shape}")

    def _act_one(self, x: np.ndarray) -> np.ndarray:
        """Prebuilt in-place kernels; an MLP's allocation is one bias copy per layer."""
        h = np.ascontiguousarray(x)  # the compiled kernel reads raw memory
        if self._norm is not None:
            h = (h - self._norm[0]) / self._norm[1]
        inputs = {}
        for i, (accumulate, bias, relu, layer) in enumerate(self._single):
            if i in self._saved:
                inputs[i] = h
            if layer.has_norm:
                h = np.ascontiguousarray(layer_norm(h, layer, axis=0))
            y = bias.copy()
            accumulate(h, y)
            if relu:
                np.maximum(y, self._zero, out=y)
            if layer.skip_from is not None:
                y += inputs[layer.skip_from]
            h = y
        return np.tanh(h, out=h)

    def _act_batch(self, x: np.ndarray) -> np.ndarray:
        """Feature-major ``[features, B]`` activations: each layer is one ``csr @ H`` call."""
        h = np.ascontiguousarray(x.T)
        if self._norm_t is not None:
            h = (h - self._norm_t[0]) / self._norm_t[1]
        inputs = {}
        for i, (matrix, bias, relu, layer) in enumerate(self._batched):
            if i in self._saved:
                inputs[i] = h
            if layer.has_norm:
                h = layer_norm(h, layer, axis=0)
            y = matrix @ h
            y += bias
            if relu:
                np.maximum(y, self._zero, out=y)
            if layer.skip_from is not None:
                y += inputs[layer.skip_from]
            h = y
        return np.ascontiguousarray(np.tanh(h, out=h).T)


def load_policy(path: str | os.PathLike, kernel: str = "auto") -> NumpyPolicy:
    """Read, verify (version, checksum, structure) and prepare an exported policy for NumPy inference.

    ``kernel``: 'auto' (SciPy's compiled CSR kernel when it passes the load-time probe, else the public
    operator), 'sparsetools' (require the compiled kernel) or 'scipy' (public ``csr_array @ x`` only).
    """
    return NumpyPolicy(read_policy(path), kernel=kernel)


def dense_numpy_actor(exported: ExportedPolicy) -> Callable[[np.ndarray], np.ndarray]:
    """The plain dense NumPy actor (``x @ W + b``, ReLU, tanh; LayerNorms and skips where the layers have
    them): the benchmark's NumPy baseline.

    Built from the exported layers so both run the same weights; this is the code a deployer would
    write without a sparse format.
    """
    layers = exported.layers
    kernels = tuple(l.dense_kernel() for l in layers)
    mean, std = exported.obs_mean, exported.obs_std

    def act(obs: np.ndarray) -> np.ndarray:
        h = np.asarray(obs, np.float32)
        if mean is not None:
            h = (h - mean) / std
        inputs = []
        for w, layer in zip(kernels, layers):
            inputs.append(h)
            if layer.has_norm:
                h = layer_norm(h, layer, axis=h.ndim - 1)
            h = h @ w + layer.bias
            if layer.activation == "relu":
                h = np.maximum(h, 0)
            if layer.skip_from is not None:
                h = h + inputs[layer.skip_from]
        return np.tanh(h)

    return act
