"""n-step TD target parts for RLx2's delayed multi-step targets (TD3 and SAC).

The buffer always samples windows of a static length ``n`` (= the largest n used); ``n_active`` (a traced
int, RLx2: 1 before 300k iterations, 3 after) says how many of them the target uses, so switching costs no
recompilation. Works on any object with ``rewards``, ``terminals``, ``truncated``, ``valid`` ([B, n]) and
``next_obs`` ([B, n, obs_dim]), i.e. ``replay.Window``; extra leading batch dims are fine.

Effective length ``m`` of a window: it ends at the first of
  * a true terminal (inclusive): its reward counts, nothing after it, **no bootstrap**;
  * a time-limit truncation (inclusive): its reward counts, bootstrap from **its** ``next_obs``;
  * position ``n_active - 1``;
  * the last valid position (the newest stored step; see ``replay`` for why windows are truncated there).
Position 0 is always used, so ``1 <= m <= n_active``. With ``s_k = next_obs[k-1]`` (the state reached after
``k`` steps) and fresh actions ``a~_k ~ pi(.|s_k)``:

TD3:  T = sum_{k<m} g^k r_k + g^m (1 - d_{m-1}) min_i Q'_i(s_m, pi'(s_m) + clipped noise)
SAC:  T = sum_{k<m} g^k r_k + sum_{k=1}^{m-1} g^k (-alpha log pi(a~_k|s_k))
          + g^m (1 - d_{m-1}) [min_i Q'_i(s_m, a~_m) - alpha log pi(a~_m|s_m)]

where ``d_{m-1}`` is the terminal flag at the last used position. The intermediate entropy terms are the
soft value's entropy bonus at each state visited inside the window (states before any terminal, so they
are always counted); for m = 1 there are none and T is the usual one-step soft target.
``nstep_parts`` returns the pieces: ``reward_sum``, ``bootstrap_index = m - 1`` (``s_m =
next_obs[m-1]``), ``bootstrap_discount = g^m (1 - d_{m-1})`` and ``entropy_discounts[:, k] = g^k`` for
k = 1..m-1 (0 elsewhere; the term at column k uses the state ``next_obs[k-1]``). Each agent assembles T from them (``reward_sum + bootstrap_discount * value``, plus SAC's entropy terms).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class NStepParts(NamedTuple):
    """Pieces of an n-step target; see the module doc. Shapes for a [B, n] window."""

    reward_sum: jax.Array  # [B] float: sum_{k<m} gamma^k r_k
    bootstrap_index: jax.Array  # [B] int32: m - 1
    bootstrap_discount: jax.Array  # [B] float: gamma^m (1 - terminal[m-1])
    entropy_discounts: jax.Array  # [B, n] float: gamma^k for 1 <= k < m, else 0


def used_positions(window, n_active) -> jax.Array:
    """[B, n] bool: positions inside the effective window (a prefix of length m >= 1)."""
    n = window.rewards.shape[-1]
    k = jnp.arange(n)
    ends = window.terminals.astype(bool) | window.truncated.astype(bool)
    ended_before = (jnp.cumsum(ends, axis=-1) - ends) > 0  # an end at some j < k
    used = window.valid.astype(bool) & ~ended_before & (k < jnp.clip(n_active, 1, n))
    return used.at[..., 0].set(True)


def take_at(values: jax.Array, index: jax.Array) -> jax.Array:
    """``values[b, index[b], ...]`` for values [B, n, ...] and index [B] (e.g. log-probs or Q at s_m)."""
    idx = index.reshape(index.shape + (1,) * (values.ndim - index.ndim))
    return jnp.take_along_axis(values, idx, axis=index.ndim).squeeze(index.ndim)


def gather_bootstrap(window, bootstrap_index: jax.Array) -> jax.Array:
    """The bootstrap state ``s_m = next_obs[m-1]``, [B, obs_dim]."""
    return take_at(window.next_obs, bootstrap_index)


def nstep_parts(window, gamma, n_active) -> NStepParts:
    """Reward sum, bootstrap position and discounts of the n-step target (pure, jittable; all traced)."""
    used = used_positions(window, n_active)
    n = used.shape[-1]
    dtype = window.rewards.dtype if jnp.issubdtype(window.rewards.dtype, jnp.floating) else jnp.float32
    gamma = jnp.asarray(gamma, dtype)
    powers = gamma ** jnp.arange(n, dtype=dtype)  # [n]
    m = jnp.sum(used, axis=-1).astype(jnp.int32)
    reward_sum = jnp.sum(jnp.where(used, powers * window.rewards, 0), axis=-1)
    last_terminal = take_at(window.terminals.astype(bool), m - 1)
    bootstrap_discount = gamma ** m.astype(dtype) * (1 - last_terminal.astype(dtype))
    entropy = jnp.where(used & (jnp.arange(n) >= 1), powers, 0).astype(dtype)
    return NStepParts(reward_sum.astype(dtype), m - 1, bootstrap_discount, entropy)
