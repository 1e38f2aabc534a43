"""MuJoCo tasks that only exist as host simulators, stepped from inside the compiled training program:
Gymnasium's MuJoCo tasks (the papers' ``HalfCheetah-v5``, ``Hopper-v5``, ...; suite ``gym``) and the
dm_control suite's domains that MuJoCo Playground lacks (``dog``, ``quadruped``, ``manipulator``, ...;
suite ``dmcontrol``, named ``dmcontrol/<domain>-<task>``).

The simulator's state lives in the JAX carry, not on the host: ``State.pipeline_state`` is MuJoCo's
full integration state (``mj_getState(..., mjSTATE_INTEGRATION)``: time, qpos, qvel, actuator
activations, the solver's warm start, controls, applied forces, mocap poses), the body positions as the
last physics step left them and the model fields a suite's tasks set per episode (`state_size`), as the
raw bits of their float64 values viewed as ``uint32``. Each step is one ``jax.pure_callback`` that is a
pure function of (state, action): it loads the state into a host ``MjData`` (``mj_setState``), runs the
suite's own ``step`` (frame skip, reward, termination, observation) and reads the state back.
Consequences:

* Seeds and envs are ordinary vmap axes (the callback sees them as leading batch dimensions), and one
  host env serves all of them.
* Checkpoints hold the exact simulator state, so ``--resume`` continues bit for bit, and a trajectory
  equals an uninterrupted episode of the suite bit for bit: observations, rewards and terminations
  (tested on HalfCheetah, Hopper, Ant, and on dm_control's dog, quadruped and manipulator with episodes
  of several envs interleaved on one host env). The body positions are carried because some tasks read
  them before stepping, as the previous step's last forward pass left them (`_load`).
* Resets draw the suite's own initial-state noise from a generator seeded by the JAX reset key: the
  suite's distribution of initial states, one seed per episode instead of one stream per env.

Actions arrive in ``[-1, 1]`` and are mapped affinely onto the task's action box. Time limits are the env
layer's ``EpisodeWrapper`` (``episode_length``: 1000 for Gymnasium's v5 locomotion tasks and for
dm_control), so ``terminal`` (the task ended the episode) and ``truncated`` (the limit did) keep their
meaning; the suites' own limits are switched off.
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


def _mujoco():
    import mujoco

    return mujoco


class Gymnasium:
    """Gymnasium's MuJoCo tasks (``gym/<Task>``), unwrapped: no TimeLimit, no checker."""

    PACKAGE_HINT = "the gymnasium[mujoco] package (pip install -r requirements.txt, or the 'envs' extra)"
    MODEL_FIELDS: Tuple[str, ...] = ()  # Gymnasium's tasks never change their model per episode

    @staticmethod
    def task_names() -> Tuple[str, ...]:
        import gymnasium

        return tuple(sorted(name for name, spec in gymnasium.envs.registry.items()
                            if isinstance(spec.entry_point, str)
                            and spec.entry_point.startswith("gymnasium.envs.mujoco")))

    @staticmethod
    def make(task: str):
        import gymnasium

        return gymnasium.make(task).unwrapped

    @staticmethod
    def model_data(env):
        return env.model, env.data

    @staticmethod
    def action_box(env):
        return env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)

    @staticmethod
    def reset(env, seed: int) -> np.ndarray:
        return env.reset(seed=seed)[0]

    @staticmethod
    def after_load(model, data) -> None:
        """Nothing: Gymnasium's step starts with a full ``mj_step``."""

    @staticmethod
    def step(env, action: np.ndarray):
        obs, reward, terminated, _, _ = env.step(action)
        return obs, reward, terminated


