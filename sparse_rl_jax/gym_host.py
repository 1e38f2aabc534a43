"""Gymnasium MuJoCo tasks (the papers' ``HalfCheetah-v5``, ``Hopper-v5``, ...) stepped on the host from
inside the compiled training program.

The simulator's state lives in the JAX carry, not on the host: ``State.pipeline_state`` is MuJoCo's
full integration state (``mj_getState(..., mjSTATE_INTEGRATION)``: time, qpos, qvel, actuator
activations, the solver's warm start, controls, applied forces, mocap poses) and the body positions
(`state_size`) as the raw bits of their float64 values, viewed as ``uint32``. Each step is one ``jax.pure_callback`` that is a pure function of
(state, action): it loads the state into a host ``MjData`` (``mj_setState``), runs Gymnasium's own
``step`` (frame skip, reward, termination, observation) and reads the state back. Consequences:

* Seeds and envs are ordinary vmap axes (the callback sees them as leading batch dimensions) and one
  host env per thread serves all of them.
* Checkpoints hold the exact simulator state, so ``--resume`` continues bit for bit, and a trajectory
  equals an uninterrupted Gymnasium episode bit for bit: observations, rewards and terminations
  (tested on HalfCheetah, Hopper and Ant). Beside the integration state the carry holds every body's
  position as the last physics step left them, which some tasks' rewards read before stepping (see
  `_load`); the solver's warm start is part of the integration state.
* Resets draw Gymnasium's own initial-state noise from a generator seeded by the JAX reset key: the same
  distribution as Gymnasium, one seed per episode instead of one stream per env.

Actions arrive in ``[-1, 1]`` and are mapped affinely onto the task's action box. Time limits are
not Gymnasium's ``TimeLimit`` wrapper but the env layer's ``EpisodeWrapper`` (``episode_length``, 1000
for the v5 locomotion tasks as in Gymnasium), so ``terminal`` (the task ended the episode) and
``truncated`` (the limit did) follow Gymnasium's meaning.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from sparse_rl_jax import quiet

quiet.import_brax()
from brax.envs.base import Env, State  # noqa: E402

PACKAGE_HINT = "the gymnasium[mujoco] package (pip install -r requirements.txt, or the 'envs' extra)"
# Host envs per task, made on the thread that builds the `GymnasiumEnv` and lent to one callback at a
# time: XLA runs callbacks on its own threads, whose stacks are too small for MuJoCo's model compiler
# (making an env there crashes the process), and one MjData must not be stepped by two threads at once.
_pools: Dict[str, "queue.Queue"] = {}
_pools_lock = threading.Lock()


def _pool(task: str) -> "queue.Queue":
    """``task``'s pool, with a first env made on the calling thread if it is new."""
    with _pools_lock:
        if task not in _pools:
            gymnasium, _ = _import()
            pool = queue.Queue()
            with quiet.native_lines_dropped():  # MuJoCo 4 warns about Gymnasium's XML (settotalmass)
                pool.put(gymnasium.make(task).unwrapped)  # unwrapped: no TimeLimit or checker, the carry decides
            _pools[task] = pool
        return _pools[task]


@contextlib.contextmanager
def _host_env(task: str):
    """Borrow ``task``'s host env (the pool exists: `GymnasiumEnv` made it)."""
    pool = _pools[task]
    env = pool.get()
    try:
        yield env
    finally:
        pool.put(env)


def _import():
    import gymnasium
    import mujoco

    return gymnasium, mujoco


def task_names() -> Tuple[str, ...]:
    """Gymnasium's registered MuJoCo tasks (ImportError when gymnasium or mujoco is missing)."""
    gymnasium, _ = _import()
    return tuple(sorted(name for name, spec in gymnasium.envs.registry.items()
                        if isinstance(spec.entry_point, str) and spec.entry_point.startswith("gymnasium.envs.mujoco")))


def _state_spec():
    _, mujoco = _import()
    return mujoco.mjtState.mjSTATE_INTEGRATION


def _integration_size(env) -> int:
    _, mujoco = _import()
    return int(mujoco.mj_stateSize(env.model, _state_spec()))


def state_size(env) -> int:
    """float64 values per carried state: MuJoCo's integration state, then every body's frame position and
    centre of mass as the last physics step left them (``xpos``, ``xipos``)."""
    return _integration_size(env) + 6 * int(env.model.nbody)


def _read(env, out: np.ndarray) -> None:
    _, mujoco = _import()
    n, nb = _integration_size(env), 3 * int(env.model.nbody)
    mujoco.mj_getState(env.model, env.data, out[:n], _state_spec())
    out[n:n + nb] = env.data.xpos.ravel()
    out[n + nb:] = env.data.xipos.ravel()


