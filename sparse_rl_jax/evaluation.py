"""Deterministic-policy evaluation: ``num_episodes`` parallel episodes in one jitted ``lax.scan``.

Protocol (docs ALGORITHMS.md): deterministic policy, 10 episodes, full episode length. Episodes run in
parallel as a vmapped batch with **no auto-reset**: each episode's return is the sum of rewards up to and
including its first ``done`` (task termination or the time limit), and its length counts env steps up to
then. Envs that finished keep stepping until the scan ends, but their rewards are masked with ``where``
(not multiplied, so a diverging finished env cannot turn the sum into NaN).

Build the evaluator once and call it with new params: the policy is ``apply_fn(params, obs)`` with
``params`` a traced argument, so the compiled program is reused for every evaluation.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Union

import jax
import jax.numpy as jnp

from sparse_rl_jax import quiet

quiet.import_brax()  # first: Brax's import prints MJX's Warp banners
from brax.envs.base import Env  # noqa: E402
from brax.envs.wrappers import training as brax_training  # noqa: E402

from sparse_rl_jax import envs

Metrics = Dict[str, jax.Array]
ApplyFn = Callable[[Any, jax.Array], jax.Array]


def _base_env(env: Union[str, Env], backend: Optional[str]) -> Env:
    """Unwrapped Brax env from a name or from any (wrapped) env, e.g. one made by ``envs.make_env``."""
    if isinstance(env, str):
        return envs.make_base_env(env, backend)
    return env.unwrapped


def make_evaluator(
    env: Union[str, Env],
    apply_fn: ApplyFn,
    num_episodes: int = 10,
    episode_length: int = 1000,
    action_repeat: Optional[int] = None,
    backend: Optional[str] = None,
    jit: bool = True,
) -> Callable[[Any, jax.Array], Metrics]:
    """Returns ``eval_fn(params, key) -> metrics`` (jitted unless ``jit=False``).

    ``env``: a Brax env name (``backend`` then as in ``envs.make_env``) or an env whose ``unwrapped``
    base env is used (``backend`` ignored). ``action_repeat=None`` takes the env's own
    ``action_repeat`` attribute if it has one (``make_env`` envs do), else 1. ``apply_fn(params, obs)``
    maps a batch ``float32[num_episodes, obs]`` to actions in ``[-1, 1]``.

    Metrics (float32 scalars): ``eval/episode_reward`` (mean return), ``eval/episode_reward_std``,
    ``eval/episode_length`` (mean env steps, <= ``episode_length``). ``jit=False`` gives the pure
    function, to embed in a larger jitted program (e.g. under ``lax.cond`` in the training scan).
    """
    for option, value in (("num_episodes", num_episodes), ("episode_length", episode_length)):
        envs._check_positive_int(option, value)
    if action_repeat is None:
        action_repeat = getattr(env, "action_repeat", 1)
    envs._check_positive_int("action_repeat", action_repeat)
    eval_env = brax_training.EpisodeWrapper(
        brax_training.VmapWrapper(_base_env(env, backend)), episode_length, action_repeat)
    num_steps = -(-episode_length // action_repeat)

    def eval_fn(params: Any, key: jax.Array) -> Metrics:
        state = eval_env.reset(jax.random.split(envs.raw_key(key), num_episodes))
        zeros = jnp.zeros((num_episodes,), jnp.float32)

        def body(carry, _):
            state, ret, length, active = carry
            state = eval_env.step(state, apply_fn(params, state.obs))
            ret = ret + jnp.where(active, state.reward, 0.0)
            length = length + jnp.where(active, float(action_repeat), 0.0)
            return (state, ret, length, active & (state.done == 0)), None

        init = (state, zeros, zeros, jnp.ones((num_episodes,), bool))
        (_, ret, length, _), _ = jax.lax.scan(body, init, None, length=num_steps)
        return {
            "eval/episode_reward": jnp.mean(ret),
            "eval/episode_reward_std": jnp.std(ret),
            "eval/episode_length": jnp.mean(jnp.minimum(length, float(episode_length))),
        }

    return jax.jit(eval_fn) if jit else eval_fn


def evaluate(
    env: Union[str, Env],
    policy_fn: Callable[[jax.Array], jax.Array],
    key: jax.Array,
    num_episodes: int = 10,
    episode_length: int = 1000,
    action_repeat: Optional[int] = None,
    backend: Optional[str] = None,
) -> Metrics:
    """One-off evaluation of ``policy_fn(obs[num_episodes, obs]) -> actions``.

    Compiles on every call; in a training loop use :func:`make_evaluator` once instead.
    """
    eval_fn = make_evaluator(env, lambda _, obs: policy_fn(obs), num_episodes, episode_length,
                             action_repeat, backend)
    return eval_fn(None, key)
