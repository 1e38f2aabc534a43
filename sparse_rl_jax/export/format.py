"""The exported-policy file: a compressed-sparse actor in one ``.npz``, and its writer and reader.

Why a file format of its own: a 95%-sparse actor trained with masks is still stored as dense matrices
plus masks, so a deployment pays for the zeros twice (file and compute). Here each sparse layer is
stored in CSR with the smallest index dtypes that fit, so the file shrinks with the sparsity.

Layout (format version 2; every entry an ``.npy`` member of one zip, deflate-compressed by default):

* ``format_version``: int32 scalar. Read first, so a newer file fails with a version error instead of
  a confusing shape or checksum error.
* ``meta``: UTF-8 JSON (as uint8) with ``format``, ``algo``, ``obs_dim``, ``action_dim``,
  ``output_transform``, ``values_dtype``, ``has_normalizer``, one record per layer
  (``name``, ``in``, ``out``, ``storage`` 'csr'|'dense', ``activation``, ``nnz``, and in version 2
  ``norm`` (bool), ``norm_eps`` and ``skip_from``) and the caller's ``metadata``.
* per layer ``i``: ``layer{i}.bias`` and either CSR (``layer{i}.indptr``, ``layer{i}.indices``,
  ``layer{i}.values``) or ``layer{i}.weight`` (dense). Matrices are stored as **W^T** (rows = output
  units, columns = input units), so one layer is ``y = W^T x + b``, a CSR mat-vec whose inner loop
  reads one output row contiguously. Index arrays use the smallest unsigned dtype holding their
  largest value (uint8 for 256-wide inputs, so a stored weight costs 5 bytes in float32).
* per layer with ``norm`` (version 2): ``layer{i}.norm_scale``, ``layer{i}.norm_bias`` (``[in]``).
* ``obs_mean``, ``obs_std`` (optional): the observation normaliser, applied as ``(obs - mean) / std``.
* ``checksum``: sha256 (32 uint8) over the canonical bytes of every other entry (see :func:`checksum`).

The network is ``h = act_i(W_i^T h + b_i)`` with ``relu`` between layers and ``identity`` on the last,
then the output transform. Version 2 adds what residual bodies (``networks.py``'s simba) need: a layer
with ``norm`` applies a LayerNorm to its input first (``(h - mean) / sqrt(var + eps) * scale + bias``
over the features), and a layer with ``skip_from = j`` adds layer ``j``'s input (before ``j``'s norm)
to its own output. A policy without either is written as version 1, byte for byte what version-1
writers wrote, so older readers keep reading MLP policies. The output transform: ``tanh`` (TD3) or ``tanh_mean`` (SAC: tanh of the mean head; the log-std half
of the output layer is dropped at export because the deterministic policy never reads it).

This module imports only NumPy (no JAX, no SciPy), so it can be copied to a deployment target.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import zipfile
import zlib
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

FORMAT_NAME = "sparse_rl_jax.policy"
FORMAT_VERSION = 2  # the newest version this module reads and writes
READABLE_VERSIONS = (1, 2)
LAYER_NORM_EPS = 1e-6  # flax.linen.LayerNorm's default, the networks' LayerNorms
OUTPUT_TRANSFORMS = ("tanh", "tanh_mean")
# each built-in agent's exported actor: TD3/DDPG a tanh policy; SAC's output layer is [mean | log_std]
# and its deterministic policy tanh(mean). An agent added to `sparse_rl_jax.agents` gets a line here
# (tests/test_export.py checks that every agent has one), or its users pass ``head=``.
HEADS: Dict[str, str] = {"td3": "tanh", "ddpg": "tanh", "sac": "tanh_mean"}
ACTIVATIONS = ("relu", "identity")
VALUE_DTYPES = ("float32", "float16")
_LAYER_RE = re.compile(r"^dense_(\d+)$")
_NORM_RE = re.compile(r"^norm_(\d+)$")


class PolicyFileError(ValueError):
    """Base class: the file cannot be used as an exported policy."""


class CorruptFileError(PolicyFileError):
    """The file is truncated, not a zip/npz archive, or not an exported policy."""


class UnsupportedVersionError(PolicyFileError):
    """The file was written in a format version this reader does not understand."""


class ChecksumError(PolicyFileError):
    """The stored bytes do not match their checksum (bit rot, partial copy, edited arrays)."""


@dataclasses.dataclass(frozen=True)
class Layer:
    """One affine layer ``y = act(W^T x + b)`` in the orientation it is stored (``shape = (out, in)``).

    Sparse layers hold CSR arrays (``indptr``, ``indices``, ``values``) and ``weight=None``; dense
    layers hold ``weight`` (W^T, ``[out, in]``) and no CSR arrays. Values are float32 in memory
    whatever dtype the file stores them in.
    """

    name: str
    shape: Tuple[int, int]
    bias: np.ndarray
    activation: str
    indptr: Optional[np.ndarray] = None
    indices: Optional[np.ndarray] = None
    values: Optional[np.ndarray] = None
    weight: Optional[np.ndarray] = None
    # LayerNorm of the layer's input (``[in]`` each; None: none) and the input of which earlier layer
    # is added to the output (None: none): format version 2
    norm_scale: Optional[np.ndarray] = None
    norm_bias: Optional[np.ndarray] = None
    norm_eps: float = LAYER_NORM_EPS
    skip_from: Optional[int] = None

    @property
    def has_norm(self) -> bool:
        return self.norm_scale is not None

    @property
    def is_sparse(self) -> bool:
        return self.weight is None

    @property
    def nnz(self) -> int:
        """Stored weights (for sparse layers the mask count, explicit zeros inside the mask included)."""
        return int(self.values.size) if self.is_sparse else int(self.weight.size)

    def dense_kernel(self) -> np.ndarray:
        """The layer as a dense Flax kernel ``[in, out]`` (for checks and the dense baselines)."""
        if not self.is_sparse:
            return np.ascontiguousarray(self.weight.T)
        out_dim, in_dim = self.shape
        wt = np.zeros((out_dim, in_dim), np.float32)
        rows = np.repeat(np.arange(out_dim), np.diff(self.indptr.astype(np.int64)))
        wt[rows, self.indices.astype(np.int64)] = self.values
        return np.ascontiguousarray(wt.T)


@dataclasses.dataclass(frozen=True)
class ExportedPolicy:
    """In-memory form of a policy file: what the NumPy and JAX runtimes are built from."""

    algo: str
    layers: Tuple[Layer, ...]
    output_transform: str
    obs_mean: Optional[np.ndarray] = None
    obs_std: Optional[np.ndarray] = None
    values_dtype: str = "float32"
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def obs_dim(self) -> int:
        return self.layers[0].shape[1]

    @property
    def action_dim(self) -> int:
        return self.layers[-1].shape[0]

    @property
    def version(self) -> int:
        """The format version the policy needs: 2 with LayerNorms or skips, else 1."""
        return 2 if any(l.has_norm or l.skip_from is not None for l in self.layers) else 1

    @property
    def saved_inputs(self) -> Tuple[int, ...]:
        """Layers whose input a later layer adds to its output (the runtimes keep those)."""
        return tuple(sorted({l.skip_from for l in self.layers if l.skip_from is not None}))


# ------------------------------------------------------------------------------------- from params
def _unwrap(tree: Any) -> Any:
    """Accept both the Flax variable dict ``{'params': {...}}`` and its inner ``{...}``."""
    if isinstance(tree, Mapping) and set(tree.keys()) == {"params"}:
        return tree["params"]
    return tree


def _layer_names(params: Mapping[str, Any]) -> Tuple[str, ...]:
    """``dense_0 .. dense_{L-1}`` in index order (beside a simba body's ``norm_i``); anything else means
    this is not an actor of `networks.py`."""
    names = [k for k in params if _LAYER_RE.match(k)]
    if not names or len(names) + len(_norm_names(params)) != len(params):
        raise ValueError(f"actor params must hold only dense_0..dense_{{L-1}} layers (and a simba body's "
                         f"norm_0..norm_B), got {sorted(params)}")
    names.sort(key=lambda n: int(_LAYER_RE.match(n).group(1)))
    if [int(_LAYER_RE.match(n).group(1)) for n in names] != list(range(len(names))):
        raise ValueError(f"actor layers must be numbered dense_0..dense_{len(names) - 1}, got {names}")
    return tuple(names)


def _norm_names(params: Mapping[str, Any]) -> Tuple[str, ...]:
    return tuple(sorted((k for k in params if _NORM_RE.match(k)), key=lambda n: int(_NORM_RE.match(n).group(1))))


def _residual_plan(params: Mapping[str, Any], count: int) -> Dict[int, Tuple[Optional[str], Optional[int]]]:
    """Per layer index: (its input's LayerNorm, the layer whose input its output adds), from the names of a
    simba body (`networks.body_layers`): block ``b`` is ``norm_b -> dense_{2b+1} -> ReLU -> dense_{2b+2}
    + skip``, then ``norm_B -> head``. An MLP (no ``norm_i``) has neither anywhere."""
    norms = _norm_names(params)
    if not norms:
        return {}
    blocks = len(norms) - 1
    if [int(_NORM_RE.match(n).group(1)) for n in norms] != list(range(blocks + 1)) or count != 2 * blocks + 2:
        raise ValueError(f"a simba actor of {blocks} blocks has norm_0..norm_{blocks} and dense_0.."
                         f"dense_{2 * blocks + 1}; got {count} dense layers and {list(norms)}")
    plan = {2 * b + 1: (f"norm_{b}", None) for b in range(blocks)}
    plan.update({2 * b + 2: (None, 2 * b + 1) for b in range(blocks)})
    plan[2 * blocks + 1] = (f"norm_{blocks}", None)
    return plan


def _kernel_mask(masks: Any, name: str) -> Optional[np.ndarray]:
    """The layer's kernel mask, or None for a dense layer (masks None, layer missing or leaf None)."""
    if masks is None:
        return None
    layer = masks.get(name)
    if layer is None:
        return None
    if layer.get("bias") is not None:
        raise ValueError(f"{name}: sparse biases are not supported (bias mask must be None)")
    kernel = layer.get("kernel")
    return None if kernel is None else np.asarray(kernel, dtype=bool)


def smallest_uint(max_value: int) -> np.dtype:
    """Smallest unsigned dtype holding ``max_value``: index arrays dominate the file after the values."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def _csr_layer(name: str, kernel: np.ndarray, mask: np.ndarray, bias: np.ndarray,
               activation: str) -> Layer:
    """CSR of W^T restricted to the mask; masked-out entries must already be exactly zero."""
    if mask.shape != kernel.shape:
        raise ValueError(f"{name}: mask shape {mask.shape} != kernel shape {kernel.shape}")
    if np.any(kernel[~mask] != 0):
        raise ValueError(f"{name}: weights are non-zero where the mask is False; the params are not "
                         "masked (stored weights must be exactly zero at inactive positions)")
    mask_t = mask.T
    counts = mask_t.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    _, cols = np.nonzero(mask_t)  # row-major order: sorted by row, then column
    return Layer(name=name, shape=mask_t.shape, bias=bias, activation=activation,
                 indptr=indptr.astype(smallest_uint(int(indptr[-1]))),
                 indices=cols.astype(smallest_uint(max(mask_t.shape[1] - 1, 0))),
                 values=np.ascontiguousarray(kernel.T[mask_t], dtype=np.float32))


def _trim_output(kernel: np.ndarray, bias: np.ndarray, mask: Optional[np.ndarray], head: str):
    """A stochastic actor's output layer is [mean | log_std]; keep the mean half, the deterministic
    policy's only input."""
    if head != "tanh_mean":
        return kernel, bias, mask
    if kernel.shape[1] % 2:
        raise ValueError(f"SAC output layer must have an even width (mean, log_std), got {kernel.shape[1]}")
    half = kernel.shape[1] // 2
    return kernel[:, :half], bias[:half], None if mask is None else mask[:, :half]


def _normalizer_arrays(obs_normalizer: Any) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(mean, std) from a Mapping with 'mean'/'std', an object with those attributes, or a pair."""
    if obs_normalizer is None:
        return None, None
    if isinstance(obs_normalizer, Mapping):
        mean, std = obs_normalizer["mean"], obs_normalizer["std"]
    elif hasattr(obs_normalizer, "mean") and hasattr(obs_normalizer, "std"):
        mean, std = obs_normalizer.mean, obs_normalizer.std
    else:
        mean, std = obs_normalizer
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if np.any(std <= 0) or not np.all(np.isfinite(std)) or not np.all(np.isfinite(mean)):
        raise ValueError("observation normaliser needs finite mean and finite, positive std")
    return mean, std


def actor_to_exported(actor_params: Any, actor_masks: Any, algo: str, obs_normalizer: Any = None,
                      metadata: Optional[Mapping[str, Any]] = None,
                      values_dtype: str = "float32", head: Optional[str] = None) -> ExportedPolicy:
    """Convert a (masked) Flax actor into an :class:`ExportedPolicy` without touching the disk.

    Kernel leaves with a mask become CSR layers holding exactly the mask's entries; kernels whose mask
    is None (or ``actor_masks=None``) stay dense, which is what DST setups with dense input/output
    layers need. ``values_dtype='float16'`` halves the value bytes but costs ~1e-3 relative accuracy.
    """
    head = head or HEADS.get(algo)
    if head not in OUTPUT_TRANSFORMS:
        raise ValueError(f"algo must be one of {sorted(HEADS)} (or head= one of {OUTPUT_TRANSFORMS}), "
                         f"got {algo!r}")
    if values_dtype not in VALUE_DTYPES:
        raise ValueError(f"values_dtype must be one of {VALUE_DTYPES}, got {values_dtype!r}")
    params, masks = _unwrap(actor_params), _unwrap(actor_masks)
    names = _layer_names(params)
    plan = _residual_plan(params, len(names))
    layers = []
    for i, name in enumerate(names):
        kernel = np.asarray(params[name]["kernel"], np.float32)
        bias = np.asarray(params[name]["bias"], np.float32)
        mask = _kernel_mask(masks, name)
        if i == len(names) - 1:
            kernel, bias, mask = _trim_output(kernel, bias, mask, head)
        norm, skip = plan.get(i, (None, None))
        # a simba body's encoder and block outputs are linear: the ReLU sits inside the blocks
        linear = i == len(names) - 1 or bool(plan) and i not in plan or skip is not None
        activation = "identity" if linear else "relu"
        if mask is None:
            layer = Layer(name=name, shape=kernel.T.shape, bias=bias, activation=activation,
                          weight=np.ascontiguousarray(kernel.T))
        else:
            layer = _csr_layer(name, kernel, mask, bias, activation)
        if norm is not None:
            layer = dataclasses.replace(layer, norm_scale=np.asarray(params[norm]["scale"], np.float32),
                                        norm_bias=np.asarray(params[norm]["bias"], np.float32))
        layers.append(dataclasses.replace(layer, skip_from=skip))
    mean, std = _normalizer_arrays(obs_normalizer)
    policy = ExportedPolicy(algo=algo, layers=tuple(layers), output_transform=head,
                            obs_mean=mean, obs_std=std, values_dtype=values_dtype,
                            metadata=dict(metadata or {}))
    _validate(policy)
    return policy


# ------------------------------------------------------------------------------------------ writing
def checksum(arrays: Mapping[str, np.ndarray]) -> bytes:
    """sha256 over the canonical bytes of ``arrays`` (sorted keys; name, dtype, shape, little-endian data).

    Canonical bytes rather than the zip file's bytes, so the checksum does not depend on the zip
    library, compression level or member order, only on what the reader will actually use.
    """
    digest = hashlib.sha256()
    for key in sorted(arrays):
        arr = np.asarray(arrays[key])
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        header = f"{key}\0{arr.dtype.str}\0{arr.shape}\0".encode()
        digest.update(len(header).to_bytes(8, "little") + header)
        digest.update(arr.tobytes())
    return digest.digest()


def _meta(policy: ExportedPolicy) -> Dict[str, Any]:
    return {
        "format": FORMAT_NAME, "algo": policy.algo, "obs_dim": policy.obs_dim,
        "action_dim": policy.action_dim, "output_transform": policy.output_transform,
        "values_dtype": policy.values_dtype, "has_normalizer": policy.obs_mean is not None,
        "layers": [_layer_meta(l, policy.version) for l in policy.layers],
        "metadata": dict(policy.metadata),
    }


def _layer_meta(layer: Layer, version: int) -> Dict[str, Any]:
    meta = {"name": layer.name, "in": layer.shape[1], "out": layer.shape[0],
            "storage": "csr" if layer.is_sparse else "dense", "activation": layer.activation, "nnz": layer.nnz}
    if version >= 2:
        meta.update(norm=layer.has_norm, norm_eps=float(layer.norm_eps), skip_from=layer.skip_from)
    return meta


def _json_default(value: Any) -> Any:
    """NumPy scalars/arrays in user metadata (steps, config values) become plain JSON values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _payload(policy: ExportedPolicy) -> Dict[str, np.ndarray]:
    """Every array entry of the file except the checksum."""
    try:
        meta = json.dumps(_meta(policy), sort_keys=True, default=_json_default).encode()
    except TypeError as err:
        raise ValueError(f"metadata must be JSON-serialisable: {err}") from err
    arrays = {"format_version": np.asarray(policy.version, np.int32),
              "meta": np.frombuffer(meta, np.uint8)}
    for i, layer in enumerate(policy.layers):
        arrays[f"layer{i}.bias"] = layer.bias
        if layer.has_norm:
            arrays[f"layer{i}.norm_scale"], arrays[f"layer{i}.norm_bias"] = layer.norm_scale, layer.norm_bias
        if layer.is_sparse:
            arrays[f"layer{i}.indptr"] = layer.indptr
            arrays[f"layer{i}.indices"] = layer.indices
            arrays[f"layer{i}.values"] = layer.values.astype(policy.values_dtype)
        else:
            arrays[f"layer{i}.weight"] = layer.weight.astype(policy.values_dtype)
    if policy.obs_mean is not None:
        arrays["obs_mean"], arrays["obs_std"] = policy.obs_mean, policy.obs_std
    return arrays


def write_policy(policy: ExportedPolicy, path: str | os.PathLike, compress: bool = True) -> int:
    """Write ``policy`` to ``path`` (exactly that name, no '.npz' appended); returns the file size.

    Written to a temporary name and renamed, so a crash never leaves a half-written file under
    ``path`` that a deployment could pick up.
    """
    arrays = _payload(policy)
    arrays["checksum"] = np.frombuffer(checksum(arrays), np.uint8)
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return os.path.getsize(path)


def export_actor(actor_params: Any, actor_masks: Any, algo: str, path: str | os.PathLike,
                 obs_normalizer: Any = None, metadata: Optional[Mapping[str, Any]] = None,
                 values_dtype: str = "float32", compress: bool = True, head: Optional[str] = None) -> int:
    """Export a trained actor to ``path`` in compressed sparse form; returns the file size in bytes.

    ``actor_params``/``actor_masks`` follow the project's convention (masks: bool at sparse kernels,
    None at dense leaves; ``actor_masks=None`` = all dense). ``algo`` names the agent (its head in `HEADS`:
    'td3'/'ddpg' a tanh policy, 'sac' tanh of the Gaussian mean, its log-std half dropped); ``head``
    gives the output transform directly. ``obs_normalizer``: (mean, std) as a
    Mapping, an object with ``.mean``/``.std`` or a pair, applied as ``(obs - mean) / std``.
    """
    policy = actor_to_exported(actor_params, actor_masks, algo, obs_normalizer, metadata, values_dtype, head)
    return write_policy(policy, path, compress=compress)


# ------------------------------------------------------------------------------------------ reading
def _read_arrays(path: str) -> Dict[str, np.ndarray]:
    """All members of the npz, read eagerly so that zip CRC failures surface here, not at first use.

    The file is opened here so that a missing or unreadable path keeps its own OSError; everything
    that goes wrong after that is a property of the bytes and becomes a :class:`PolicyFileError`.
    """
    with open(path, "rb") as f:
        try:
            npz = np.load(f, allow_pickle=False)
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
            raise CorruptFileError(f"{path}: cannot open as an exported policy (truncated, or not an "
                                   f"npz file): {err}") from err
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise CorruptFileError(f"{path}: not an exported policy (a plain .npy, not an npz archive)")
        with npz:
            return {key: _read_member(path, npz, key) for key in npz.files}


def _read_member(path: str, npz: Any, key: str) -> np.ndarray:
    try:
        return npz[key]
    except (zipfile.BadZipFile, zlib.error) as err:
        raise ChecksumError(f"{path}: member {key!r} is corrupted (zip CRC/deflate check failed: "
                            f"{err})") from err
    except (EOFError, ValueError, OSError) as err:
        raise CorruptFileError(f"{path}: member {key!r} is unreadable (truncated or damaged): "
                               f"{err}") from err


def _check_version(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    if "format_version" not in arrays or "meta" not in arrays:
        raise CorruptFileError(f"{path}: not an exported policy (no format_version/meta entries; "
                               f"found {sorted(arrays)[:8]})")
    version = arrays["format_version"]
    if version.shape != () or version.dtype.kind not in "iu":
        raise CorruptFileError(f"{path}: format_version must be an integer scalar")
    if int(version) not in READABLE_VERSIONS:
        raise UnsupportedVersionError(
            f"{path}: policy file format version {int(version)} is not supported by this reader "
            f"(it reads versions {', '.join(map(str, READABLE_VERSIONS))}); re-export the policy or use a "
            "matching sparse_rl_jax")


def _check_checksum(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    if "checksum" not in arrays:
        raise ChecksumError(f"{path}: no checksum entry")
    payload = {k: v for k, v in arrays.items() if k != "checksum"}
    if arrays["checksum"].tobytes() != checksum(payload):
        raise ChecksumError(f"{path}: checksum mismatch, the file was modified or corrupted")


def _layer_from_arrays(i: int, spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Layer:
    bias = arrays[f"layer{i}.bias"].astype(np.float32)
    common = dict(name=spec["name"], shape=(int(spec["out"]), int(spec["in"])), bias=bias,
                  activation=spec["activation"], skip_from=spec.get("skip_from"),
                  norm_eps=float(spec.get("norm_eps", LAYER_NORM_EPS)))
    if spec.get("norm"):
        common.update(norm_scale=arrays[f"layer{i}.norm_scale"].astype(np.float32),
                      norm_bias=arrays[f"layer{i}.norm_bias"].astype(np.float32))
    if spec["storage"] == "dense":
        return Layer(weight=arrays[f"layer{i}.weight"].astype(np.float32), **common)
    return Layer(indptr=arrays[f"layer{i}.indptr"], indices=arrays[f"layer{i}.indices"],
                 values=arrays[f"layer{i}.values"].astype(np.float32), **common)


def _from_arrays(path: str, arrays: Mapping[str, np.ndarray]) -> ExportedPolicy:
    try:
        meta = json.loads(arrays["meta"].tobytes().decode())
        if meta.get("format") != FORMAT_NAME:
            raise CorruptFileError(f"{path}: not an exported policy (format {meta.get('format')!r})")
        layers = tuple(_layer_from_arrays(i, s, arrays) for i, s in enumerate(meta["layers"]))
        has_norm = meta["has_normalizer"]
        policy = ExportedPolicy(
            algo=meta["algo"], layers=layers, output_transform=meta["output_transform"],
            obs_mean=arrays["obs_mean"] if has_norm else None,
            obs_std=arrays["obs_std"] if has_norm else None,
            values_dtype=meta["values_dtype"], metadata=meta["metadata"])
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, PolicyFileError):
            raise
        raise CorruptFileError(f"{path}: inconsistent policy file ({type(err).__name__}: {err})") from err
    try:
        _validate(policy)
    except ValueError as err:
        raise CorruptFileError(f"{path}: invalid policy: {err}") from err
    return policy


def read_policy(path: str | os.PathLike) -> ExportedPolicy:
    """Read and verify a policy file: container, then version, then checksum, then structure.

    Raises :class:`CorruptFileError` (truncated / not a policy), :class:`UnsupportedVersionError`,
    or :class:`ChecksumError`; all are :class:`PolicyFileError` (a ``ValueError``).
    """
    path = os.fspath(path)
    arrays = _read_arrays(path)
    _check_version(path, arrays)
    _check_checksum(path, arrays)
    return _from_arrays(path, arrays)


# --------------------------------------------------------------------------------------- validation
def _validate_csr(layer: Layer) -> None:
    out_dim, in_dim = layer.shape
    indptr = layer.indptr.astype(np.int64)
    if indptr.shape != (out_dim + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise ValueError(f"{layer.name}: indptr must be non-decreasing, start at 0, length out+1")
    nnz = int(indptr[-1])
    if layer.indices.shape != (nnz,) or layer.values.shape != (nnz,):
        raise ValueError(f"{layer.name}: indices/values must have indptr[-1]={nnz} entries")
    if nnz and int(layer.indices.max()) >= in_dim:
        raise ValueError(f"{layer.name}: column index out of range (in={in_dim})")


def _validate(policy: ExportedPolicy) -> None:
    """Structural checks; the NumPy runtime calls a C kernel that trusts indices, so they must hold."""
    if policy.output_transform not in OUTPUT_TRANSFORMS:
        raise ValueError(f"unknown output transform {policy.output_transform!r}")
    prev = None
    for i, layer in enumerate(policy.layers):
        out_dim, in_dim = layer.shape
        if prev is not None and in_dim != prev:
            raise ValueError(f"{layer.name}: input width {in_dim} != previous output {prev}")
        if layer.has_norm and (layer.norm_scale.shape != (in_dim,) or layer.norm_bias is None
                               or layer.norm_bias.shape != (in_dim,) or not layer.norm_eps > 0):
            raise ValueError(f"{layer.name}: its LayerNorm needs scale and bias of shape ({in_dim},) and eps > 0")
        if layer.skip_from is not None:
            j = layer.skip_from
            if not (isinstance(j, int) and 0 <= j < i) or policy.layers[j].shape[1] != out_dim:
                raise ValueError(f"{layer.name}: skip_from={j!r} must name an earlier layer whose input "
                                 f"width is {out_dim}")
        if layer.activation not in ACTIVATIONS:
            raise ValueError(f"{layer.name}: unknown activation {layer.activation!r}")
        if layer.bias.shape != (out_dim,):
            raise ValueError(f"{layer.name}: bias shape {layer.bias.shape} != ({out_dim},)")
        if layer.is_sparse:
            _validate_csr(layer)
        elif layer.weight.shape != (out_dim, in_dim):
            raise ValueError(f"{layer.name}: weight shape {layer.weight.shape} != {(out_dim, in_dim)}")
        prev = out_dim
    if policy.obs_mean is not None:
        if policy.obs_mean.shape != (policy.obs_dim,) or policy.obs_std.shape != (policy.obs_dim,):
            raise ValueError(f"normaliser mean/std must have shape ({policy.obs_dim},)")


# ---------------------------------------------------------------------------------- size accounting
def size_report(path: str | os.PathLike) -> Dict[str, Any]:
    """Bytes per entry as stored in the zip (compressed), per-layer nnz, and the total file size.

    Used by the tests and the benchmark to show where the bytes go (values vs indices vs overhead).
    """
    path = os.fspath(path)
    with zipfile.ZipFile(path) as zf:
        members = {info.filename.removesuffix(".npy"): info.compress_size for info in zf.infolist()}
    policy = read_policy(path)
    return {"file_bytes": os.path.getsize(path), "member_bytes": members,
            "nnz": {l.name: l.nnz for l in policy.layers},
            "total_nnz": sum(l.nnz for l in policy.layers)}


def dense_checkpoint_bytes(actor_params: Any, path: str | os.PathLike) -> int:
    """Size of the *dense checkpoint* the export is compared against: np.savez (uncompressed) of all
    float32 kernel and bias arrays of the actor, exactly as trained (SAC: including the log-std head).
    """
    params = _unwrap(actor_params)
    arrays = {f"{name}.{leaf}": np.asarray(params[name][leaf], np.float32)
              for name in _layer_names(params) for leaf in ("kernel", "bias")}
    arrays.update({f"{name}.{leaf}": np.asarray(params[name][leaf], np.float32)
                   for name in _norm_names(params) for leaf in ("scale", "bias")})
    path = os.fspath(path)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return os.path.getsize(path)
