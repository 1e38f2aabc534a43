"""Plasticity diagnostics of a network on a batch: dormant neurons, effective rank, feature and weight norms.

The measures the sparse-scaling literature logs (Ma et al., ICML 2025, after Sokar et al., ICML 2023,
and Kumar et al., ICLR 2021), for every backbone of `networks.py`, read from what its bodies sow
(``intermediates``: every ReLU's output as ``activations``, the head's input as ``features``):

* **dormant ratio** (tau = 0.1): a ReLU unit is dormant when its mean absolute activation over the batch,
  divided by the mean of that over its layer's units, is at most tau; the ratio is over every ReLU unit
  of the network (a twin critic: both Qs).
* **srank** (delta = 0.01): the effective rank of the features ``[batch, width]``, the smallest k whose
  k largest singular values sum to at least 1 - delta of their total (a twin critic: the mean over Qs).
* **feature norm**: the mean over the batch of the features' L2 norm (a twin critic: the mean over Qs).
* **weight norm**: the L2 norm of every parameter of the network (kernels, biases, LayerNorms).

The gradient norm, the fifth measure, is an average over a period's updates and comes from the update
itself (`dst.apply_gradients`). Everything here is pure and jit/vmap-able; the trainer computes it at
the end of every evaluation period on a batch drawn from the replay buffer (`trainer.Trainer.diagnose`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import jax
import jax.numpy as jnp

DORMANT_TAU = 0.1
SRANK_DELTA = 0.01
STATE_MEASURES = ("dormant_ratio", "srank", "feature_norm", "weight_norm")  # of a network's parameters
MEASURES = STATE_MEASURES + ("grad_norm",)  # ... and of its updates


def sown(module: Any, params: Any, *inputs: jax.Array) -> Tuple[List[jax.Array], List[jax.Array]]:
    """(every ReLU output, every head input) of ``module`` applied to ``inputs``, in tree order."""
    _, state = module.apply(params, *inputs, mutable=["intermediates"])
    acts, feats = [], []
    for path, leaf in jax.tree_util.tree_leaves_with_path(state["intermediates"]):
        name = next(str(k.key) for k in reversed(path) if isinstance(k, jax.tree_util.DictKey))
        (acts if name == "activations" else feats).append(leaf)
    return acts, feats


def dormant_ratio(activations: List[jax.Array], tau: float = DORMANT_TAU) -> jax.Array:
    """Fraction of the ReLU units (over every layer given) whose normalised score is at most ``tau``."""
    dormant, total = jnp.float32(0.0), 0
    for a in activations:
        score = jnp.mean(jnp.abs(a.reshape(-1, a.shape[-1])), axis=0)
        score = score / jnp.maximum(jnp.mean(score), 1e-9)
        dormant = dormant + jnp.sum(score <= tau)
        total += a.shape[-1]
    return dormant / max(total, 1)


def srank(features: jax.Array, delta: float = SRANK_DELTA) -> jax.Array:
    """Effective rank of ``features [batch, width]`` (Kumar et al.): singular values in decreasing order,
    the smallest k with sum_{i<=k} s_i >= (1 - delta) sum s."""
    s = jnp.linalg.svd(features.reshape(-1, features.shape[-1]).astype(jnp.float32), compute_uv=False)
    total = jnp.sum(s)
    cumulative = jnp.cumsum(s) / jnp.maximum(total, 1e-30)
    # all-zero features (every unit dead) have rank 0
    return jnp.where(total > 0, jnp.sum(cumulative < 1.0 - delta).astype(jnp.float32) + 1.0, 0.0)


def feature_norm(features: jax.Array) -> jax.Array:
    return jnp.mean(jnp.linalg.norm(features.reshape(-1, features.shape[-1]), axis=-1))


def weight_norm(params: Any) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(params)))


def measure(module: Any, params: Any, *inputs: jax.Array) -> Dict[str, jax.Array]:
    """Every measure but the gradient norm for one network on one batch."""
    acts, feats = sown(module, params, *inputs)
    return {
        "dormant_ratio": dormant_ratio(acts),
        "srank": jnp.mean(jnp.stack([srank(f) for f in feats])),
        "feature_norm": jnp.mean(jnp.stack([feature_norm(f) for f in feats])),
        "weight_norm": weight_norm(params),
    }
