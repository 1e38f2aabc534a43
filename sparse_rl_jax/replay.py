"""Device-resident replay ring with n-step windows and RLx2's dynamic capacity.

Layout. Storage is time-major, ``[capacity, num_envs, ...]``: every ``insert`` writes one time step of all
``num_envs`` vectorised envs into one row. Column ``e`` is therefore env ``e``'s own stream in time order,
so an n-step window is a run of consecutive rows inside one column and never mixes two envs' streams.
Which rows hold data is an explicit window of *time steps*: logical position ``p`` in ``[0, size)`` lives
in row ``(start + p) % capacity`` (``p = 0`` is the oldest step). Insert writes one row at
``(start + size) % capacity`` (O(num_envs), never a roll of the array); when ``size`` has reached
``max_size`` it advances ``start`` instead of growing (FIFO). ``max_size`` is a traced value <= the
static array capacity, so buffers of different allowed sizes can share one compiled program.

Units. Users set sizes in **transitions** (RLx2: TD3 min 1e5 / max 1e6, SAC min 2e5 / max 3e6), because
that is what the papers report whatever ``num_envs`` is. Internally everything is in time steps:
``steps = ceil(transitions / num_envs)`` (so a buffer holds *at least* the requested transitions).
``num_transitions(state)`` reports ``size * num_envs`` for metrics.

Window end (decision). ``sample_windows`` draws the first transition uniformly over *all* stored
(time, env) pairs -- exactly the distribution of ``sample`` -- and *truncates* windows at the newest
stored step: positions past it have ``valid = False``, and ``nstep.nstep_parts`` ends the window at the
last valid position and bootstraps from its ``next_obs`` (a valid target with a shorter horizon).
Why: the sampling distribution does not depend on ``n`` (switching RLx2 from 1-step to 3-step changes
the targets, not which data is replayed), the newest (most on-policy) transitions stay sampleable, and it
works even when fewer than ``n`` steps are stored. Only the newest ``n - 1`` steps per env are affected.
(RLx2's code instead samples only complete windows; the difference is ``(n-1)/size`` of the data.)
Reads are clamped to the newest stored step, so no window ever reads a row outside ``[start,
start + size)``: after wrap-around, after a shrink, or at invalid positions (whose rewards and flags are
zeroed and whose ``next_obs`` repeat the last valid one).

Everything here is a pure, jittable, vmappable function of a ``ReplayState``. Sampling requires
``size >= 1``. n-step target arithmetic lives in ``sparse_rl_jax/nstep.py`` (re-exported here).
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from sparse_rl_jax.nstep import NStepParts, gather_bootstrap, nstep_parts, take_at

__all__ = [
    "Transition", "ReplayState", "Window", "Oldest", "NStepParts", "example_transition", "capacity_steps",
    "init", "insert", "sample", "sample_windows", "oldest", "policy_distance", "shrink_oldest",
    "maybe_shrink", "num_transitions", "nstep_parts", "gather_bootstrap", "take_at",
]


class Transition(NamedTuple):
    """One env step. Leading dims: none (example), ``[num_envs]`` (insert) or ``[B]`` (sample).

    ``terminal``: true termination, no bootstrap. ``truncated``: time limit, bootstrap from ``next_obs``
    (which must be the real final observation, not an auto-reset one). ``policy_action``: the noise-free
    action at collection time (TD3 actor output, SAC tanh(mean), warm-up: the action taken), used by
    RLx2's policy distance.
    """

    obs: jax.Array  # [..., obs_dim]
    action: jax.Array  # [..., action_dim]
    reward: jax.Array  # [...]
    next_obs: jax.Array  # [..., obs_dim]
    terminal: jax.Array  # [...] bool
    truncated: jax.Array  # [...] bool
    policy_action: jax.Array  # [..., action_dim]


class Window(NamedTuple):
    """``n`` consecutive transitions of one env starting at a sampled (time, env) pair.

    ``obs``/``action`` are the first transition's ([B, obs_dim], [B, A]); ``rewards``, ``terminals``,
    ``truncated``, ``valid`` are [B, n]; ``next_obs`` is [B, n, obs_dim]. ``valid[:, 0]`` is always True;
    ``valid[:, k]`` is False past the newest stored step (rewards 0, flags False there).
    """

    obs: jax.Array
    action: jax.Array
    rewards: jax.Array
    terminals: jax.Array
    truncated: jax.Array
    next_obs: jax.Array
    valid: jax.Array


class Oldest(NamedTuple):
    """The oldest ``k`` stored transitions (time-major across envs) for RLx2's policy distance.

    ``obs`` [k, obs_dim], ``policy_action`` [k, A]; ``valid`` [k] is False for slots beyond the stored
    data (only when fewer than ``k`` transitions are stored; those rows repeat stored data).
    """

    obs: jax.Array
    policy_action: jax.Array
    valid: jax.Array


@struct.dataclass
class ReplayState:
    """Ring storage ``data`` (leaves ``[capacity, num_envs, ...]``) and its window, all in time steps.

    ``start``: row of the oldest step; ``size``: stored steps; ``max_size``: allowed steps (<= capacity,
    traced, so ``state.replace(max_size=...)`` changes it without recompiling).
    """

    data: Transition
    start: jax.Array
    size: jax.Array
    max_size: jax.Array

    @property
    def capacity(self) -> int:
        """Static row count (read from the shape; the last two dims of ``reward`` survive vmap)."""
        return self.data.reward.shape[-2]

    @property
    def num_envs(self) -> int:
        return self.data.reward.shape[-1]


def example_transition(obs_dim: int, action_dim: int, dtype=jnp.float32) -> Transition:
    """Zero single-env transition fixing shapes and dtypes (flags stored as bool)."""
    flag = jnp.zeros((), bool)
    return Transition(
        obs=jnp.zeros((obs_dim,), dtype), action=jnp.zeros((action_dim,), dtype), reward=jnp.zeros((), dtype),
        next_obs=jnp.zeros((obs_dim,), dtype), terminal=flag, truncated=flag,
        policy_action=jnp.zeros((action_dim,), dtype),
    )


def capacity_steps(transitions, num_envs: int):
    """Time steps needed to hold ``transitions`` transitions of ``num_envs`` envs (ceil; int or traced)."""
    return (transitions + num_envs - 1) // num_envs


def init(example: Transition, *, num_envs: int, max_transitions: int) -> ReplayState:
    """Empty buffer able to hold ``max_transitions`` transitions (rounded up to whole time steps).

    ``example`` is an *unbatched* single-env transition (see ``example_transition``); its dtypes are the
    storage dtypes. Keyword-only so that a size in time steps cannot be passed by accident.
    """
    steps = int(capacity_steps(int(max_transitions), int(num_envs)))
    if steps < 1:
        raise ValueError(f"max_transitions={max_transitions} must be >= 1")
    data = jax.tree.map(lambda x: jnp.zeros((steps, num_envs, *jnp.shape(x)), jnp.asarray(x).dtype), example)
    zero = jnp.zeros((), jnp.int32)
    return ReplayState(data=Transition(*data), start=zero, size=zero, max_size=jnp.asarray(steps, jnp.int32))


def insert(state: ReplayState, batch: Transition) -> ReplayState:
    """Append one time step (leaves ``[num_envs, ...]``); FIFO once ``size == max_size``. O(num_envs)."""
    if batch.reward.shape != (state.num_envs,):
        raise ValueError(f"insert expects reward of shape ({state.num_envs},), got {batch.reward.shape}")
    row = (state.start + state.size) % state.capacity
    data = jax.tree.map(
        lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, jnp.asarray(x).astype(buf.dtype), row, 0),
        state.data, batch,
    )
    full = state.size >= state.max_size
    start = jnp.where(full, (state.start + 1) % state.capacity, state.start)
    size = jnp.where(full, state.size, state.size + 1)
    return state.replace(data=data, start=start, size=size)


def _rows(state: ReplayState, positions: jax.Array) -> jax.Array:
    """Ring rows of logical positions, clamped to the newest stored step (never outside the window)."""
    positions = jnp.minimum(positions, state.size - 1)
    return (state.start + positions) % state.capacity


def _sample_pairs(state: ReplayState, key: jax.Array, batch_size: int) -> Tuple[jax.Array, jax.Array]:
    """Uniform (position, env) pairs over the ``size * num_envs`` stored transitions."""
    total = jnp.maximum(state.size * state.num_envs, 1)
    flat = jax.random.randint(key, (batch_size,), 0, total, dtype=jnp.int32)
    return flat // state.num_envs, flat % state.num_envs


def sample(state: ReplayState, key: jax.Array, batch_size: int) -> Transition:
    """``batch_size`` transitions (leaves ``[B, ...]``) uniform over stored (time, env) pairs, with replacement."""
    pos, env = _sample_pairs(state, key, batch_size)
    rows = _rows(state, pos)
    return jax.tree.map(lambda x: x[rows, env], state.data)


def sample_windows(state: ReplayState, key: jax.Array, batch_size: int, n: int) -> Window:
    """``batch_size`` windows of static length ``n`` (see module doc for the window-end rule). O(B * n)."""
    pos, env = _sample_pairs(state, key, batch_size)
    positions = pos[:, None] + jnp.arange(n, dtype=jnp.int32)  # [B, n]
    valid = positions < state.size
    rows, cols = _rows(state, positions), env[:, None]
    d = state.data
    rewards = jnp.where(valid, d.reward[rows, cols], 0)
    return Window(
        obs=d.obs[rows[:, 0], env], action=d.action[rows[:, 0], env], rewards=rewards,
        terminals=valid & d.terminal[rows, cols].astype(bool), truncated=valid & d.truncated[rows, cols].astype(bool),
        next_obs=d.next_obs[rows, cols], valid=valid,
    )


def oldest(state: ReplayState, k: int) -> Oldest:
    """The ``k`` oldest transitions: all envs of the oldest step, then the next step, ... (RLx2: k = 8 * batch)."""
    flat = jnp.arange(k, dtype=jnp.int32)
    pos, env = flat // state.num_envs, flat % state.num_envs
    rows = _rows(state, pos)
    return Oldest(obs=state.data.obs[rows, env], policy_action=state.data.policy_action[rows, env],
                  valid=pos < state.size)


def policy_distance(actions_now: jax.Array, stored_actions: jax.Array, action_scale=1.0, valid=None,
                    reduction: str = "mse") -> jax.Array:
    """RLx2's distance between the current policy and the one that collected the oldest data.

    Both action sets are divided by ``action_scale`` (a_max, scalar or [A]). ``reduction="mse"``
    (default, what RLx2's code computes: ``F.mse_loss(pi(s)/a_max, a_stored/a_max) / 2``) is the mean
    over transitions **and action dims** of the squared difference, halved, i.e. mean ||d||^2 / (2 A).
    ``reduction="sq_norm"`` is the mean over transitions of ||d||^2 / 2 (A times larger; the wording in
    ALGORITHMS.md). The 0.2 threshold was tuned with the code's form. ``valid`` [k] excludes rows.
    """
    diff = (actions_now - stored_actions) / action_scale
    per_row = jnp.sum(diff**2, axis=-1) / 2
    if reduction == "mse":
        per_row = per_row / diff.shape[-1]
    elif reduction != "sq_norm":
        raise ValueError(f"unknown reduction {reduction!r}")
    weights = jnp.ones(per_row.shape, per_row.dtype) if valid is None else valid.astype(per_row.dtype)
    return jnp.sum(per_row * weights) / jnp.maximum(jnp.sum(weights), 1)


def _shrunk_size(state: ReplayState, fraction, min_transitions) -> jax.Array:
    """Size after dropping floor(fraction * size) oldest steps, clipped at the minimum, if allowed.

    The 1e-4 slack keeps float32 products like 0.7 * 10 = 6.9999995 from flooring one step short.
    """
    drop = jnp.floor(jnp.asarray(fraction, jnp.float32) * state.size.astype(jnp.float32) + 1e-4).astype(jnp.int32)
    min_steps = capacity_steps(jnp.asarray(min_transitions, jnp.int32), state.num_envs)
    allowed = num_transitions(state) > min_transitions
    return jnp.where(allowed, jnp.clip(state.size - drop, min_steps, state.size), state.size)


def shrink_oldest(state: ReplayState, *, fraction=0.1, min_transitions=100_000) -> ReplayState:
    """Drop the oldest ``floor(fraction * size)`` time steps (RLx2: 10%), but only if the buffer holds
    more than ``min_transitions`` and never below ``ceil(min_transitions / num_envs)`` steps.

    O(1): advances ``start``; rows are overwritten later. All arguments may be traced.
    """
    new_size = _shrunk_size(state, fraction, min_transitions)
    start = (state.start + state.size - new_size) % state.capacity
    return state.replace(start=start, size=new_size)


def maybe_shrink(state: ReplayState, distance: jax.Array, *, threshold=0.2, min_transitions=100_000,
                 fraction=0.1) -> Tuple[ReplayState, jax.Array]:
    """RLx2's periodic check: shrink once if ``distance > threshold`` and ``size > min``.

    Returns ``(state, shrunk)`` with ``shrunk`` a bool scalar (True if rows were dropped). Only scalars
    are selected, so this costs nothing under vmap even when the predicate is batched.
    """
    new = shrink_oldest(state, fraction=fraction, min_transitions=min_transitions)
    do = distance > threshold
    new_state = state.replace(start=jnp.where(do, new.start, state.start), size=jnp.where(do, new.size, state.size))
    return new_state, new_state.size < state.size


def num_transitions(state: ReplayState) -> jax.Array:
    """Stored transitions (``size * num_envs``)."""
    return state.size * state.num_envs

