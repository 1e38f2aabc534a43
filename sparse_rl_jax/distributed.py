"""Scale-out: seeds and data across devices and hosts, on JAX's own runtime (no scheduler of ours).

Two layouts, one device mesh with axes ``('seed', 'data')`` built from ``jax.devices()``:

* **Seed-sharded** (``data_shards=0``): the usual vmapped ``TrainState`` (leading axis = seeds or sweep
  cells) is split over the ``seed`` mesh axis. Each device runs ``Trainer.chunk``'s vmapped scan on its own
  block of seeds inside ``jax.shard_map``; nothing is communicated during training. Results equal the
  single-device run of the same seeds (up to float reassociation from different batch sizes).
* **Data-parallel** (``data_shards=D``): one run (per seed) is split into ``D`` logical *shards*. The state
  has leading axes ``[seeds, D]``. Every shard steps ``num_envs / D`` of the parallel envs, holds its own
  replay shard (capacity / D), samples ``batch_size / D`` per update and draws its own exploration and
  sampling noise (its keys are the seed's keys with the shard index folded in; shard 0 keeps the seed's
  keys, so ``D = 1`` is exactly the ordinary run). The agent (params, targets, masks, optimizer states,
  importance, topology RNG) is the *same* on every shard and stays the same: the agents are built with
  ``grad_axis=('data', 'shard')``, so every gradient, loss info and importance input is ``pmean``-ed over
  all shards before the optimizer and the topology update see it. Shards map onto the ``data`` mesh axis
  (``D`` a multiple of its size); several shards per device are vmapped with the axis name ``'shard'``.
  Hence the results depend on ``D`` but not on the number of devices or hosts: ``D = 4`` on one CPU
  device equals ``D = 4`` on four devices or on two processes. RLx2's buffer check averages the policy
  distance over shards too, so all shards shrink their replay together. Observation statistics
  (``TrainState.obs_stats``, when ``env.normalize_observations``) are per seed like the agent: every
  shard's collected observations are combined over all shards (``psum`` over ``('data', 'shard')``), so
  the stats equal those of the whole run's batch of envs and stay identical on every shard.

Iteration counters stay unbatched (replicated ``P()`` argument), so periodic events remain real
``lax.cond`` branches on every device.

Multi-host: call :func:`initialize_from_flags` first thing (before any JAX computation); every process
then runs the same program on its local devices (``jax.devices()`` is global). Host values enter as
global arrays through :func:`to_global` (every process holds the same host value) and leave through
:func:`to_host` (a collective gather). Only the primary process (:func:`is_primary`) should write logs and
checkpoints; the host loop (`sparse_rl_jax.runner`) calls ``progress_fn`` on the primary process only.

Per-cell hyperparameters (sweeps): ``hparams`` is an optional dict of per-seed arrays, keys among the
agent's ``hparam_keys`` (learning rates, tau, noises, drop fraction). They are leaves of the agent's state
(``state.agent.hparams``), set at init like the sparsity levels, so cells differing only in these numbers
share one compiled program and give exactly what a run with those config values gives.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sparse_rl_jax import config as cfg_lib
from sparse_rl_jax import trainer as trainer_lib
from sparse_rl_jax.config import Config

SEED, DATA, SHARD = "seed", "data", "shard"
GRAD_AXES = (DATA, SHARD)
# TrainState fields held once per seed in data-parallel states (replicated over the data axis, unbatched
# over shards); every other field has a shard axis
PER_SEED_FIELDS = ("agent", "obs_stats")


class ScaleError(ValueError):
    """A layout that cannot be mapped onto the devices (one line: what, the values, what is allowed)."""


class NotAMultiple(ScaleError):
    """A config size (``field``, ``value``) that the data shards (``shards``) do not divide."""

    def __init__(self, field: str, value: int, shards: int):
        super().__init__(f"invalid {field}={value}: must be a multiple of data_shards={shards}")
        self.field, self.value, self.shards = field, value, shards


# ---------------------------------------------------------------------------- multi-host
def initialize_from_flags(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
                          process_id: Optional[int] = None, local_device_ids: Optional[Sequence[int]] = None,
                          auto: bool = False, cpu_collectives: Optional[str] = "gloo",
                          heartbeat_timeout: int = 30) -> bool:
    """Start JAX's distributed runtime from launcher flags; returns True if it was started.

    Must run before any JAX computation. Nothing happens without ``coordinator_address`` (single process)
    unless ``auto`` (TPU pods / SLURM, where ``jax.distributed.initialize()`` finds its own arguments).
    ``cpu_collectives='gloo'`` enables cross-process collectives on CPU (ignored by GPU and TPU).
    ``heartbeat_timeout``: seconds after which the coordination service declares a silent process dead
    and stops the others (JAX's default is 100): the bound on how long a hung peer can stall the run.
    """
    if not coordinator_address and not auto:
        if num_processes not in (None, 1):
            raise ScaleError(f"invalid --num_processes={num_processes}: needs --coordinator_address (host:port "
                             "of process 0)")
        return False
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ScaleError("--coordinator_address needs --num_processes and --process_id")
        if not 0 <= process_id < num_processes:
            raise ScaleError(f"invalid --process_id={process_id}: must be in [0, {num_processes}) for "
                             f"--num_processes={num_processes}")
    if cpu_collectives:  # checked arguments first: a bad flag leaves the JAX config untouched
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if coordinator_address:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, local_device_ids=local_device_ids,
                                   heartbeat_timeout_seconds=heartbeat_timeout)
    else:
        jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout)
    return True


def define_flags(flag_values=None) -> None:
    """Register ``--coordinator_address``, ``--num_processes``, ``--process_id``, ``--distributed_auto``
    and ``--data_shards`` on an absl ``FlagValues`` (default: the global ``absl.flags.FLAGS``)."""
    from absl import flags

    fv = flag_values if flag_values is not None else flags.FLAGS
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host runs).",
                        flag_values=fv)
    flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host runs).", flag_values=fv)
    flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).", flag_values=fv)
    flags.DEFINE_boolean("distributed_auto", False, "jax.distributed.initialize() with auto-detected "
                         "arguments (TPU pods, SLURM).", flag_values=fv)
    flags.DEFINE_integer("data_shards", 0, "0: shard seeds over devices; D >= 1: data-parallel with D "
                         "shards of envs, replay and batch per seed.", flag_values=fv)
    flags.DEFINE_integer("heartbeat_timeout", 30, "Multi-host: seconds without a heartbeat after which a process "
                         "counts as dead and the others stop.", lower_bound=1, flag_values=fv)


def initialize_from_flag_values(fv) -> bool:
    """:func:`initialize_from_flags` with the values of :func:`define_flags`' flags."""
    return initialize_from_flags(fv.coordinator_address, fv.num_processes, fv.process_id,
                                 auto=fv.distributed_auto, heartbeat_timeout=fv.heartbeat_timeout)


def is_primary() -> bool:
    """True on the process that writes logs and checkpoints (process 0)."""
    return jax.process_index() == 0


# ---------------------------------------------------------------------------- mesh and placement
def make_mesh(data_devices: int = 1, devices: Optional[Sequence[Any]] = None) -> Mesh:
    """Mesh ``('seed', 'data')`` with ``data_devices`` devices on the data axis.

    Default: all devices of all hosts, laid out by ``mesh_utils.create_device_mesh`` (topology-aware on
    TPU). Explicit ``devices`` are used in the given order, row-major (each consecutive group of
    ``data_devices`` is one data group).
    """
    shape_of = lambda n: (n // data_devices, data_devices)  # noqa: E731
    if devices is not None:
        devices = list(devices)
        _check_divides(data_devices, len(devices))
        return Mesh(np.asarray(devices, dtype=object).reshape(shape_of(len(devices))), (SEED, DATA))
    devices = jax.devices()
    _check_divides(data_devices, len(devices))
    try:
        from jax.experimental import mesh_utils
        grid = mesh_utils.create_device_mesh(shape_of(len(devices)), devices=devices)
    except Exception:  # device sets the topology helper cannot tile: plain order
        grid = np.asarray(devices, dtype=object).reshape(shape_of(len(devices)))
    return Mesh(grid, (SEED, DATA))


def _check_divides(data_devices: int, n: int) -> None:
    if data_devices < 1 or n % data_devices:
        raise ScaleError(f"invalid data_devices={data_devices}: must divide the device count {n}")


def check_layout(mesh: Mesh, num_seeds: int, data_shards: int = 0) -> None:
    """Clear error unless seeds (and shards) divide evenly over the mesh."""
    ns, nd = mesh.shape[SEED], mesh.shape[DATA]
    if num_seeds < 1 or num_seeds % ns:
        raise ScaleError(f"invalid number of seeds {num_seeds}: must be a multiple of the {ns} devices on "
                         f"the seed axis ({mesh.devices.size} devices in all); use {max(ns, -(-num_seeds // ns) * ns)}")
    if data_shards and data_shards % nd:
        raise ScaleError(f"invalid data_shards={data_shards}: must be a multiple of the {nd} devices on the "
                         "data axis")
    if not data_shards and nd != 1:
        raise ScaleError(f"seed-sharded runs need a mesh with data axis size 1, got {nd}")


def to_global(tree: Any, mesh: Mesh, spec: Any) -> Any:
    """Host values (identical on every process) -> global arrays laid out by ``spec``: one
    ``PartitionSpec`` for every leaf, or a prefix tree of them (e.g. :func:`state_spec`)."""
    if not isinstance(spec, P):
        return jax.tree.map(lambda s, sub: to_global(sub, mesh, s), spec, tree,
                            is_leaf=lambda x: isinstance(x, P))
    sharding = NamedSharding(mesh, spec)

    def leaf(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(leaf, tree)


def to_host(tree: Any) -> Any:
    """Global (possibly multi-host) arrays -> full numpy arrays on every process (a collective)."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)


def replica_mismatch(tree: Any) -> Optional[str]:
    """Path of the first leaf whose copies of one block differ between devices or processes, or None
    when every copy is bit-identical (a collective on multi-process runs).

    A data-parallel run keeps one agent per seed on every device of its data group (gradients averaged
    over the data axis); the checkpoint saves one of those copies, so they must stay equal bit for bit.
    Each process hashes its own device copies (block index and bytes), the digests are gathered, and
    copies of the same block are compared.
    """
    names, rows = [], []
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        for shard in leaf.addressable_shards:
            index = hashlib.blake2b(repr(shard.index).encode(), digest_size=8).digest()
            data = hashlib.blake2b(np.ascontiguousarray(np.asarray(shard.data)).tobytes(), digest_size=16)
            names.append(jax.tree_util.keystr(path))
            rows.append(np.frombuffer(index + data.digest(), np.uint8))
    if not rows:
        return None
    local = np.stack(rows)  # every process holds the same number of blocks of every leaf, in tree order
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        everyone = np.asarray(multihost_utils.process_allgather(local))
    else:
        everyone = local[None]
    seen = {}
    for copies in everyone:
        for name, row in zip(names, copies):
            first = seen.setdefault((name, row[:8].tobytes()), row[8:].tobytes())
            if first != row[8:].tobytes():
                return name
    return None


def _shard_map(fn, mesh, in_specs, out_specs, check=False):
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=check)


# ---------------------------------------------------------------------------- data-parallel trainer
def shard_config(config: Config, num_shards: int) -> Config:
    """The config one data shard runs: ``num_envs``, batch, replay sizes divided by ``num_shards``; every
    iteration count (warm-up, training, updates per iteration, evaluation period, buffer checks) equal to
    the full run's, so schedules and topology updates happen at the same iterations."""
    e, a, r = config.env, config.agent, config.replay
    for name, value in (("env.num_envs", e.num_envs), ("agent.batch_size", a.batch_size)):
        if value % num_shards:
            raise NotAMultiple(name, value, num_shards)
    local_envs = e.num_envs // num_shards
    spi = local_envs * e.action_repeat
    warm, train_it = config.warmup_iterations, config.train_iterations
    every = max(r.check_every // config.env_steps_per_iteration, 1)
    local = cfg_lib.replace(config, **{
        "env.num_envs": local_envs, "agent.batch_size": a.batch_size // num_shards,
        "updates_per_env_step": config.updates_per_iteration / local_envs,
        "warmup_env_steps": warm * spi, "total_env_steps": (warm + train_it) * spi,
        "eval_every": trainer_lib.chunk_iterations(config) * spi,
        "replay.capacity": -(-r.capacity // num_shards), "replay.min_size": -(-r.min_size // num_shards),
        "replay.oldest": -(-config.oldest_transitions // num_shards), "replay.check_every": every * spi,
    })
    same = ("warmup_iterations", "train_iterations", "updates_per_iteration", "total_updates")
    for name in same:
        assert getattr(local, name) == getattr(config, name), name
    assert trainer_lib.chunk_iterations(local) == trainer_lib.chunk_iterations(config)
    return local


class DataParallelTrainer(trainer_lib.Trainer):
    """One shard's trainer: the shard config's envs/replay/batch, gradients averaged over all shards."""

    def __init__(self, config: Config, num_shards: int):
        if num_shards < 1:
            raise ScaleError(f"invalid data_shards={num_shards}: must be >= 1")
        super().__init__(shard_config(config, num_shards), grad_axis=GRAD_AXES,
                         batch_axes=(trainer_lib.SEED_BATCH, SHARD))
        self.global_config, self.num_shards = config, num_shards
        self.shard_axes = GRAD_AXES  # observation stats and RLx2's policy distance combined over all shards

    @property
    def run_config(self) -> Config:
        return self.global_config

    def metric_view(self, states):
        rep = states.replay  # [seeds, shards, time, envs, ...]: one row of each shard
        data = jax.tree.map(lambda x: jax.lax.slice_in_dim(x, 0, 1, axis=2), rep.data)
        return states.replace(env_state=None, replay=rep.replace(data=data))

    def merge_host(self, states, info):
        """Shards summed into their seed (returns, counts, env steps); the agent's sums are equal over
        the shards (their inputs are averaged), so shard 0's stand for the seed; the buffer size is the
        sum of the shards'."""
        merged = states.replace(
            finished_return_sum=states.finished_return_sum.sum(1), finished_count=states.finished_count.sum(1),
            env_steps=states.env_steps.sum(1), replay=jax.tree.map(lambda x: x[:, 0], states.replay))
        extra = {"buffer/size": (np.asarray(states.replay.size) * self.config.env.num_envs).sum(1)}
        return merged, {k: np.asarray(v)[:, 0] for k, v in info.items()}, extra

    def init_shards(self, key, actor_sparsity, critic_sparsity, hparams=None, shard_ids=None):
        """One seed's data-parallel state: the agent and the observation stats once (no shard axis),
        every other field with a leading axis over ``shard_ids`` (default all ``D``). Shard 0 keeps the
        seed's key, shard ``d`` folds ``d`` into it, so ``D = 1`` reproduces the ordinary run."""
        shard_ids = jnp.arange(self.num_shards) if shard_ids is None else shard_ids
        first = self.init(key, actor_sparsity, critic_sparsity, hparams)
        shard_keys = jax.vmap(lambda d: jnp.where(d == 0, key, jax.random.fold_in(key, d)))(shard_ids)
        shards = jax.vmap(lambda k: self.init(k, actor_sparsity, critic_sparsity, hparams).replace(
            **{n: None for n in PER_SEED_FIELDS}))(shard_keys)
        return shards.replace(**{n: getattr(first, n) for n in PER_SEED_FIELDS})


def _per_field(states_cls, agent, rest):
    """A TrainState-shaped prefix tree: ``agent`` for the per-seed fields (:data:`PER_SEED_FIELDS`: the
    agent and the observation stats), ``rest`` for every other field."""
    names = [f.name for f in dataclasses.fields(states_cls)]
    return states_cls(**{n: (agent if n in PER_SEED_FIELDS else rest) for n in names})


# ---------------------------------------------------------------------------- compiled pieces
def _specs(data_parallel: bool):
    """State layout: data-parallel states keep one agent and one set of observation stats per seed
    (replicated over the data axis: every device holds them) and split every other field over seeds and
    shards."""
    if not data_parallel:
        return P(SEED)
    return _per_field(trainer_lib.TrainState, P(SEED), P(SEED, DATA))


def make_init_fn(trainer: trainer_lib.Trainer, mesh: Mesh):
    """Jitted ``(keys, actor_sparsity, critic_sparsity, hparams) -> states`` (``hparams``: a dict of
    per-seed arrays, possibly empty); each device builds only its seeds."""
    dp = isinstance(trainer, DataParallelTrainer)
    if dp:
        per_device = trainer.num_shards // mesh.shape[DATA]

        def one(key, actor, critic, hp):  # this device's shards only
            ids = jax.lax.axis_index(DATA) * per_device + jnp.arange(per_device)
            return trainer.init_shards(key, actor, critic, hp, ids)
    else:
        one = trainer.init
    fn = _shard_map(jax.vmap(one), mesh, (P(SEED), P(SEED), P(SEED), P(SEED)), _specs(dp))
    return jax.jit(fn)


def init_states(trainer: trainer_lib.Trainer, mesh: Mesh, keys, actor_sparsity=None,
                critic_sparsity=None, init_fn=None, hparams=None) -> trainer_lib.TrainState:
    """Sharded initial states (seed-sharded: ``TrainState`` with leading seed axis; data-parallel: agent
    ``[seeds]``, every other field ``[seeds, shards]``). ``hparams``: ``{name: scalar or per-seed values}``
    among ``trainer.agent.hparam_keys`` (ValueError on others). ``init_fn``: a cached :func:`make_init_fn`."""
    n = int(keys.shape[0])
    check_layout(mesh, n, trainer.num_shards if isinstance(trainer, DataParallelTrainer) else 0)
    s = trainer.config.sparsity

    def levels(value, default):
        return np.broadcast_to(np.asarray(default if value is None else value, np.float32), (n,))

    trainer.agent.check_hparams(hparams or {})  # before anything compiles
    hp = {k: levels(v, None) for k, v in (hparams or {}).items() if v is not None}
    args = (np.asarray(keys), levels(actor_sparsity, s.actor), levels(critic_sparsity, s.critic), hp)
    init_fn = init_fn if init_fn is not None else make_init_fn(trainer, mesh)
    return init_fn(*to_global(args, mesh, P(SEED)))


def abstract_states(config: Config, num_seeds: int, data_shards: int = 0):
    """Shapes and dtypes (``jax.ShapeDtypeStruct``) of a run's host-side states, nothing computed: the
    restore template of a data-parallel checkpoint (seed-sharded states have the ordinary layout of
    ``runs.template``)."""
    tr = make_trainer(config, data_shards)
    init = tr.init_shards if data_shards else tr.init
    keys = trainer_lib.seed_keys(config.seed, num_seeds)
    levels = jnp.zeros((num_seeds,), jnp.float32)
    return jax.eval_shape(jax.vmap(init), keys, levels + config.sparsity.actor, levels + config.sparsity.critic)


def make_chunk_fn(trainer: trainer_lib.Trainer, mesh: Mesh):
    """Jitted ``(states, first_iteration) -> (states, infos)`` over the mesh (states are donated).
    ``first_iteration``: a host integer (replicated). ``infos`` leaves: ``[seeds]`` (data-parallel:
    ``[seeds, shards]``)."""
    dp = isinstance(trainer, DataParallelTrainer)
    n = trainer_lib.chunk_iterations(trainer.config)
    iteration = trainer.iteration

    if dp:
        # the agent (and the observation stats) are unbatched over shards: their updates only see
        # `pmean`/`psum`-ed values, and out_axes=None makes JAX reject (at trace time) anything that
        # would let shard-local data leak into them
        axes = _per_field(trainer_lib.TrainState, None, 0)
        step = jax.vmap(jax.vmap(iteration, in_axes=(axes, None), out_axes=(axes, 0), axis_name=SHARD),
                        in_axes=(0, None), axis_name=trainer_lib.SEED_BATCH)
        # every shard measures the networks on a batch of its own buffer; the metrics read shard 0's
        diagnose = jax.vmap(jax.vmap(trainer.diagnose, in_axes=(axes,)))
    else:
        step = jax.vmap(iteration, in_axes=(0, None), axis_name=trainer_lib.SEED_BATCH)
        diagnose = None

    def local(states, first):
        return trainer.chunk(states, first, n, step_all=step, diagnose_all=diagnose)

    spec = _specs(dp)
    info_spec = P(SEED, DATA) if dp else P(SEED)
    return jax.jit(_shard_map(local, mesh, (spec, P()), (spec, info_spec)), donate_argnums=0)


def make_eval_fn(trainer: trainer_lib.Trainer, mesh: Mesh):
    """Jitted ``(trainer.policy_params(states), keys) -> {metric: [seeds]}`` (actor params and observation
    stats), seeds split over the seed axis (data-parallel runs: every device of a seed's data group
    evaluates the same policy with the same key)."""
    return jax.jit(_shard_map(trainer_lib.make_evaluate(trainer), mesh, (P(SEED), P(SEED)), P(SEED)))


# ---------------------------------------------------------------------------- host loop
def make_trainer(config: Config, data_shards: int = 0) -> trainer_lib.Trainer:
    return DataParallelTrainer(config, data_shards) if data_shards else trainer_lib.Trainer(config)


def default_mesh(data_shards: int = 0, num_seeds: Optional[int] = None) -> Mesh:
    """Seed-sharded: every device on the seed axis (when ``num_seeds`` is given and the seeds do not divide
    over them, the first device alone: the plain one-device case); data-parallel: every device on the
    data axis."""
    if data_shards:
        return make_mesh(len(jax.devices()))
    if num_seeds is not None and num_seeds % len(jax.devices()):
        return make_mesh(1, jax.devices()[:1])
    return make_mesh(1)


def state_spec(data_shards: int = 0):
    """The ``PartitionSpec`` prefix tree of a run's states (for :func:`to_global` when resuming)."""
    return _specs(bool(data_shards))


__all__ = [
    "DATA", "GRAD_AXES", "PER_SEED_FIELDS", "SEED", "SHARD", "DataParallelTrainer", "ScaleError",
    "abstract_states", "check_layout", "state_spec",
    "default_mesh", "define_flags", "init_states", "initialize_from_flags",
    "initialize_from_flag_values", "is_primary", "make_chunk_fn", "make_eval_fn", "make_init_fn",
    "make_mesh", "make_trainer", "shard_config", "to_global", "to_host",
]
