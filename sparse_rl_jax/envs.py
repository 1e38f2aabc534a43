"""Environments for off-policy training, of every suite, behind one contract: vectorized, time-limited,
auto-resetting, with transitions that keep termination and truncation apart.

Suites (`split_name`): Brax (``halfcheetah``), MuJoCo Playground's DM Control Suite (``dmc/CheetahRun``,
`sparse_rl_jax.dmc`), and, stepped on the host (`sparse_rl_jax.host_envs`), Gymnasium's MuJoCo tasks
(``gym/HalfCheetah-v5``) and dm_control's domains Playground lacks (``dmcontrol/dog-run``). This module
is the only one that knows them: everything above it sees :func:`make_env` and :func:`env_step`.

Wrapper stack built by :func:`make_env` (innermost first), the same for every suite::

    base env -> VmapWrapper (per-env keys) -> EpisodeWrapper -> FreshAutoResetWrapper

Brax's wrappers read only what every suite's state has (``obs``, ``reward``, ``done``, ``metrics``,
``info``); the simulator's own state (Brax: ``pipeline_state``; Playground: ``data``; Gymnasium: the
carried MuJoCo state) is reset field by field, whatever its name.

Why our own auto-reset instead of Brax's ``AutoResetWrapper``:

* Brax's wrapper stores the *first* state of each env at ``reset`` and copies it back whenever an env is
  done, so every episode of env ``i`` starts from the same initial state for the whole run. For TD3/SAC
  that shrinks the start-state distribution the agent ever sees to ``num_envs`` points (one point with a
  single env), while evaluation samples fresh starts. ``FreshAutoResetWrapper`` keeps one PRNG key per env
  in ``state.info['reset_key']`` and resets done envs with a fresh key.
* Brax's wrapper also overwrites ``obs`` with the reset observation, losing the true final observation
  of the episode. The replay buffer needs it (``next_obs`` of a truncated transition is what we bootstrap
  from), so the wrapper keeps it in ``state.info['final_obs']``.

The fresh reset runs under ``lax.cond(any(done))``: it costs nothing on steps where no env finished.
Under an outer ``vmap`` (seeds, data shards) a per-batch-entry predicate would turn the cond into a select
that runs the reset every step; ``batch_axes`` names those vmap axes, and the predicate becomes "any env of
any entry is done" (a ``psum`` over them), which keeps the branch. Resetting with an all-false ``done`` is
the identity, so the entries without a finished env are unchanged either way. Measured cost: see
``docs/envs.md`` (``experiments/bench/env_throughput.py``).

Flags: Brax's ``EpisodeWrapper`` sets ``done`` at the time limit and ``info['truncation'] = 1`` only when
the episode was *not* also terminated by the task on that step, so ``terminal = done * (1 - truncation)``
(no bootstrap) and ``truncated = truncation`` (bootstrap from ``next_obs``) never overlap.

Actions are expected in ``[-1, 1]^action_size`` (Brax scales them to the actuator range; nothing clips).
Keys: raw ``uint32[2]`` keys (``jax.random.PRNGKey``) or typed keys (``jax.random.key``) are accepted.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from sparse_rl_jax import quiet

brax_envs = quiet.import_brax()  # first: Brax's import prints MJX's Warp banners
from brax.envs.base import Env, State, Wrapper  # noqa: E402
from brax.envs.wrappers import training as brax_training  # noqa: E402

BACKENDS = ("generalized", "positional", "spring", "mjx")
# Used when ``backend`` is ``auto`` or None (docs/envs.md): fast on the 2-core CPU and known to learn
# (Brax's own SAC).
DEFAULT_BACKENDS = {"inverted_pendulum": "positional", "halfcheetah": "spring"}
FALLBACK_BACKEND = "spring"
AUTO = "auto"
# Suites: a name without a prefix is a Brax env (``halfcheetah``); ``dmc/CheetahRun`` is MuJoCo
# Playground's DM Control Suite (`dmc`); ``gym/HalfCheetah-v5`` a Gymnasium MuJoCo task and
# ``dmcontrol/dog-run`` a dm_control task Playground lacks, both stepped on the host (`host_envs`). Each
# suite's simulator choices for ``env.backend``:
SUITE_BACKENDS = {"brax": BACKENDS, "dmc": ("jax", "warp"), "gym": ("mujoco",), "dmcontrol": ("mujoco",)}
# Info entries that describe the step that just happened; kept (not reset) when an env auto-resets.
_STEP_INFO_KEYS = ("truncation", "episode_done", "episode_metrics")
# State fields that describe the step just taken (the rest are the episode's state, reset at its end)
_STEP_FIELDS = ("reward", "done", "metrics", "info")


def env_names() -> tuple:
    """Registered Brax environment names (Brax keeps the registry private; read it defensively)."""
    return tuple(sorted(getattr(brax_envs, "_envs", {}).keys()))


class UnknownEnv(ValueError):
    """An env name no installed suite has; ``allowed`` says what would be (or which package is missing)."""

    def __init__(self, name: str, allowed: str):
        super().__init__(f"env name {name!r} is not supported; {allowed}")
        self.allowed = allowed


def _any_suite(brax_names) -> str:
    return (f"allowed values are a Brax env ({', '.join(brax_names)}), dmc/<Task> (the DM Control Suite of "
            "MuJoCo Playground, e.g. dmc/CheetahRun), gym/<Task> (Gymnasium MuJoCo, e.g. gym/HalfCheetah-v5) or "
            "dmcontrol/<domain>-<task> (dm_control's domains Playground lacks, e.g. dmcontrol/dog-run)")


def split_name(name: str) -> Tuple[str, str]:
    """``(suite, task)`` of an env name: ``halfcheetah`` or ``brax/halfcheetah`` -> ``("brax",
    "halfcheetah")``; ``dmc/CheetahRun``; ``gym/HalfCheetah-v5``. `UnknownEnv` for an unknown prefix."""
    suite, sep, task = name.partition("/")
    if not sep:
        return "brax", name
    if suite not in SUITE_BACKENDS:
        raise UnknownEnv(name, _any_suite(env_names()))
    return suite, task


def _suite_module(suite: str):
    """What lists a suite's tasks (``task_names()``) and names its package (``PACKAGE_HINT``)."""
    from sparse_rl_jax import dmc, host_envs

    return dmc if suite == "dmc" else host_envs.SUITES[suite]


