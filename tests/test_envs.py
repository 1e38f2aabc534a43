"""Tests for sparse_rl_jax.envs and sparse_rl_jax.evaluation (small episodes, fastest-compiling backend)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_rl_jax import envs, evaluation

BACKEND = "spring"  # fastest compile for inverted_pendulum on CPU (docs/envs.md)
NUM_ENVS = 3
SHORT = 5  # episode length that truncates before the pendulum can fall under zero actions
LONG_STEPS = 60
# Halves XLA's CPU compile time of these short programs; their run time does not matter here.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@functools.lru_cache(maxsize=None)
def _env_and_rollout(episode_length: int, num_steps: int):
    """(env, jitted rollout); reset + ``num_steps`` env_steps compile as ONE program (compile dominates)."""
    env = envs.make_env("inverted_pendulum", BACKEND, episode_length=episode_length, num_envs=NUM_ENVS)

    def rollout(key, action_value):
        state = env.reset(key)
        action = jnp.full((NUM_ENVS, env.action_size), action_value)

        def step(s, _):
            new_state, transition = envs.env_step(env, s, action)
            return new_state, (new_state, transition)

        _, (states, transitions) = jax.lax.scan(step, state, None, length=num_steps)
        return state, states, transitions

    return env, jax.jit(rollout, compiler_options=FAST_COMPILE)


def _rollout(episode_length: int, action_value: float, num_steps: int):
    """(initial state, states[t] after step t (stacked), transitions[t] (stacked)) with a constant action."""
    env, rollout = _env_and_rollout(episode_length, num_steps)
    return jax.device_get(rollout(jax.random.PRNGKey(0), jnp.float32(action_value)))


def _at(tree, t):
    return jax.tree.map(lambda x: x[t], tree)


def test_env_step_shapes_and_sizes():
    env, _ = _env_and_rollout(SHORT, 2 * SHORT)
    assert (env.observation_size, env.action_size, env.num_envs) == (4, 1, NUM_ENVS)
    state, states, trs = _rollout(SHORT, 0.0, 2 * SHORT)
    tr, new_state = _at(trs, 0), _at(states, 0)
    assert isinstance(tr, envs.EnvTransition)
    assert tr.obs.shape == tr.next_obs.shape == new_state.obs.shape == (NUM_ENVS, 4)
    for flag in (tr.reward, tr.terminal, tr.truncated):
        assert flag.shape == (NUM_ENVS,) and flag.dtype == jnp.float32
    np.testing.assert_array_equal(tr.obs, state.obs)
    np.testing.assert_array_equal(tr.next_obs, new_state.obs)  # no reset on the first step


def test_truncation_reports_true_final_obs_and_auto_resets_fresh():
    first, states, trs = _rollout(SHORT, 0.0, 2 * SHORT)
    _, _, long_trs = _rollout(1000, 0.0, LONG_STEPS)  # same key and actions, time limit out of reach
    assert not trs.truncated[: SHORT - 1].any() and not trs.terminal[: SHORT - 1].any()
    end, after = _at(trs, SHORT - 1), _at(states, SHORT - 1)
    np.testing.assert_array_equal(end.truncated, 1.0)
    np.testing.assert_array_equal(end.terminal, 0.0)
    # next_obs is the true final observation (equal to an unlimited run's), not the reset one.
    np.testing.assert_allclose(end.next_obs, long_trs.next_obs[SHORT - 1], rtol=1e-5, atol=1e-7)
    assert not np.allclose(end.next_obs, after.obs)
    # Auto-reset: step counter restarts, the new episode starts from a fresh (not cached) initial state.
    np.testing.assert_array_equal(after.info["steps"], 0.0)
    assert np.abs(after.obs).max() <= 0.01 + 1e-6  # within inverted_pendulum's reset noise
    assert not np.allclose(after.obs, first.obs)
    np.testing.assert_array_equal(trs.obs[SHORT], after.obs)
    np.testing.assert_array_equal(trs.truncated[2 * SHORT - 1], 1.0)


def test_task_termination_is_terminal_not_truncated():
    _, _, trs = _rollout(1000, 1.0, LONG_STEPS)  # full push: the pole falls well before LONG_STEPS
    assert (trs.terminal.sum(0) >= 1).all()
    assert not trs.truncated.any()
    first = int(np.argmax(trs.terminal[:, 0]))
    assert abs(float(trs.next_obs[first, 0, 1])) > 0.2  # the final obs shows the fallen pole


@pytest.mark.parametrize(
    "kwargs, option, allowed",
    [
        (dict(name="no_such_env"), "env name", "inverted_pendulum"),
        (dict(name="halfcheetah", backend="bullet"), "backend", "positional"),
        (dict(name="halfcheetah", num_envs=0), "num_envs", None),
    ],
)
def test_bad_options_raise_value_error(kwargs, option, allowed):
    with pytest.raises(ValueError) as err:
        envs.make_env(**kwargs)
    message = str(err.value)
    assert option in message and repr(list(kwargs.values())[-1]) in message
    if allowed:
        assert "allowed values" in message and allowed in message


def test_evaluate_bad_name_raises():
    with pytest.raises(ValueError, match="allowed values"):
        evaluation.make_evaluator("cartpole", lambda p, o: o)


def test_evaluate_zero_policy_metrics():
    episode_length = 60
    metrics = evaluation.evaluate(
        "inverted_pendulum", lambda obs: jnp.zeros((obs.shape[0], 1)), jax.random.PRNGKey(1),
        num_episodes=4, episode_length=episode_length, backend=BACKEND)
    assert set(metrics) == {"eval/episode_reward", "eval/episode_reward_std", "eval/episode_length"}
    values = {k: float(v) for k, v in metrics.items()}
    assert all(np.isfinite(v) for v in values.values())
    assert 0 < values["eval/episode_length"] <= episode_length
    # inverted_pendulum pays 1 per step, so the return equals the length counted up to the first done.
    assert values["eval/episode_reward"] == pytest.approx(values["eval/episode_length"])
