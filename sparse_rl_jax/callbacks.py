"""The launchers' period callbacks (`runner.PeriodResult` after every evaluation period) and the stop
request that SIGTERM sets.

* `RunCallback` (`experiments/train.py`): the metric files and the progress line, the finite check, the
  replica check of data-parallel runs, the checkpoint and the SIGTERM stop, in that order: a diverged
  period is never checkpointed, and a stop request is checkpointed before the run stops (a signal never
  cuts a save short).
* `StopCheck` (`experiments/sweep.py`): the SIGTERM stop alone (a sweep group keeps no checkpoints).
"""
from __future__ import annotations

import contextlib
import signal
import time
from typing import Any, Iterator, List, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from sparse_rl_jax import checkpoint, run_logging
from sparse_rl_jax import distributed as dist
from sparse_rl_jax import metrics as metrics_lib
from sparse_rl_jax import trainer as trainer_lib


class NonFiniteError(RuntimeError):
    """NaN/inf in a loss or in the agent's values (checked after every evaluation period)."""


class ReplicaMismatchError(RuntimeError):
    """A data-parallel run's copies of one agent differ between devices (checked after every period)."""


class Terminated(Exception):
    """The run stopped on SIGTERM at the end of an evaluation period."""


class StopRequest:
    """Set by SIGTERM (a scheduler's preemption or time limit); read at the end of each period."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame) -> None:
        self.requested = True

    def agreed(self) -> bool:
        """True if any process was asked to stop (all processes must leave the collectives together)."""
        if jax.process_count() == 1:
            return self.requested
        return bool(np.any(multihost_utils.process_allgather(np.asarray(self.requested))))


@contextlib.contextmanager
def sigterm_sets(stop: StopRequest) -> Iterator[StopRequest]:
    """SIGTERM sets ``stop`` inside the block. Off the main thread, where Python cannot install signal
    handlers, the default behaviour stays (``launch.main`` called from a worker thread)."""
    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:
        yield stop
        return
    try:
        yield stop
    finally:
        if previous is not None:  # None: the previous handler was not installed from Python
            signal.signal(signal.SIGTERM, previous)


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def check_finite(entry: List[Any], states, num_seeds: int, period_index: int) -> None:
    """Raise `NonFiniteError` naming the network and the step if a loss or any agent value (params,
    targets, optimizer moments, temperature, importance) is NaN/inf."""
    steps, metrics = entry
    where = f"env step {steps:,} (evaluation period {period_index}, gradient update {metrics.get('training/updates')})"
    for name, value in metrics.items():
        if name.startswith("training/") and name.endswith("_loss"):
            vals = value if isinstance(value, list) else [value]
            bad = [i for i, v in enumerate(vals) if v is None and metrics.get("training/updates", 0)]
            if bad:
                net = name[len("training/"):-len("_loss")]
                raise NonFiniteError(f"{net} loss is NaN/inf (seed {bad[0]}) by {where}")
    for path, leaf in jax.tree_util.tree_flatten_with_path(states.agent)[0]:
        arr = np.asarray(leaf)
        if not np.issubdtype(arr.dtype, np.floating):
            continue
        finite = np.isfinite(arr).reshape(num_seeds, -1).all(axis=1)
        if not finite.all():
            raise NonFiniteError(f"NaN/inf in {_path_name(path)} (seed {int(np.argmin(finite))}) by {where}")


def check_replicas(states, period_index: int, env_steps: int, total_periods: int, say: bool) -> None:
    """Raise `ReplicaMismatchError` if the devices' copies of the agent differ; after the last period
    print that they were equal (a collective: every process calls it)."""
    bad = dist.replica_mismatch(states.agent)
    if bad:
        raise ReplicaMismatchError(
            f"the data-parallel copies of agent{bad} differ between devices by env step {env_steps:,} "
            f"(evaluation period {period_index}): the gradient average or the XLA builds of the processes differ")
    if say and period_index == total_periods:
        print(f"data-parallel replicas: bit-identical on all {jax.device_count()} device(s) in "
              f"{jax.process_count()} process(es), checked after every period", flush=True)


def host_agent(sharded: bool, states):
    """``states`` with its agent as host arrays (a collective gather on sharded runs; the other fields,
    which hold the big replay buffers, are left where they are)."""
    return states.replace(agent=dist.to_host(states.agent)) if sharded else states


class RunCallback:
    """A launcher run's period callback: log, print, check, checkpoint, stop. ``plan`` is the run's
    `launch.Plan`; ``log`` its `run_logging.RunLog`."""

    def __init__(self, plan, log: run_logging.RunLog, stop: Optional[StopRequest] = None):
        self.plan, self.log = plan, log
        self.stop = stop if stop is not None else StopRequest()
        self.total_periods = trainer_lib.num_periods(plan.config)
        self.period_env_steps = trainer_lib.chunk_iterations(plan.config) * plan.config.env_steps_per_iteration
        self.start = self.last = time.perf_counter()
        self.last_checkpoint: Optional[str] = None
        self.calls = 0

    def __call__(self, period) -> None:
        plan, period_index, states = self.plan, period.period, period.states
        view = host_agent(plan.sharded, states)  # every process takes part in the gather
        metrics = {**period.metrics, **metrics_lib.layer_densities(period.trainer, view.agent, plan.num_seeds)}
        entry = self.log.append(period.env_steps, metrics)
        now = time.perf_counter()
        # The first period of a process includes compilation: no rate or estimate from it.
        rate = self.period_env_steps / max(now - self.last, 1e-9) if self.calls else None
        self.last, self.calls = now, self.calls + 1
        total = self.total_periods * self.period_env_steps
        remaining = max(total - period.env_steps, 0) / rate if rate else None
        if self.log.write:
            print(run_logging.format_progress(entry, total, period_index, self.total_periods, rate, now - self.start,
                                              remaining, plan.num_seeds), flush=True)
        try:
            check_finite(entry, view, plan.num_seeds, period_index)
        except NonFiniteError as err:
            kept = self.last_checkpoint or checkpoint.newest_path(plan.workdir)
            raise NonFiniteError(f"{err}; last good checkpoint: {kept or 'none yet'}") from None
        if plan.data_shards:
            check_replicas(states, period_index, period.env_steps, self.total_periods, self.log.write)
        stopping = self.stop.agreed() and period_index < self.total_periods
        if period_index % plan.checkpoint_every == 0 or period_index == self.total_periods or stopping:
            # sharded runs save host copies: the layout on disk does not depend on the devices
            saved = dist.to_host(states) if plan.sharded else states
            self.last_checkpoint = checkpoint.save(plan.workdir, period_index, saved, self.log.history, plan.config,
                                                   plan.num_seeds, keep=plan.keep, data_shards=plan.data_shards)
        if stopping:
            raise Terminated(f"stopped after period {period_index}/{self.total_periods}, "
                             f"checkpoint {self.last_checkpoint}")


class StopCheck:
    """Raise `Terminated` at the end of a period once SIGTERM asked to stop (nothing is saved)."""

    def __init__(self, stop: StopRequest, what: str = "the run"):
        self.stop, self.what = stop, what

    def __call__(self, period) -> None:
        if self.stop.agreed() and period.period < period.num_periods:
            raise Terminated(f"stopped {self.what} after period {period.period}/{period.num_periods}")