class DMControl:
    """dm_control's suite (``dmcontrol/<domain>-<task>``) for the domains MuJoCo Playground lacks."""

    PACKAGE_HINT = "the dm_control package (pip install -r requirements.txt, or the 'envs' extra)"
    # model fields dm_control's tasks set at the start of an episode (targets, receptacles): carried, so
    # one host env can serve episodes of many envs
    MODEL_FIELDS = ("body_pos", "body_quat", "geom_pos", "geom_size", "site_pos", "site_size")
    # what Playground ships (suite dmc) stays there; quadruped-escape draws a new terrain heightfield
    # each episode (a 40k-value model field), which this design does not carry
    PLAYGROUND_DOMAINS = ("acrobot", "ball_in_cup", "cartpole", "cheetah", "finger", "fish", "hopper", "humanoid",
                          "pendulum", "point_mass", "reacher", "swimmer", "walker")
    EXCLUDED = ("quadruped-escape",)

    @staticmethod
    def _suite():
        """``dm_control.suite``, imported without its renderer's complaint about a missing display
        (training never renders)."""
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*DISPLAY environment variable is missing")
            from dm_control import suite
        return suite

    @classmethod
    def task_names(cls) -> Tuple[str, ...]:
        suite = cls._suite()
        return tuple(f"{d}-{t}" for d, t in suite.ALL_TASKS
                     if d not in cls.PLAYGROUND_DOMAINS and f"{d}-{t}" not in cls.EXCLUDED)

    @classmethod
    def make(cls, task: str):
        domain, name = task.split("-", 1)
        return cls._suite().load(domain, name, task_kwargs={"time_limit": float("inf")},
                          environment_kwargs={"flat_observation": True})

    @staticmethod
    def model_data(env):
        return env.physics.model.ptr, env.physics.data.ptr

    @staticmethod
    def action_box(env):
        spec = env.action_spec()
        return spec.minimum.astype(np.float64), spec.maximum.astype(np.float64)

    @staticmethod
    def reset(env, seed: int) -> np.ndarray:
        env.task._random = np.random.RandomState(seed % 2**32)  # the task's own initial-state noise
        return env.reset().observation["observations"]

    @staticmethod
    def after_load(model, data) -> None:
        """dm_control steps as ``mj_step2`` then ``mj_step1`` (its legacy step): the next step continues
        from the position- and velocity-dependent quantities the last one computed, so compute them."""
        _mujoco().mj_step1(model, data)

    @staticmethod
    def step(env, action: np.ndarray):
        env._reset_next_step = False  # the previous row's episode end must not reset this row
        ts = env.step(action)
        return ts.observation["observations"], ts.reward or 0.0, ts.discount == 0.0


SUITES = {"gym": Gymnasium, "dmcontrol": DMControl}

# Host envs per (suite, task), made on the thread that builds the `HostEnv` and lent to one callback at a
# time: XLA runs callbacks on its own threads, whose stacks are too small for MuJoCo's model compiler
# (making an env there crashes the process), and one MjData must not be stepped by two threads at once.
_pools: Dict[Tuple[str, str], "queue.Queue"] = {}
_pools_lock = threading.Lock()


def _pool(suite: str, task: str) -> "queue.Queue":
    """The pool of ``task``, with a first env made on the calling thread if it is new."""
    with _pools_lock:
        if (suite, task) not in _pools:
            pool = queue.Queue()
            with quiet.native_lines_dropped():  # MuJoCo 4 warns about Gymnasium's XML (settotalmass)
                pool.put(SUITES[suite].make(task))
            _pools[suite, task] = pool
        return _pools[suite, task]


@contextlib.contextmanager
def _host_env(suite: str, task: str):
    """Borrow the host env of ``task`` (its pool exists: `HostEnv` made it)."""
    pool = _pools[suite, task]
    env = pool.get()
    try:
        yield env
    finally:
        pool.put(env)


def _integration_size(model) -> int:
    mujoco = _mujoco()
    return int(mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_INTEGRATION))


def _layout(adapter, model):
    """(name, size, lives in MjData) of every part of a carried state after the integration state."""
    return [("xpos", 3 * model.nbody, True), ("xipos", 3 * model.nbody, True)] + [
        (f, int(np.size(getattr(model, f))), False) for f in adapter.MODEL_FIELDS]


def state_size(adapter, env) -> int:
    """float64 values per carried state (see the module docstring)."""
    model, _ = adapter.model_data(env)
    return _integration_size(model) + sum(n for _, n, _ in _layout(adapter, model))


def _read(adapter, env, out: np.ndarray) -> None:
    mujoco = _mujoco()
    model, data = adapter.model_data(env)
    n = _integration_size(model)
    mujoco.mj_getState(model, data, out[:n], mujoco.mjtState.mjSTATE_INTEGRATION)
    for name, size, in_data in _layout(adapter, model):
        out[n:n + size] = getattr(data if in_data else model, name).ravel()
        n += size


