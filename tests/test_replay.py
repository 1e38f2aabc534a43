"""Tests for the replay ring: wrap-around, window bounds, env columns, RLx2 dynamic capacity, vmap.

Compiling dominates the runtime here, so the tests share a few buffer shapes (mostly 8 steps x 3 envs),
jit every library call once per shape and compare on the host (``jax.device_get``).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sparse_rl_jax import replay

OBS_DIM, ACT_DIM = 2, 1
CAPACITY, ENVS = 8, 3  # the shared shape; max_size varies as a traced value where needed


def step_batch(t, num_envs=ENVS, terminal=None, truncated=None):
    """Transition batch for global time ``t``: obs = next_obs = (t, env), reward = t + 1000 env."""
    env = np.arange(num_envs, dtype=np.float32)
    obs = np.stack([np.full(num_envs, t, np.float32), env], axis=-1)
    zeros = np.zeros(num_envs, bool)
    return replay.Transition(
        obs=obs, action=obs[:, :1] + 0.5, reward=t + 1000.0 * env, next_obs=obs,
        terminal=zeros if terminal is None else terminal, truncated=zeros if truncated is None else truncated,
        policy_action=obs[:, :1] * 0.01,
    )


def make(num_envs=ENVS, max_transitions=CAPACITY * ENVS):
    return replay.init(replay.example_transition(OBS_DIM, ACT_DIM), num_envs=num_envs,
                       max_transitions=max_transitions)


insert = jax.jit(replay.insert)
shrink = jax.jit(lambda s, f, m: replay.shrink_oldest(s, fraction=f, min_transitions=m))
sample = jax.jit(replay.sample, static_argnums=2)
sample_windows = jax.jit(replay.sample_windows, static_argnums=(2, 3))
oldest = jax.jit(replay.oldest, static_argnums=1)


def fill(state, times):
    for t in times:
        state = insert(state, step_batch(t, state.num_envs))
    return state


def windows(state, seed, batch=64, n=3):
    return jax.device_get(sample_windows(state, jax.random.key(seed), batch, n))


def test_sizes_are_transitions_at_the_boundary():
    state = make(max_transitions=22)
    assert state.capacity == 8 and state.num_envs == 3  # ceil(22 / 3) time steps
    assert replay.capacity_steps(22, 3) == 8
    state = fill(state, range(2))
    assert int(replay.num_transitions(state)) == 6
    assert int(state.max_size) * state.num_envs == 24


def test_insert_wraps_around_in_place():
    state = fill(make(), range(11))  # 8 rows, 11 inserts
    assert int(state.start) == 3 and int(state.size) == 8
    data = jax.device_get(state.data)
    # Rows were overwritten in place (no roll): rows 0..2 hold times 8..10, rows 3..7 still hold 3..7.
    np.testing.assert_array_equal(data.obs[:, :, 0], np.repeat([[8], [9], [10], [3], [4], [5], [6], [7]], 3, 1))
    np.testing.assert_array_equal(data.obs[:, :, 1], np.tile(np.arange(3), (8, 1)))
    np.testing.assert_array_equal(data.reward, data.obs[:, :, 0] + 1000 * data.obs[:, :, 1])
    batch = jax.device_get(sample(state, jax.random.key(0), 512))
    pairs = {(int(t), int(e)) for t, e in batch.obs}
    assert pairs == {(t, e) for t in range(3, 11) for e in range(3)}  # all valid pairs, nothing else
    np.testing.assert_array_equal(batch.reward, batch.obs[:, 0] + 1000 * batch.obs[:, 1])


def test_traced_max_size_is_fifo_below_capacity():
    state = fill(make().replace(max_size=jnp.int32(3)), range(5))
    assert int(state.size) == 3
    times = jax.device_get(sample(state, jax.random.key(1), 512)).obs[:, 0]
    assert set(times.tolist()) == {2.0, 3.0, 4.0}


def test_window_at_newest_step_is_truncated_and_stays_inside():
    w = windows(fill(make(), range(11)), seed=2)  # stored times 3..10
    t0 = w.obs[:, 0]
    positions = t0[:, None] + np.arange(3)
    np.testing.assert_array_equal(w.valid, positions <= 10)
    np.testing.assert_array_equal(w.next_obs[..., 0], np.minimum(positions, 10))  # reads clamped to newest
    assert np.all(np.where(w.valid, True, (w.rewards == 0) & ~w.terminals & ~w.truncated))
    assert {9, 10} <= set(t0.astype(int).tolist())  # the newest steps are sampled (truncated windows)


def test_windows_stay_in_one_env_column():
    w = windows(fill(make(), range(23)), seed=3)
    env = w.obs[:, 1]
    np.testing.assert_array_equal(w.next_obs[..., 1], np.broadcast_to(env[:, None], (64, 3)))
    np.testing.assert_array_equal(np.where(w.valid, w.rewards - w.next_obs[..., 0], 1000 * env[:, None]),
                                  np.broadcast_to(1000 * env[:, None], (64, 3)))
    assert set(env.tolist()) == {0, 1, 2}


def expected_size_after_shrink(size, num_envs, fraction, min_transitions):
    if size * num_envs <= min_transitions:
        return size
    min_steps = -(-min_transitions // num_envs)
    return max(size - int(np.floor(fraction * size + 1e-9)), min_steps)


@settings(max_examples=30, deadline=None)
@given(
    num_envs=st.sampled_from([1, ENVS]),
    n=st.sampled_from([1, 3]),
    max_size=st.integers(1, CAPACITY),
    ops=st.lists(st.one_of(st.integers(1, 6), st.tuples(st.sampled_from([0.1, 0.3, 0.5]), st.integers(0, 12))),
                 min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_windows_never_leave_the_valid_window(num_envs, n, max_size, ops, seed):
    """Inserts (int: how many steps) interleaved with shrinks ((fraction, min_transitions)) vs a model."""
    state = make(num_envs, CAPACITY * num_envs).replace(max_size=jnp.int32(max_size))
    stored, t = [], 0  # model: global times currently stored, oldest first
    for i, op in enumerate(ops):
        if isinstance(op, int):
            for _ in range(op):
                state = insert(state, step_batch(t, num_envs))
                stored = (stored + [t])[-max_size:]
                t += 1
        else:
            fraction, min_tr = op
            new = expected_size_after_shrink(len(stored), num_envs, fraction, min_tr)
            state = shrink(state, fraction, min_tr)
            stored = stored[len(stored) - new:]
        assert int(state.size) == len(stored)
        if not stored:
            continue
        w = windows(state, seed + i, n=n)
        t0, env, read_times = w.obs[:, 0], w.obs[:, 1], w.next_obs[..., 0]
        assert set(t0.tolist()) <= set(stored)
        assert set(read_times.ravel().tolist()) <= set(stored)  # every read, valid or not, inside the window
        np.testing.assert_array_equal(w.next_obs[..., 1], np.broadcast_to(env[:, None], read_times.shape))
        expected = t0[:, None] + np.arange(n)
        np.testing.assert_array_equal(w.valid, expected <= stored[-1])
        np.testing.assert_array_equal(np.where(w.valid, read_times, -1), np.where(w.valid, expected, -1))


def stored_steps(num_envs, size):
    """A 128-step buffer claiming ``size`` stored steps (shrinking only moves the window scalars)."""
    return make(num_envs, 128 * num_envs).replace(size=jnp.int32(size))


@pytest.mark.parametrize("size,num_envs,min_tr,expected", [
    (100, 1, 50, 90),  # plain 10%
    (57, 2, 10, 52),  # floor(5.7) = 5 steps
    (100, 2, 200, 100),  # size == min: no shrink
    (100, 2, 190, 95),  # clipped at ceil(190 / 2) = 95 steps
    (9, 1, 0, 9),  # floor(0.9) = 0: nothing to drop
])
def test_shrink_rule(size, num_envs, min_tr, expected):
    new = jax.device_get(shrink(stored_steps(num_envs, size), 0.1, min_tr))
    assert new.size == expected
    assert new.start == size - expected  # the oldest steps were dropped
    assert new.size * num_envs >= min(min_tr, size * num_envs)


def test_shrink_fraction_is_exact_for_inexact_floats():
    assert int(shrink(stored_steps(1, 10), 0.7, 0).size) == 3  # 0.7f * 10 = 6.9999995 must still drop 7


def test_maybe_shrink_only_above_threshold():
    state = stored_steps(2, 20)
    f = jax.jit(lambda s, d, m: replay.maybe_shrink(s, d, threshold=0.2, min_transitions=m, fraction=0.1))
    for distance, expect_size in [(0.1, 20), (0.2, 20), (0.21, 18)]:
        new, shrunk = jax.device_get(f(state, jnp.float32(distance), 10))
        assert new.size == expect_size and shrunk == (expect_size < 20)
    new, shrunk = jax.device_get(f(state, jnp.float32(1.0), 40))  # size == min: never shrinks
    assert new.size == 20 and not shrunk


def test_oldest_across_envs_and_after_wrap():
    old = jax.device_get(oldest(fill(make(), range(11)), 5))  # stored times 3..10
    np.testing.assert_array_equal(old.obs, [[3, 0], [3, 1], [3, 2], [4, 0], [4, 1]])
    np.testing.assert_allclose(old.policy_action[:, 0], old.obs[:, 0] * 0.01)
    assert old.valid.all()
    partial = jax.device_get(oldest(fill(make(), range(1)), 5))
    np.testing.assert_array_equal(partial.valid, [True] * 3 + [False] * 2)
    assert set(partial.obs[:, 0].tolist()) == {0}  # padding repeats stored data


def test_policy_distance_matches_numpy():
    rng = np.random.default_rng(0)
    now, stored = rng.uniform(-2, 2, (16, 3)), rng.uniform(-2, 2, (16, 3))
    scale = np.array([2.0, 2.0, 1.0])
    valid = np.arange(16) < 12
    d = (now - stored) / scale
    mse = np.mean(d[:12] ** 2) / 2  # RLx2 code: F.mse_loss(...) / 2
    sq_norm = np.mean(np.sum(d[:12] ** 2, -1)) / 2
    np.testing.assert_allclose(replay.policy_distance(now, stored, scale, valid), mse, rtol=1e-5)
    np.testing.assert_allclose(replay.policy_distance(now, stored, scale, valid, reduction="sq_norm"), sq_norm,
                               rtol=1e-5)
    np.testing.assert_allclose(replay.policy_distance(now, stored, scale), np.mean(d**2) / 2, rtol=1e-5)


def test_jit_vmap_over_three_buffers():
    b = 16
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *[make() for _ in range(3)])
    v_insert = jax.jit(jax.vmap(replay.insert))
    for t in range(11):
        batch = step_batch(t)
        batch = jax.tree.map(lambda x: np.stack([x, x + 100, x + 200]).astype(x.dtype), batch)
        states = v_insert(states, batch)
    np.testing.assert_array_equal(states.size, [8, 8, 8])
    keys = jax.random.split(jax.random.key(4), 3)
    sample_all = jax.jit(jax.vmap(lambda s, k: replay.sample_windows(s, k, b, 3)))
    w = jax.device_get(sample_all(states, keys))
    assert w.next_obs.shape == (3, b, 3, OBS_DIM)
    np.testing.assert_array_equal(w.obs[:, :, 0] // 100, np.broadcast_to(np.arange(3)[:, None], (3, b)))
    parts = jax.jit(jax.vmap(replay.nstep_parts, in_axes=(0, None, None)))(w, 0.99, 3)
    assert parts.reward_sum.shape == (3, b)
    check = jax.vmap(lambda s, d, m: replay.maybe_shrink(s, d, threshold=0.2, min_transitions=m, fraction=0.5))
    new, shrunk = jax.device_get(jax.jit(check)(states, jnp.array([0.0, 0.5, 0.5]), jnp.array([0, 0, 100])))
    np.testing.assert_array_equal(new.size, [8, 4, 8])
    np.testing.assert_array_equal(shrunk, [False, True, False])
