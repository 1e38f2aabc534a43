"""The run: pure init and chunk functions compiled once, vmapped over seeds, driven by a host loop.

Structure (PureJaxRL style, with Brax's `progress_fn` contract):

* `Trainer(config)` is static: environment, agent, rules. `trainer.init(key, actor_sparsity,
  critic_sparsity, hparams)` builds one seed's `TrainState`; sparsities and the agent's plain-number
  hyperparameters (`agents.common.AgentBase.hparam_keys`) are arrays, so a sweep vmaps over them.
* `trainer.chunk(states, first_iteration, num_iterations)` advances all seeds by `num_iterations`
  environment iterations in one `lax.scan`. An iteration is one vectorised env step (random actions during
  warm-up) followed by `updates_per_iteration` gradient updates (skipped during warm-up). The iteration
  counter is an *unbatched* scan carry shared by every seed, so the periodic events (warm-up switch,
  topology updates, n-step switch, buffer checks) are real `lax.cond`/`lax.switch` branches under `vmap`,
  never selects that run both sides every iteration.
* The host loop is `sparse_rl_jax.runner` (one loop for every layout): one compiled chunk per evaluation
  period, evaluation, metrics to `progress_fn(env_steps, metrics)` and the period callbacks. This module
  keeps the pure pieces and the per-period metric arithmetic the loop calls.
* Observation normalisation (``config.env.normalize_observations``, as Brax's trainers): running mean and
  variance in ``TrainState.obs_stats`` (``None`` when off), updated in `_collect` with the observations
  collected each iteration, applied (current stats) to every observation the agent sees; the replay
  buffer keeps raw observations. See `sparse_rl_jax.normalization`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from sparse_rl_jax import agents, envs, evaluation, methods, normalization, plasticity, replay
from sparse_rl_jax.config import Config

ProgressFn = Callable[[int, Dict[str, Any]], None]
# The vmap axis of the seeds (or sweep cells) inside a chunk; the env's auto-reset agrees over it.
SEED_BATCH = "seed_batch"
# the key of the batch the plasticity measures read (folded with the env steps: a fresh batch each period)
DIAGNOSIS_SEED = 0x5EED


@struct.dataclass
class TrainState:
    agent: Any
    replay: replay.ReplayState
    env_state: Any
    key: jax.Array
    episode_return: jax.Array  # running return of each parallel env
    finished_return_sum: jax.Array  # over episodes finished in the current chunk
    finished_count: jax.Array
    env_steps: jax.Array
    # running observation statistics (`normalization.RunningStats`); None when
    # `config.env.normalize_observations` is off, which leaves the pytree's leaves (and checkpoints) as before
    obs_stats: Optional[normalization.RunningStats] = None


def normalize_obs(stats: Optional[normalization.RunningStats], obs: jax.Array) -> jax.Array:
    """``obs`` as the agent sees it: normalised with ``stats``, untouched (no op at all) when ``None``."""
    return obs if stats is None else normalization.normalize(stats, obs)


def strong_types(tree):
    """Drop JAX weak types (Brax returns weakly typed `done` flags after a step but not after reset);
    otherwise the chunk's input types change between calls and it compiles twice."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), tree)