def check_name(name: str) -> None:
    """`UnknownEnv` (a ValueError naming the env and what is allowed, or the package to install) before
    anything is built; only the named suite's package is imported."""
    suite, task = split_name(name)
    if suite == "brax":
        if task not in env_names():
            raise UnknownEnv(name, _any_suite(env_names()))
        return
    module = _suite_module(suite)
    try:
        tasks = module.task_names()
    except ImportError as err:
        raise UnknownEnv(name, f"it needs {module.PACKAGE_HINT}, which is not installed ({err})") from None
    if task not in tasks:
        raise UnknownEnv(name, f"allowed values are {suite}/<task> for the tasks {', '.join(tasks)}")


class EnvTransition(NamedTuple):
    """One vectorized env step, leading axis ``num_envs``.

    obs: ``float32[n, obs]`` observation the action was taken in.
    reward: ``float32[n]``.
    next_obs: ``float32[n, obs]`` observation after the step; at an episode end the true final
        observation (not the reset one that ``new_state.obs`` holds).
    terminal: ``float32[n]`` 1.0 if the task ended the episode (do not bootstrap).
    truncated: ``float32[n]`` 1.0 if the time limit ended it (bootstrap from ``next_obs``).
    """

    obs: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminal: jax.Array
    truncated: jax.Array