def _load(adapter, env, state: np.ndarray) -> None:
    """Put a carried state into ``env``. The body positions are carried, not recomputed: Gymnasium's Ant,
    Humanoid, Reacher and Pusher read them *before* stepping, as the previous step's last forward pass
    left them (one physics substep behind the state), so recomputing would change their rewards."""
    mujoco = _mujoco()
    model, data = adapter.model_data(env)
    n = _integration_size(model)
    mujoco.mj_setState(model, data, state[:n], mujoco.mjtState.mjSTATE_INTEGRATION)
    for name, size, in_data in _layout(adapter, model):
        target = getattr(data if in_data else model, name)
        target[...] = state[n:n + size].reshape(target.shape)
        n += size
    adapter.after_load(model, data)


def _rows(batch_shape, *arrays):
    """Each array broadcast to ``batch_shape + own trailing shape`` and flattened to rows."""
    return [np.broadcast_to(a, batch_shape + a.shape[-1:]).reshape(-1, a.shape[-1]) for a in arrays]


def _reset_host(suite: str, task: str, state_size: int, obs_size: int, keys: np.ndarray):
    adapter = SUITES[suite]
    keys = np.asarray(keys)
    batch = keys.shape[:-1]
    (rows,) = _rows(batch, keys)
    states = np.empty((rows.shape[0], state_size), np.float64)
    obs = np.empty((rows.shape[0], obs_size), np.float32)
    with _host_env(suite, task) as env:
        for i, key in enumerate(rows.astype(np.uint64)):
            obs[i] = adapter.reset(env, int((key[0] << np.uint64(32)) | key[1]))
            _read(adapter, env, states[i])
    return states.view(np.uint32).reshape(batch + (2 * state_size,)), obs.reshape(batch + (obs_size,))


def _step_host(suite: str, task: str, state_size: int, obs_size: int, bits: np.ndarray, action: np.ndarray):
    adapter = SUITES[suite]
    bits, action = np.asarray(bits), np.asarray(action)
    batch = np.broadcast_shapes(bits.shape[:-1], action.shape[:-1])
    bit_rows, action_rows = _rows(batch, bits, action)
    states = np.ascontiguousarray(bit_rows).view(np.float64).copy()
    obs = np.empty((states.shape[0], obs_size), np.float32)
    reward = np.empty((states.shape[0],), np.float32)
    terminated = np.empty((states.shape[0],), np.float32)
    with _host_env(suite, task) as env:
        low, high = adapter.action_box(env)
        for i in range(states.shape[0]):
            _load(adapter, env, states[i])
            a = low + (np.clip(action_rows[i].astype(np.float64), -1.0, 1.0) + 1.0) * 0.5 * (high - low)
            obs[i], reward[i], terminated[i] = adapter.step(env, a)
            _read(adapter, env, states[i])
    return (states.view(np.uint32).reshape(batch + (2 * state_size,)), obs.reshape(batch + (obs_size,)),
            reward.reshape(batch), terminated.reshape(batch))


class HostEnv(Env):
    """One host task as an unbatched Brax-style env (``reset(key)``, ``step(state, action)``) whose physics
    runs on the host through ``jax.pure_callback``; batch it with ``VmapWrapper``."""

    def __init__(self, suite: str, task: str):
        _pool(suite, task)
        adapter = SUITES[suite]
        with _host_env(suite, task) as env:
            self._obs_size = int(np.size(adapter.reset(env, 0)))
            low, _ = adapter.action_box(env)
            self._action_size = int(np.size(low))
            self._state_size = state_size(adapter, env)
        self.suite, self.task = suite, task

    def _shapes(self, batch=()):
        return (jax.ShapeDtypeStruct(batch + (2 * self._state_size,), jnp.uint32),
                jax.ShapeDtypeStruct(batch + (self._obs_size,), jnp.float32))

    def reset(self, rng: jax.Array) -> State:
        def host(keys):
            return _reset_host(self.suite, self.task, self._state_size, self._obs_size, keys)

        bits, obs = jax.pure_callback(host, self._shapes(), rng, vmap_method="expand_dims")
        zero = jnp.zeros((), jnp.float32)
        return State(pipeline_state=bits, obs=obs, reward=zero, done=zero, metrics={}, info={})

    def step(self, state: State, action: jax.Array) -> State:
        def host(bits, a):
            return _step_host(self.suite, self.task, self._state_size, self._obs_size, bits, a)

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