def make_agent(config: Config, obs_dim: int, action_dim: int, grad_axis: Optional[str] = None,
               batch_axes: Tuple[str, ...] = ()):
    """The config's agent (`agents.AGENTS`) with each network's method object, built for that network's
    own updates.

    The schedules are laid out over ``schedule_updates`` critic updates (the run's ``total_updates`` unless
    the run was extended) and the actor's ``// actor_interval`` of them (TD3: the policy delay). With ``topology.actor_clock='critic_updates'`` (DS) the actor's schedule numbers
    are read on the critic's clock (``scale`` = the actor interval); otherwise on its own updates (RLx2).
    """
    cls = agents.get(config.algo)
    interval = cls.interval_for(config.agent)
    total = max(config.schedule_updates, 1)
    scale = interval if config.topology.actor_clock == "critic_updates" else 1
    actor_method = methods.for_network(config.method, config.topology, max(total // interval, 1), scale)
    critic_method = methods.for_network(config.method, config.topology, total)
    return cls(obs_dim=obs_dim, action_dim=action_dim, cfg=config.agent, sparsity=config.sparsity,
               actor_method=actor_method, critic_method=critic_method, grad_axis=grad_axis,
               batch_axes=tuple(batch_axes))


class Trainer:
    """Static pieces of a run; its methods are pure functions of the state."""

    def __init__(self, config: Config, grad_axis: Optional[str] = None,
                 batch_axes: Tuple[str, ...] = (SEED_BATCH,)):
        """``batch_axes``: the vmap axes `iteration` always runs under (the seed axis of `chunk`; a
        data-parallel trainer adds its shard axis)."""
        self.config = config
        e = config.env
        self.env = envs.make_env(e.name, e.backend, e.episode_length, e.action_repeat, e.num_envs,
                                 batch_axes=batch_axes)
        self.obs_dim, self.action_dim = self.env.observation_size, self.env.action_size
        self.agent = make_agent(config, self.obs_dim, self.action_dim, grad_axis, batch_axes)
        self.nmax = config.replay.nstep
        self.updates_per_iteration = config.updates_per_iteration
        self.warmup_iterations = config.warmup_iterations
        # the named vmap/mesh axes of one seed's data shards (a data-parallel trainer's; None: no shards):
        # observation stats and RLx2's policy distance are combined over them, so every shard agrees
        self.shard_axes: Optional[Any] = None

    # ------------------------------------------------------------------ the layout's view of its states
    # (a data-parallel shard's trainer, `distributed.DataParallelTrainer`, overrides these three)
    @property
    def run_config(self) -> Config:
        """The whole run's config (a data-parallel shard's trainer holds its shard's in ``config``)."""
        return self.config

    def metric_view(self, states: TrainState) -> TrainState:
        """The small part of vmapped states the metrics read: no env state, one replay row."""
        rep = states.replay
        data = jax.tree.map(lambda x: jax.lax.slice_in_dim(x, 0, 1, axis=1), rep.data)
        return states.replace(env_state=None, replay=rep.replace(data=data))

    def merge_host(self, states: TrainState, info: Dict) -> Tuple[TrainState, Dict, Dict[str, Any]]:
        """Host copies of the period's states and per-seed sums as the metrics read them (one value per
        seed), and the metrics only the layout can give (none here)."""
        return states, info, {}

    # ------------------------------------------------------------------ init
    def init(self, key, actor_sparsity, critic_sparsity, hparams=None) -> TrainState:
        """One seed's state; ``hparams``: ``{name: value}`` overriding the config's hyperparameters."""
        agent_key, env_key, key = jax.random.split(key, 3)
        num_envs = self.config.env.num_envs
        return TrainState(
            agent=self.agent.init(agent_key, actor_sparsity, critic_sparsity, hparams),
            replay=replay.init(replay.example_transition(self.obs_dim, self.action_dim),
                               num_envs=num_envs, max_transitions=self.config.replay.capacity),
            env_state=strong_types(self.env.reset(env_key)),
            key=key,
            episode_return=jnp.zeros((num_envs,), jnp.float32),
            finished_return_sum=jnp.float32(0.0),
            finished_count=jnp.int32(0),
            env_steps=jnp.int32(0),
            obs_stats=(normalization.init(self.obs_dim) if self.config.env.normalize_observations else None),
        )

    # ------------------------------------------------------------------ one iteration
    def _act(self, ts: TrainState, warm, key):
        obs = ts.env_state.obs
        shape = (self.config.env.num_envs, self.action_dim)

        def random_actions():
            a = jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
            return a, a

        return jax.lax.cond(warm, random_actions,
                            lambda: self.agent.explore(ts.agent, normalize_obs(ts.obs_stats, obs), key))

    def _collect(self, ts: TrainState, iteration, key) -> TrainState:
        """One env step; as Brax's SAC: act with the current observation stats, then update them with the
        observations of this step's transitions (warm-up included) before this iteration's updates."""
        warm = iteration < self.warmup_iterations
        action, clean = self._act(ts, warm, key)
        obs_stats = (None if ts.obs_stats is None else
                     normalization.update(ts.obs_stats, ts.env_state.obs, self.shard_axes))
        env_state, tr = envs.env_step(self.env, ts.env_state, action)
        env_state = strong_types(env_state)
        transition = replay.Transition(
            obs=ts.env_state.obs, action=action, reward=tr.reward, next_obs=tr.next_obs,
            terminal=tr.terminal, truncated=tr.truncated, policy_action=clean)
        episode_return = ts.episode_return + tr.reward
        done = jnp.logical_or(tr.terminal, tr.truncated)
        return ts.replace(
            replay=replay.insert(ts.replay, transition), env_state=env_state,
            episode_return=jnp.where(done, 0.0, episode_return),
            finished_return_sum=ts.finished_return_sum + jnp.sum(jnp.where(done, episode_return, 0.0)),
            finished_count=ts.finished_count + jnp.sum(done).astype(jnp.int32),
            env_steps=ts.env_steps + self.config.env_steps_per_iteration, obs_stats=obs_stats)

    def _learn(self, ts: TrainState, iteration, key):
        """`updates_per_iteration` gradient updates; returns (state, summed metrics)."""
        first_update = (iteration - self.warmup_iterations) * self.updates_per_iteration
        batch, nmax = self.config.agent.batch_size, self.nmax
        rcfg = self.config.replay

        def one(carry, j):
            agent_state, key = carry
            key, sample_key, update_key = jax.random.split(key, 3)
            update_index = first_update + j  # the run's critic-update count (shared by the seeds)
            n_active = jnp.where(update_index >= rcfg.nstep_delay, rcfg.nstep, 1)
            window = replay.sample_windows(ts.replay, sample_key, batch, nmax)
            if ts.obs_stats is not None:  # raw observations in the buffer, normalised at use
                window = window._replace(obs=normalize_obs(ts.obs_stats, window.obs),
                                         next_obs=normalize_obs(ts.obs_stats, window.next_obs))
            agent_state, info = self.agent.update(agent_state, window, update_index, n_active, update_key)
            info["nstep_updates"] = (n_active > 1).astype(jnp.int32)  # updates with n-step targets on
            return (agent_state, key), info

        (agent_state, _), infos = jax.lax.scan(
            one, (ts.agent, key), jnp.arange(self.updates_per_iteration))
        return ts.replace(agent=agent_state), jax.tree.map(lambda x: jnp.sum(x, axis=0), infos)

    def _check_buffer(self, ts: TrainState) -> Tuple[TrainState, jax.Array]:
        """RLx2: drop the oldest 10% when the current policy has moved away from the oldest data (with data
        shards: the distance averaged over them, so all shards shrink together)."""
        rcfg = self.config.replay
        oldest = replay.oldest(ts.replay, self.config.oldest_transitions)
        now = self.agent.policy(ts.agent.actor.params, normalize_obs(ts.obs_stats, oldest.obs))
        distance = replay.policy_distance(now, oldest.policy_action, 1.0, oldest.valid)
        if self.shard_axes is not None:
            distance = jax.lax.pmean(distance, self.shard_axes)
        buf, _ = replay.maybe_shrink(ts.replay, distance, threshold=rcfg.distance_threshold,
                                     min_transitions=rcfg.min_size, fraction=rcfg.shrink_fraction)
        return ts.replace(replay=buf), distance

    def iteration(self, ts: TrainState, iteration) -> tuple:
        key, act_key, learn_key = jax.random.split(ts.key, 3)
        ts = self._collect(ts.replace(key=key), iteration, act_key)
        zero_info = jax.tree.map(jnp.zeros_like, jax.eval_shape(
            lambda: self._learn(ts, iteration, learn_key)[1]))
        ts, info = jax.lax.cond(
            iteration >= self.warmup_iterations,
            lambda: self._learn(ts, iteration, learn_key),
            lambda: (ts, zero_info))
        if self.config.replay.dynamic:
            every = max(self.config.replay.check_every // self.config.env_steps_per_iteration, 1)
            check = (iteration >= self.warmup_iterations) & ((iteration + 1) % every == 0)
            ts, distance = jax.lax.cond(
                check, self._check_buffer, lambda t: (t, jnp.float32(0.0)), ts)
            info["buffer_policy_distance"] = distance
            info["buffer_checks"] = check.astype(jnp.float32)
        return ts, info

    def diagnose(self, ts: TrainState) -> Dict[str, jax.Array]:
        """The plasticity measures (`plasticity.measure`) of both networks, ``plasticity/<net>/<measure>``,
        on one batch of the agent's batch size drawn from the replay buffer with a key of its own (the
        run's keys are untouched, so the trajectory is the same with or without it)."""
        key = jax.random.fold_in(jax.random.PRNGKey(DIAGNOSIS_SEED), ts.env_steps)
        batch = replay.sample(ts.replay, key, self.config.agent.batch_size)
        obs = normalize_obs(ts.obs_stats, batch.obs)
        agent, state = self.agent, ts.agent
        out = {}
        for name, inputs in (("actor", (obs,)), ("critic", (obs, batch.action))):
            module = agent.actor_module if name == "actor" else agent.critic_module
            for measure, value in plasticity.measure(module, getattr(state, name).params, *inputs).items():
                out[f"plasticity/{name}/{measure}"] = value
        return out

    # ------------------------------------------------------------------ chunk
    def chunk(self, states: TrainState, first_iteration, num_iterations: int, step_all=None,
              diagnose_all=None):
        """Advance vmapped `states` (leading seed axis) by `num_iterations`; returns (states, info summed
        over the iterations, with the plasticity measures of the final states). ``step_all(states,
        iteration)``: one iteration of every seed, ``diagnose_all(states)``: `diagnose` of every seed
        (defaults: this trainer's, vmapped over seeds; the scale-out layouts pass theirs)."""
        states = states.replace(finished_return_sum=jnp.zeros_like(states.finished_return_sum),
                                finished_count=jnp.zeros_like(states.finished_count))
        if step_all is None:
            step_all = jax.vmap(self.iteration, in_axes=(0, None), axis_name=SEED_BATCH)  # counter shared
        iterations = first_iteration + jnp.arange(num_iterations)
        states, infos = jax.lax.scan(step_all, states, iterations)
        info = jax.tree.map(lambda x: jnp.sum(x, axis=0), infos)
        info.update((diagnose_all or jax.vmap(self.diagnose))(states))
        return states, info


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """Per-seed keys: seed i of a vmapped run uses the same key as a single run with seed `seed + i`."""
    return jnp.stack([jax.random.PRNGKey(seed + i) for i in range(num_seeds)])


# ---------------------------------------------------------------------- host loop
def chunk_iterations(config: Config) -> int:
    """Iterations per compiled chunk: one evaluation period (at least one iteration)."""
    return max(config.eval_every // config.env_steps_per_iteration, 1)


def num_periods(config: Config) -> int:
    """Chunks needed to cover warm-up plus training; the last one may overshoot the step budget
    slightly, which is cheaper than compiling a second, shorter chunk."""
    total_iterations = config.warmup_iterations + config.train_iterations
    return -(-total_iterations // chunk_iterations(config))


def policy_params(states: TrainState):
    """What the evaluated (or exported) policy reads: ``(actor params, observation stats or None)``."""
    return states.agent.actor.params, states.obs_stats


def make_policy_fn(trainer: Trainer) -> Callable[[Any, jax.Array], jax.Array]:
    """``apply(params, obs)``, the deterministic policy on normalised observations, with ``params`` in
    `policy_params` form; observations pass untouched when the stats are ``None``."""
    agent = trainer.agent

    def apply(params, obs):
        actor_params, obs_stats = params
        return agent.policy(actor_params, normalize_obs(obs_stats, obs))

    return apply


def make_evaluate(trainer: Trainer):
    """``(policy_params(states), keys) -> {metric: [seeds]}``, vmapped over seeds, not jitted (every
    layout compiles it its own way)."""
    e = trainer.config.env
    env = envs.make_env(e.name, e.backend, e.episode_length, e.action_repeat, num_envs=1)
    evaluate = evaluation.make_evaluator(env, make_policy_fn(trainer), e.eval_episodes, e.episode_length,
                                         jit=False)
    return jax.vmap(evaluate)


def period_updates(trainer: Trainer, period: int) -> Tuple[int, int]:
    """``(critic updates made in evaluation period ``period`` (0-based), critic update count at its end)``."""
    per_chunk, warmup = chunk_iterations(trainer.config), trainer.warmup_iterations
    first, last = period * per_chunk, (period + 1) * per_chunk
    updates = (max(last - warmup, 0) - max(first - warmup, 0)) * trainer.updates_per_iteration
    return updates, max(last - warmup, 0) * trainer.updates_per_iteration