def _check_choice(option: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{option}={value!r} is not supported; allowed values: {list(allowed)}")


def _check_positive_int(option: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{option}={value!r} must be a positive integer")


def resolve_backend(name: str, backend: Optional[str] = None) -> str:
    """Validated simulator backend of env ``name``; ``auto`` or None picks the suite's default (Brax:
    ``DEFAULT_BACKENDS[name]``, spring for other envs; DMC: MJX's ``jax``; Gymnasium: ``mujoco``)."""
    suite, task = split_name(name)
    if backend in (None, AUTO):
        if suite == "brax":
            return DEFAULT_BACKENDS.get(task, FALLBACK_BACKEND)
        return SUITE_BACKENDS[suite][0]
    _check_choice(f"backend (of {suite} env {name})", backend, SUITE_BACKENDS[suite] + (AUTO,))
    return backend


def make_base_env(name: str, backend: Optional[str] = None) -> Env:
    """Unwrapped, unbatched env of any suite after validating ``name`` and ``backend``."""
    check_name(name)
    backend = resolve_backend(name, backend)
    suite, task = split_name(name)
    if suite == "dmc":
        from sparse_rl_jax import dmc

        return dmc.PlaygroundEnv(task, backend)
    if is_host_env(name):
        from sparse_rl_jax import host_envs

        return host_envs.HostEnv(suite, task)
    with quiet.native_lines_dropped():
        return brax_envs.get_environment(task, backend=backend)


def is_host_env(name: str) -> bool:
    """Whether ``name``'s physics runs on the host (through callbacks) rather than in the compiled program."""
    return split_name(name)[0] in ("gym", "dmcontrol")


def raw_key(key: jax.Array) -> jax.Array:
    """``uint32[..., 2]`` key data: Brax's wrappers read the batch shape off ``key.shape[:-1]``."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def _select(done: jax.Array, on_done, otherwise):
    """Per-env ``where`` over pytrees whose leaves have leading axis ``num_envs``."""

    def pick(x, y):
        mask = jnp.reshape(done, done.shape + (1,) * (x.ndim - done.ndim))
        return jnp.where(mask, x, y)

    return jax.tree.map(pick, on_done, otherwise)


class FreshAutoResetWrapper(Wrapper):
    """Resets done envs from a fresh key and records the true final observation.

    Wraps an env that is already batched (``reset`` takes ``uint32[n, 2]`` keys) and episode-limited.
    Adds ``info['reset_key']`` (``uint32[n, 2]``) and ``info['final_obs']`` (obs before any reset).
    ``done``, ``reward``, ``metrics`` and the step flags in ``_STEP_INFO_KEYS`` of the returned state
    describe the step just taken; ``obs``/``pipeline_state``/``info['steps']`` are already those of the
    new episode for envs that finished.
    """

    conditional_reset = True  # False: reset every step and select (only for measuring the cond's worth)

    def __init__(self, env: Env, num_envs: int, batch_axes: Tuple[str, ...] = ()):
        super().__init__(env)
        self.num_envs = num_envs
        self.batch_axes = tuple(batch_axes)  # names of outer vmap axes the step always runs under

    def reset(self, rng: jax.Array) -> State:
        keys = jax.random.split(raw_key(rng), 2 * self.num_envs)
        state = self.env.reset(keys[: self.num_envs])
        state.info["reset_key"] = keys[self.num_envs :]
        state.info["final_obs"] = state.obs
        return state

    def step(self, state: State, action: jax.Array) -> State:
        # Fresh containers: Brax wrappers mutate info dicts in place, which would alter the caller's state.
        state = state.replace(info=jax.tree.map(lambda x: x, state.info))
        # Base envs that never set ``done`` (halfcheetah) would otherwise keep last step's time-limit flag.
        state = state.replace(done=jnp.zeros_like(state.done))
        state = self.env.step(state, action)
        split = jax.vmap(jax.random.split)(state.info["reset_key"])
        carry_keys, reset_keys = split[:, 0], split[:, 1]
        final_obs = state.obs
        done = state.done > 0
        reset_done = lambda s: self._reset_done(s, done, reset_keys)  # noqa: E731
        if self.conditional_reset:
            any_done = jnp.any(done)
            if self.batch_axes:  # one predicate for the whole vmapped batch: the cond stays a branch
                any_done = jax.lax.psum(any_done.astype(jnp.int32), self.batch_axes) > 0
            state = jax.lax.cond(any_done, reset_done, lambda s: s, state)
        else:
            state = reset_done(state)
        state.info["reset_key"] = carry_keys
        state.info["final_obs"] = final_obs
        return state

    def _reset_done(self, state: State, done: jax.Array, keys: jax.Array) -> State:
        fresh = self.env.reset(keys)
        info = dict(state.info)
        for k, v in fresh.info.items():
            if k not in _STEP_INFO_KEYS and k in info:
                info[k] = _select(done, v, info[k])
        # the simulator state (Brax: pipeline_state; Playground: data) and obs start the new episode
        started = {f.name: _select(done, getattr(fresh, f.name), getattr(state, f.name))
                   for f in dataclasses.fields(state) if f.name not in _STEP_FIELDS}
        return state.replace(info=info, **started)


class TrainingEnv(FreshAutoResetWrapper):
    """What :func:`make_env` returns: the wrapper stack plus its static configuration.

    Attributes: ``name``, ``backend``, ``num_envs``, ``episode_length``, ``action_repeat``,
    ``observation_size`` (int), ``action_size`` (int). ``reset(key) -> State`` with batch ``num_envs``;
    ``step(state, action[n, action_size]) -> State``. Prefer :func:`env_step` for the transition.
    """

    def __init__(self, name: str, backend: str, episode_length: int, action_repeat: int, num_envs: int,
                 batch_axes: Tuple[str, ...] = ()):
        base = make_base_env(name, backend)
        inner = brax_training.EpisodeWrapper(brax_training.VmapWrapper(base), episode_length, action_repeat)
        super().__init__(inner, num_envs, batch_axes)
        self.name = name
        self.episode_length = episode_length
        self.action_repeat = action_repeat
        # eval_shape traces reset without running physics (Brax's property would run an un-jitted reset).
        self._obs_size = int(jax.eval_shape(base.reset, jax.random.PRNGKey(0)).obs.shape[-1])

    @property
    def observation_size(self) -> int:
        return self._obs_size

    @property
    def action_size(self) -> int:
        return int(self.env.action_size)


def make_env(
    name: str,
    backend: Optional[str] = None,
    episode_length: int = 1000,
    action_repeat: int = 1,
    num_envs: int = 1,
    batch_axes: Tuple[str, ...] = (),
) -> TrainingEnv:
    """Vectorized, time-limited, freshly auto-resetting Brax env for training.

    ``backend=None`` uses ``DEFAULT_BACKENDS`` (else spring). ``episode_length`` counts
    physics-env steps like Brax (an agent step advances ``action_repeat`` of them). ``batch_axes``: the
    names of the outer ``vmap`` axes every ``step`` will run under (see the module docstring); ``step``
    must then be called inside them.
    Raises ``ValueError`` naming the option, the value and the allowed values.
    """
    check_name(name)
    backend = resolve_backend(name, backend)
    for option, value in (("episode_length", episode_length), ("action_repeat", action_repeat),
                          ("num_envs", num_envs)):
        _check_positive_int(option, value)
    return TrainingEnv(name, backend, episode_length, action_repeat, num_envs, batch_axes)


def env_step(env: Env, state: State, action: jax.Array) -> tuple[State, EnvTransition]:
    """Steps ``env`` (from :func:`make_env`) and returns ``(new_state, EnvTransition)``.

    Pure and jittable; call it inside ``lax.scan``. ``new_state.obs`` is the observation for the next
    action (already reset where an episode ended); the transition holds the true ``next_obs``.
    """
    new_state = env.step(state, action)
    truncated = new_state.info["truncation"].astype(jnp.float32)
    done = new_state.done.astype(jnp.float32)
    transition = EnvTransition(
        obs=state.obs,
        reward=new_state.reward.astype(jnp.float32),
        next_obs=new_state.info["final_obs"],
        terminal=done * (1.0 - truncated),
        truncated=truncated,
    )
    return new_state, transition
