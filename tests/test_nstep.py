"""n-step target parts vs hand-computed and loop-based NumPy references (TD3 and SAC soft targets)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_rl_jax import replay
from sparse_rl_jax.nstep import nstep_parts, gather_bootstrap, take_at

N = 4


def assemble(parts, bootstrap_value, next_log_probs=None, alpha=0.0):
    """T from the parts, as the agents assemble it (td3/ddpg: the first two terms; sac: with the entropy
    bonus of every intermediate state, column k of ``entropy_discounts`` pairing with log-prob k-1)."""
    target = parts.reward_sum + parts.bootstrap_discount * bootstrap_value
    if next_log_probs is not None:
        shifted = jnp.concatenate([jnp.zeros_like(next_log_probs[..., :1]), next_log_probs[..., :-1]], axis=-1)
        target = target + jnp.sum(parts.entropy_discounts * (-alpha * shifted), axis=-1)
    return target


# Jitted once per shape (compiling dominates the runtime of these tests); n_active traced.
parts_fn = jax.jit(nstep_parts)
target_fn = jax.jit(assemble)


def make_window(rewards, terminals, truncated, valid, obs_dim=2):
    """Window whose next_obs[b, k] = (b, k) so a gathered bootstrap state reveals its position."""
    b, n = np.shape(rewards)
    next_obs = np.stack(np.meshgrid(np.arange(b), np.arange(n), indexing="ij"), -1).astype(np.float32)
    next_obs = np.concatenate([next_obs, np.zeros((b, n, obs_dim - 2), np.float32)], -1)
    return replay.Window(
        obs=jnp.zeros((b, obs_dim)), action=jnp.zeros((b, 1)), rewards=jnp.asarray(rewards, jnp.float32),
        terminals=jnp.asarray(terminals, bool), truncated=jnp.asarray(truncated, bool),
        next_obs=jnp.asarray(next_obs), valid=jnp.asarray(valid, bool))


def reference_target(r, term, trunc, valid, gamma, n_active, q, logp, alpha):
    """Loop over one window, straight from the rules: returns (T, m)."""
    total, m = 0.0, 0
    for k in range(n_active):
        if not valid[k]:
            break
        if k >= 1:  # entropy bonus at s_k = next_obs[k-1] (reached only if the episode went on)
            total += gamma**k * (-alpha * logp[k - 1])
        total += gamma**k * r[k]
        m = k + 1
        if term[k] or trunc[k]:
            break
    if not term[m - 1]:
        total += gamma**m * (q[m - 1] - alpha * logp[m - 1])
    return total, m


# Rows: no end | terminal at 1 | truncation at 2 | terminal at 0 | truncation at 0 | newest step after 2 |
#       terminal and truncation together at 1 | terminal at 3
REWARDS = np.array([[1.0, 2.0, 3.0, 4.0]] * 8) + np.arange(8)[:, None] * 10
TERM = np.zeros((8, N), bool)
TRUNC = np.zeros((8, N), bool)
VALID = np.ones((8, N), bool)
TERM[1, 1] = TERM[3, 0] = TERM[6, 1] = TERM[7, 3] = True
TRUNC[2, 2] = TRUNC[4, 0] = TRUNC[6, 1] = True
VALID[5, 2:] = False


def test_hand_computed_td3_targets():
    """gamma = 0.5, Q(s) = 100 everywhere: every number below is worked out by hand."""
    w = make_window(REWARDS, TERM, TRUNC, VALID)
    parts = parts_fn(w, 0.5, jnp.int32(3))
    expected = [
        1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 100,  # 3 steps, bootstrap from s_3
        11 + 0.5 * 12,  # terminal at 1: no bootstrap
        21 + 0.5 * 22 + 0.25 * 23 + 0.125 * 100,  # truncation at 2 = n_active - 1: bootstrap from next_obs[2]
        31,  # terminal at 0: one reward
        41 + 0.5 * 100,  # truncation at 0: one-step bootstrap from next_obs[0]
        51 + 0.5 * 52 + 0.25 * 100,  # only 2 steps stored: bootstrap from next_obs[1]
    ]
    np.testing.assert_allclose(target_fn(parts, jnp.full(8, 100.0))[:6], expected, rtol=1e-6)
    np.testing.assert_array_equal(parts.bootstrap_index[:6], [2, 1, 2, 0, 0, 1])
    np.testing.assert_allclose(parts.bootstrap_discount[:6], [0.125, 0, 0.125, 0, 0.5, 0.25])
    np.testing.assert_array_equal(gather_bootstrap(w, parts.bootstrap_index)[:6, 1], [2, 1, 2, 0, 0, 1])


def test_hand_computed_sac_target_with_terminal_and_truncation():
    """gamma = 0.5, alpha = 2, log pi at next_obs[j] = j + 1, Q = 100."""
    w = make_window(REWARDS, TERM, TRUNC, VALID)
    parts = parts_fn(w, 0.5, jnp.int32(4))
    logp = jnp.tile(jnp.arange(1.0, N + 1), (8, 1))
    boot = 100.0 - 2.0 * take_at(logp, parts.bootstrap_index)
    expected = [
        1 + 0.5 * (2 - 2 * 1) + 0.25 * (3 - 2 * 2) + 0.125 * (4 - 2 * 3) + 0.0625 * (100 - 2 * 4),
        11 + 0.5 * (12 - 2 * 1),  # terminal at 1: entropy at s_1 counts, nothing after
        21 + 0.5 * (22 - 2 * 1) + 0.25 * (23 - 2 * 2) + 0.125 * (100 - 2 * 3),  # truncation at 2
    ]
    np.testing.assert_allclose(target_fn(parts, boot, logp, 2.0)[:3], expected, rtol=1e-6)
    np.testing.assert_allclose(parts.entropy_discounts[:3],
                               [[0, 0.5, 0.25, 0.125], [0, 0.5, 0, 0], [0, 0.5, 0.25, 0]])


@pytest.mark.parametrize("n_active", [1, 2, 3, 4])
def test_matches_loop_reference(n_active):
    rng = np.random.default_rng(n_active)
    b, gamma, alpha = 256, 0.9, 0.3
    rewards = rng.normal(size=(b, N))
    term, trunc = rng.random((b, N)) < 0.15, rng.random((b, N)) < 0.15
    valid = np.arange(N) < rng.integers(1, N + 1, size=(b, 1))
    term, trunc = term & valid, trunc & valid
    rewards = np.where(valid, rewards, 0.0)
    q, logp = rng.normal(size=(b, N)) * 10, rng.normal(size=(b, N))
    w = make_window(rewards, term, trunc, valid)
    parts = parts_fn(w, gamma, jnp.int32(n_active))
    idx = np.asarray(parts.bootstrap_index)
    rows = np.arange(b)
    sac = target_fn(parts, jnp.asarray(q[rows, idx] - alpha * logp[rows, idx]), jnp.asarray(logp), alpha)
    td3 = target_fn(parts, jnp.asarray(q[rows, idx]))
    ref = [reference_target(rewards[i], term[i], trunc[i], valid[i], gamma, n_active, q[i], logp[i], alpha)
           for i in range(b)]
    ref_td3 = [reference_target(rewards[i], term[i], trunc[i], valid[i], gamma, n_active, q[i], logp[i], 0.0)[0]
               for i in range(b)]
    np.testing.assert_array_equal(idx, [m - 1 for _, m in ref])
    np.testing.assert_allclose(sac, [t for t, _ in ref], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(td3, ref_td3, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(parts.entropy_discounts)[:, 0] == 0)


def test_n_active_one_is_the_one_step_target():
    w = make_window(REWARDS, TERM, TRUNC, VALID)
    parts = parts_fn(w, 0.99, jnp.int32(1))
    q = jnp.arange(8.0) * 3
    np.testing.assert_allclose(target_fn(parts, q), REWARDS[:, 0] + 0.99 * (1 - TERM[:, 0]) * q, rtol=1e-6)
    np.testing.assert_array_equal(gather_bootstrap(w, parts.bootstrap_index), w.next_obs[:, 0])
    assert not np.any(parts.entropy_discounts)


def test_n_active_is_traced_one_compile():
    w = make_window(REWARDS, TERM, TRUNC, VALID)
    traces = []

    def parts(window, n_active):
        traces.append(None)  # runs once per trace
        return nstep_parts(window, 0.99, n_active)

    f = jax.jit(parts)
    one, two, three = f(w, jnp.int32(1)), f(w, jnp.int32(2)), f(w, jnp.int32(3))
    assert len(traces) == 1
    # Rows (see REWARDS): no end | terminal at 1 | truncation at 2 | terminal at 0 | truncation at 0 |
    # newest step after 2 | terminal and truncation at 1 | terminal at 3. One step always ends at index 0;
    # the rows whose episode goes on (0, 2, 7) bootstrap from n_active - 1, the others where they end.
    np.testing.assert_array_equal(one.bootstrap_index, [0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(two.bootstrap_index, [1, 1, 1, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(three.bootstrap_index, [2, 1, 2, 0, 0, 1, 1, 2])
    np.testing.assert_allclose(one.bootstrap_discount, 0.99 * (1 - TERM[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(three.bootstrap_discount, [0.99**3, 0, 0.99**3, 0, 0.99, 0.99**2, 0, 0.99**3],
                               rtol=1e-6)


def test_targets_from_the_buffer_match_the_raw_streams():
    """Episodes with terminals and truncations inside a wrapped buffer: targets vs the raw per-env stream."""
    rng = np.random.default_rng(7)
    num_envs, steps, n, gamma = 3, 30, 3, 0.9
    rewards = rng.normal(size=(steps, num_envs)).astype(np.float32)
    term, trunc = rng.random((steps, num_envs)) < 0.15, rng.random((steps, num_envs)) < 0.15
    state = replay.init(replay.example_transition(2, 1), num_envs=num_envs, max_transitions=8 * num_envs)
    insert = jax.jit(replay.insert)
    for t in range(steps):
        obs = np.stack([np.full(num_envs, t), np.arange(num_envs)], -1).astype(np.float32)
        state = insert(state, replay.Transition(obs, obs[:, :1], rewards[t], obs, term[t], trunc[t], obs[:, :1]))
    w = jax.jit(replay.sample_windows, static_argnums=(2, 3))(state, jax.random.key(0), 64, n)
    parts = parts_fn(w, gamma, jnp.int32(n))
    q_of_time = np.arange(steps) * 0.5  # fake Q(s) = 0.5 * time of the transition whose next_obs it is
    boot_time = np.asarray(gather_bootstrap(w, parts.bootstrap_index))[:, 0].astype(int)
    target = np.asarray(target_fn(parts, jnp.asarray(q_of_time[boot_time])))
    expected, ends = [], set()
    for t0, e in np.asarray(w.obs).astype(int):
        total, m = 0.0, 0
        for k in range(n):
            if t0 + k >= steps:
                break
            total += gamma**k * rewards[t0 + k, e]
            m = k + 1
            if term[t0 + k, e] or trunc[t0 + k, e]:
                ends.add(("terminal" if term[t0 + k, e] else "truncated", k))
                break
        if not term[t0 + m - 1, e]:
            total += gamma**m * q_of_time[t0 + m - 1]
        expected.append((total, t0 + m - 1))
    assert {("terminal", 1), ("truncated", 1)} <= ends  # both kinds of episode end inside some window
    np.testing.assert_array_equal(boot_time, [b for _, b in expected])
    np.testing.assert_allclose(target, [t for t, _ in expected], rtol=1e-5, atol=1e-5)