def _load(env, state: np.ndarray) -> None:
    """Put a carried state into ``env``'s MjData. The body positions are carried, not recomputed:
    Gymnasium's Ant, Humanoid, Reacher and Pusher read them *before* stepping, as the previous step's
    last forward pass left them (one physics substep behind the state), so recomputing would change
    their rewards."""
    _, mujoco = _import()
    n, nb = _integration_size(env), 3 * int(env.model.nbody)
    mujoco.mj_setState(env.model, env.data, state[:n], _state_spec())
    env.data.xpos[:] = state[n:n + nb].reshape(-1, 3)
    env.data.xipos[:] = state[n + nb:].reshape(-1, 3)


def _rows(batch_shape, *arrays):
    """Each array broadcast to ``batch_shape + own trailing shape`` and flattened to rows."""
    return [np.broadcast_to(a, batch_shape + a.shape[-1:]).reshape(-1, a.shape[-1]) for a in arrays]


def _reset_host(task: str, state_size: int, obs_size: int, keys: np.ndarray):
    with _host_env(task) as env:
        return _reset_rows(env, state_size, obs_size, keys)


def _reset_rows(env, state_size: int, obs_size: int, keys: np.ndarray):
    keys = np.asarray(keys)
    batch = keys.shape[:-1]
    (rows,) = _rows(batch, keys)
    states = np.empty((rows.shape[0], state_size), np.float64)
    obs = np.empty((rows.shape[0], obs_size), np.float32)
    for i, key in enumerate(rows.astype(np.uint64)):
        obs[i] = env.reset(seed=int((key[0] << np.uint64(32)) | key[1]))[0]
        _read(env, states[i])
    return states.view(np.uint32).reshape(batch + (2 * state_size,)), obs.reshape(batch + (obs_size,))


def _step_host(task: str, state_size: int, obs_size: int, bits: np.ndarray, action: np.ndarray):
    with _host_env(task) as env:
        return _step_rows(env, state_size, obs_size, bits, action)


def _step_rows(env, state_size: int, obs_size: int, bits: np.ndarray, action: np.ndarray):
    bits, action = np.asarray(bits), np.asarray(action)
    batch = np.broadcast_shapes(bits.shape[:-1], action.shape[:-1])
    bit_rows, action_rows = _rows(batch, bits, action)
    states = np.ascontiguousarray(bit_rows).view(np.float64).copy()
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    obs = np.empty((states.shape[0], obs_size), np.float32)
    reward = np.empty((states.shape[0],), np.float32)
    terminated = np.empty((states.shape[0],), np.float32)
    for i in range(states.shape[0]):
        _load(env, states[i])
        a = low + (np.clip(action_rows[i].astype(np.float64), -1.0, 1.0) + 1.0) * 0.5 * (high - low)
        o, r, term, _, _ = env.step(a)
        obs[i], reward[i], terminated[i] = o, r, float(term)
        _read(env, states[i])
    return (states.view(np.uint32).reshape(batch + (2 * state_size,)), obs.reshape(batch + (obs_size,)),
            reward.reshape(batch), terminated.reshape(batch))


class GymnasiumEnv(Env):
    """One Gymnasium MuJoCo task as an unbatched Brax-style env (``reset(key)``, ``step(state, action)``)
    whose physics runs on the host through ``jax.pure_callback``; batch it with ``VmapWrapper``."""

    def __init__(self, task: str):
        _pool(task)
        with _host_env(task) as env:
            self._obs_size = int(np.prod(env.observation_space.shape))
            self._action_size = int(np.prod(env.action_space.shape))
            self._state_size = state_size(env)
        self.task = task

    def _shapes(self, batch=()):
        return (jax.ShapeDtypeStruct(batch + (2 * self._state_size,), jnp.uint32),
                jax.ShapeDtypeStruct(batch + (self._obs_size,), jnp.float32))

    def reset(self, rng: jax.Array) -> State:
        host = lambda keys: _reset_host(self.task, self._state_size, self._obs_size, keys)  # noqa: E731
        bits, obs = jax.pure_callback(host, self._shapes(), rng, vmap_method="expand_dims")
        zero = jnp.zeros((), jnp.float32)
        return State(pipeline_state=bits, obs=obs, reward=zero, done=zero, metrics={}, info={})

    def step(self, state: State, action: jax.Array) -> State:
        host = lambda bits, a: _step_host(self.task, self._state_size, self._obs_size, bits, a)  # noqa: E731
        scalar = jax.ShapeDtypeStruct((), jnp.float32)
        bits, obs, reward, terminated = jax.pure_callback(
            host, (*self._shapes(), scalar, scalar), state.pipeline_state, action.astype(jnp.float32),
            vmap_method="expand_dims")
        return state.replace(pipeline_state=bits, obs=obs, reward=reward, done=terminated)

    @property
    def observation_size(self) -> int:
        return self._obs_size

    @property
    def action_size(self) -> int:
        return self._action_size

    @property
    def backend(self) -> str:
        return "mujoco"
