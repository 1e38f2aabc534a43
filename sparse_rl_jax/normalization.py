"""Running mean/variance of observations, and the normalisation Brax's trainers apply with them.

``RunningStats(count, mean, m2)``: ``count`` observations seen (float32 scalar), their ``mean``
(float32 ``[obs_dim]``) and ``m2``, the sum of squared deviations from the mean (float32 ``[obs_dim]``),
so the population variance is ``m2 / count``. :func:`update` folds in a batch by the parallel formula of
Chan, Golub & LeVeque (exact for any batch size; the result does not depend on how the data was split
into batches, up to float rounding). With ``axis_name`` (data-parallel shards: a named ``vmap`` axis, a
``shard_map`` mesh axis, or a tuple of them) the batch's count, sum and sum of squared deviations are
first combined over that axis with ``jax.lax.psum``, so every shard ends with the same stats: those of
the concatenation of all shards' batches.

What is matched from Brax (``brax/training/acme/running_statistics.py``, as used by Brax's SAC/PPO
trainers with ``normalize_observations=True``):

* ``std = clip(sqrt(m2 / count + std_eps), 1e-6, 1e6)`` with Brax's default ``std_eps = 0``
  (``init_state``) and its ``update`` defaults ``std_min_value=1e-6``, ``std_max_value=1e6``; before any
  data (``count == 0``) ``mean = 0`` and ``std = 1``, so the transform is the identity (Brax initialises
  ``std`` to ones).
* ``normalize(obs) = (obs - mean) / std`` with **no clipping of the result**: Brax's
  ``running_statistics.normalize`` defaults to ``max_abs_value=None`` and its SAC trainer passes
  ``running_statistics.normalize`` as the network's preprocessor without a clip value.
* The update order of Brax's SAC ``get_experience``: act with the current stats, then update them with
  the collected transitions' observations (``transitions.observation``), then learn with the new stats.
  (Brax counts in UInt64; here ``count`` is float32, exact up to 2**24 observations and, since counts
  grow in multiples of the number of parallel envs, far beyond that in practice.)

Everything is pure and jittable; ``None`` stats (normalisation off) are handled by the callers
(``trainer.Trainer.normalize``), not here.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

STD_EPS = 0.0  # Brax running_statistics.init_state default
STD_MIN = 1e-6  # Brax running_statistics.update std_min_value default
STD_MAX = 1e6  # Brax running_statistics.update std_max_value default

AxisName = Optional[Union[str, Sequence[str]]]


@struct.dataclass
class RunningStats:
    count: jax.Array  # float32 scalar: observations seen
    mean: jax.Array  # float32 [obs_dim]
    m2: jax.Array  # float32 [obs_dim]: sum of squared deviations from `mean`


def init(obs_dim: int) -> RunningStats:
    """No data yet: ``normalize`` is the identity."""
    return RunningStats(count=jnp.zeros((), jnp.float32), mean=jnp.zeros((obs_dim,), jnp.float32),
                        m2=jnp.zeros((obs_dim,), jnp.float32))


def _psum(x, axis_name: AxisName):
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def update(stats: RunningStats, batch_obs: jax.Array, axis_name: AxisName = None) -> RunningStats:
    """``stats`` combined with ``batch_obs`` (``[..., obs_dim]``: every leading axis is a batch axis).

    ``axis_name``: combine the batch over these named axes first (two ``psum`` rounds: count and sum,
    then the squared deviations from the combined batch mean), so the result is the same on every
    shard and equals the update with the concatenated batches.
    """
    x = jnp.asarray(batch_obs, jnp.float32).reshape(-1, stats.mean.shape[-1])
    n_b = _psum(jnp.float32(x.shape[0]), axis_name)
    mean_b = _psum(jnp.sum(x, axis=0), axis_name) / jnp.maximum(n_b, 1.0)
    m2_b = _psum(jnp.sum(jnp.square(x - mean_b), axis=0), axis_name)
    n_a = stats.count
    n = n_a + n_b
    delta = mean_b - stats.mean
    frac = n_b / jnp.maximum(n, 1.0)
    return RunningStats(count=n, mean=stats.mean + delta * frac,
                        m2=stats.m2 + m2_b + jnp.square(delta) * n_a * frac)


def variance(stats: RunningStats) -> jax.Array:
    """Population variance ``m2 / count`` (1 before any data)."""
    return jnp.where(stats.count > 0, jnp.maximum(stats.m2, 0.0) / jnp.maximum(stats.count, 1.0), 1.0)


def std(stats: RunningStats) -> jax.Array:
    """The divisor of :func:`normalize`: Brax's ``clip(sqrt(var + std_eps), 1e-6, 1e6)``; 1 before any data."""
    s = jnp.clip(jnp.sqrt(variance(stats) + STD_EPS), STD_MIN, STD_MAX)
    return jnp.where(stats.count > 0, s, 1.0)


def normalize(stats: RunningStats, obs: jax.Array) -> jax.Array:
    """``(obs - mean) / std`` (no clipping of the result, as Brax); ``obs`` ``[..., obs_dim]``."""
    return (obs - stats.mean) / std(stats)


def mean_std(stats: RunningStats) -> Tuple[np.ndarray, np.ndarray]:
    """Host ``(mean, std)`` float32 arrays of exactly the transform :func:`normalize` applies (the
    exported policy's ``obs_mean``/``obs_std``). ``stats`` of one run (no seed axis)."""
    return (np.asarray(stats.mean, np.float32), np.asarray(std(stats), np.float32))


__all__ = ["RunningStats", "STD_EPS", "STD_MAX", "STD_MIN", "init", "mean_std", "normalize", "std",
           "update", "variance"]
