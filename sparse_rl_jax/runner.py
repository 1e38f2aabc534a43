"""The one host loop: every layout runs here, from one device to several hosts.

A `Runner` is a compiled run layout: the trainer (`trainer.Trainer`, or a data shard's
`distributed.DataParallelTrainer`), a device mesh, and the jitted init, chunk and evaluation programs of
`distributed`. One device is simply a one-device mesh (bit for bit the plain vmapped program); seeds
sharded over devices, data-parallel shards and several processes are other meshes and trainers, not
other loops.

Each evaluation period the loop runs one compiled chunk, evaluates, gathers the metrics to the host and
hands the period's result to

* ``progress_fn(env_steps, metrics)`` (Brax's contract; the primary process only), then
* every ``callbacks`` entry with a `PeriodResult` (every process, in order): the launcher's metric
  writer, finite check, checkpointer and stop request are such callbacks. A callback ends the run early
  by raising; the states it saw are the run's latest.

    import sparse_rl_jax as srj
    result = srj.train(config, num_seeds=2, progress_fn=print)      # = runner.train
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from sparse_rl_jax import distributed as dist
from sparse_rl_jax import metrics as metrics_lib
from sparse_rl_jax import trainer as trainer_lib
from sparse_rl_jax.config import Config


class PeriodResult(NamedTuple):
    """What one evaluation period hands its callbacks."""

    period: int  # evaluation periods done, 1-based (the checkpoint step)
    num_periods: int  # of the whole run
    env_steps: int  # per seed, at the end of the period
    metrics: Dict[str, Any]  # per-seed numpy arrays (`progress_fn`'s dict)
    states: Any  # the global (possibly sharded) states after the period
    history: List[Any]  # [(env_steps, metrics)] of every period so far, this one last
    trainer: trainer_lib.Trainer  # what produced them (its agent reads the states)


Callback = Callable[[PeriodResult], None]


class TrainResult(NamedTuple):
    states: trainer_lib.TrainState  # leading axis = seeds
    history: list  # [(env_steps, metrics dict with per-seed numpy arrays)]
    trainer: trainer_lib.Trainer


class Runner:
    """A compiled run layout: the trainer, the mesh and the jitted init, chunk and evaluation programs.

    Reuse one runner for several batches of the same config (a sweep): every call to :meth:`train`
    with the same number of entries reuses the compiled programs.
    """

    def __init__(self, config: Config, data_shards: int = 0, mesh: Optional[Mesh] = None,
                 num_seeds: Optional[int] = None):
        self.config, self.data_shards = config, data_shards
        self.trainer = dist.make_trainer(config, data_shards)
        self.mesh = mesh if mesh is not None else dist.default_mesh(data_shards, num_seeds)
        self.init_fn = dist.make_init_fn(self.trainer, self.mesh)
        self.chunk_fn = dist.make_chunk_fn(self.trainer, self.mesh)
        self.eval_fn = dist.make_eval_fn(self.trainer, self.mesh)

    def init(self, keys, actor_sparsity=None, critic_sparsity=None, hparams=None):
        """Sharded initial states for per-entry ``keys`` (``[n, 2]`` raw keys)."""
        return dist.init_states(self.trainer, self.mesh, keys, actor_sparsity, critic_sparsity, self.init_fn,
                                hparams)

    def train(self, num_seeds: int = 1, *, keys=None, progress_fn: Optional[trainer_lib.ProgressFn] = None,
              callbacks: Sequence[Callback] = (), actor_sparsity=None, critic_sparsity=None,
              hparams: Optional[Dict[str, Any]] = None, states=None, start_period: int = 0,
              history: Optional[list] = None) -> TrainResult:
        """See :func:`train`."""
        config, trainer, mesh = self.config, self.trainer, self.mesh
        keys = trainer_lib.seed_keys(config.seed, num_seeds) if keys is None else keys
        n = int(keys.shape[0])
        dist.check_layout(mesh, n, self.data_shards)
        if states is None:
            states = self.init(keys, actor_sparsity, critic_sparsity, hparams)
        elif hparams:
            raise ValueError("hparams: a resumed run's hyperparameters are its states' (states.agent.hparams)")
        host_keys = np.asarray(keys)
        per_chunk = trainer_lib.chunk_iterations(config)
        total = trainer_lib.num_periods(config)
        history = list(history or [])
        so_far = metrics_lib.flops_so_far(history, n)
        for c in range(start_period, total):
            t0 = time.perf_counter()
            # the iteration counter is a host value: replicated on every process, unbatched everywhere
            states, info = self.chunk_fn(states, np.int32(c * per_chunk))
            jax.block_until_ready(states)
            elapsed = time.perf_counter() - t0
            eval_keys = dist.to_global(np.stack([np.asarray(jax.random.fold_in(k, c)) for k in host_keys]),
                                       mesh, P(dist.SEED))
            evals = self.eval_fn(trainer_lib.policy_params(states), eval_keys)
            host_states, host_info, host_evals = dist.to_host((trainer.metric_view(states), info, evals))
            metrics, host_states, host_info = metrics_lib.host_metrics(
                trainer, host_states, host_info, trainer_lib.period_updates(trainer, c)[0])
            metrics.update(host_evals)
            so_far = metrics_lib.add_period_metrics(metrics, trainer, host_states, host_info, so_far, c, elapsed)
            env_steps = int(np.asarray(host_states.env_steps).reshape(n, -1).sum(1)[0])
            history.append((env_steps, metrics))
            if progress_fn is not None and dist.is_primary():
                progress_fn(env_steps, metrics)
            result = PeriodResult(c + 1, total, env_steps, metrics, states, history, trainer)
            for callback in callbacks:
                callback(result)
        return TrainResult(states=states, history=history, trainer=trainer)


def train(config: Config, num_seeds: int = 1, *, data_shards: int = 0, mesh: Optional[Mesh] = None,
          keys=None, progress_fn: Optional[trainer_lib.ProgressFn] = None, callbacks: Sequence[Callback] = (),
          actor_sparsity: Optional[Sequence[float]] = None, critic_sparsity: Optional[Sequence[float]] = None,
          hparams: Optional[Dict[str, Any]] = None, states=None, start_period: int = 0,
          history: Optional[list] = None) -> TrainResult:
    """Train ``num_seeds`` seeds of ``config`` in one program; returns the final states and the history.

    ``progress_fn(env_steps, metrics)`` receives, after every evaluation period, a dict of per-seed numpy
    arrays: ``training/...``, ``eval/episode_reward``, ``sparsity/<net>``, ``topology/<net>/...``,
    ``buffer/...``, ``flops/...``, ``nstep`` (the primary process only); ``callbacks`` then get the
    period's `PeriodResult` (every process). ``actor_sparsity``/``critic_sparsity`` give one level per
    seed (a vmapped sparsity sweep), ``hparams`` ``{name: scalar or per-seed values}`` of the agent's
    hyperparameter leaves (``runner.trainer.agent.hparam_keys``: learning rates, tau, noises, drop
    fraction; a fresh run only), ``keys`` each entry's key (default ``seed_keys(config.seed, num_seeds)``).

    Layout: ``data_shards=0`` shards the seeds over ``mesh``'s seed axis (default: every device when the
    seeds divide over them, else one device); ``data_shards=D`` runs each seed data-parallel with ``D``
    shards (default mesh: every device on the data axis). Every process of a multi-host run makes this
    same call. To resume pass ``states`` (``distributed.to_global`` of restored host states, layout
    ``distributed.state_spec``), ``start_period`` (periods done) and ``history``.
    """
    return Runner(config, data_shards, mesh, num_seeds if keys is None else int(keys.shape[0])).train(
        num_seeds, keys=keys, progress_fn=progress_fn, callbacks=callbacks, actor_sparsity=actor_sparsity,
        critic_sparsity=critic_sparsity, hparams=hparams, states=states, start_period=start_period,
        history=history)
