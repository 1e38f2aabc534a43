"""Deploy small: export a trained sparse actor to a compressed sparse file and run it without JAX.

    from sparse_rl_jax.export import export_actor, load_policy, load_jax_policy
    export_actor(actor_params, actor_masks, "td3", "policy.npz", obs_normalizer=(mean, std))
    policy = load_policy("policy.npz")          # NumPy/SciPy only
    action = policy(obs)                        # obs [obs_dim] or [B, obs_dim]
    jax_policy = load_jax_policy("policy.npz")  # jitted, batched

This package imports only NumPy/SciPy (``jax_policy`` is imported on first use of
:func:`load_jax_policy`), so the ``export/`` directory can be copied to a target without JAX. The
file format is described in :mod:`sparse_rl_jax.export.format` and docs/export.md.
"""
from __future__ import annotations

import os

from .format import (FORMAT_VERSION, ChecksumError, CorruptFileError, ExportedPolicy, Layer,
                     PolicyFileError, UnsupportedVersionError, actor_to_exported,
                     dense_checkpoint_bytes, export_actor, read_policy, size_report, write_policy)
from .numpy_policy import NumpyPolicy, dense_numpy_actor, load_policy


def load_jax_policy(path: str | os.PathLike, kernel: str = "gather", min_sparse_width: int = 32):
    """Jitted JAX runtime of an exported policy (imports JAX lazily; see ``jax_policy``)."""
    from .jax_policy import load_jax_policy as _load
    return _load(path, kernel=kernel, min_sparse_width=min_sparse_width)


__all__ = [
    "FORMAT_VERSION", "ChecksumError", "CorruptFileError", "ExportedPolicy", "Layer", "NumpyPolicy",
    "PolicyFileError", "UnsupportedVersionError", "actor_to_exported", "dense_checkpoint_bytes",
    "dense_numpy_actor", "export_actor", "load_jax_policy", "load_policy", "read_policy",
    "size_report", "write_policy",
]
