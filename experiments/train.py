"""Train one preset on one Brax task, several seeds vmapped in one program, into a work directory.

    python -m experiments.train --config=experiments/configs/preset.py:rlx2,td3 --workdir runs/rlx2 \\
        [--config.env.name=hopper] [--config.sparsity.actor=0.95] [--seeds 4] [--resume] \\
        [--checkpoint_every 1] [--keep_checkpoints 2] [--data_shards D] \\
        [--coordinator_address HOST:PORT --num_processes N --process_id I]

Every config field can be overridden with ``--config.<section>.<field>=value`` (``--config.env=NAME`` is
short for ``--config.env.name=NAME``); ``--config=experiments/configs/preset.py:<method>,<algo>`` picks any
preset by name. ``--resume`` continues the newest checkpoint of ``--workdir`` (``--config`` may then be
left out; if given, the resolved config must equal the saved one, field by field).

Devices: one device runs the plain vmapped program. With several devices (or processes) the seeds are
sharded over all of them (``--seeds`` a multiple of the device count); ``--data_shards D`` instead splits
each seed's envs, replay and batch into ``D`` shards over the devices, with averaged gradients (``D`` a
multiple of the device count). Multi-host: start the same command on every host with
``--coordinator_address``/``--num_processes``/``--process_id`` (or ``--distributed_auto`` on TPU pods and
SLURM) and a ``--workdir`` every host can read; only process 0 prints and writes logs, and every process
takes part in each checkpoint (orbax synchronises them). See BUILD.md and docs/scaling.md.

Exit status: 0 done; 2 bad input (one line on stderr naming the option, the value and what is allowed,
printed before anything is compiled or written); 1 the run diverged (NaN/inf in a loss or the
parameters: the message names the network and the step, the last good checkpoint is left intact); 130
interrupted (Ctrl-C: the newest checkpoint is intact); 143 terminated (SIGTERM, e.g. a scheduler's
preemption: the period in progress is finished and checkpointed first). Continue with --resume.
Outputs: see ``docs/launcher.md``.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import flags
from absl import logging as absl_logging

USAGE_ERROR = 2
DIVERGED = 1
INTERRUPTED = 130
TERMINATED = 143  # 128 + SIGTERM, what batch schedulers expect from a job they stopped
RUN_FILES = ("config.json", "summary.json", "checkpoints", "metrics", "tensorboard", "plots")


class UsageError(Exception):
    """Bad input; the message is one line."""


class Terminated(Exception):
    """The run stopped on SIGTERM after checkpointing its current evaluation period."""


class StopRequest:
    """Set by SIGTERM (a scheduler's preemption or time limit). The run finishes the evaluation period
    in progress, checkpoints it and stops: a signal never cuts a save short."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame) -> None:
        self.requested = True

    def agreed(self) -> bool:
        """True if any process was asked to stop (all processes must leave the collectives together)."""
        import jax

        if jax.process_count() == 1:
            return self.requested
        import numpy as np
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.asarray(self.requested))))


class NonFiniteError(RuntimeError):
    """NaN/inf in a loss or in the parameters (launcher-side check after every evaluation period)."""


# ---------------------------------------------------------------------------- flags
def define_flags(argv: Sequence[str] = ()) -> flags.FlagValues:
    """The launcher's flags on a fresh FlagValues (re-entrant: `main(argv)` can run many times).

    ml_collections registers the ``--config.*`` override flags from ``argv`` at definition time.
    """
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "Config file, e.g. experiments/configs/preset.py:rlx2,td3; override fields with "
        "--config.<section>.<field>=value. Optional with --resume.", flag_values=fv, sys_argv=list(argv))
    flags.DEFINE_string("workdir", None, "Work directory (created if missing).", flag_values=fv)
    flags.DEFINE_integer("seeds", None, "Number of seeds, vmapped in one program (default 1; with --resume "
                         "the saved number).", flag_values=fv)
    flags.DEFINE_boolean("resume", False, "Continue from the newest checkpoint in --workdir.", flag_values=fv)
    flags.DEFINE_integer("checkpoint_every", 1, "Save a checkpoint every N evaluation periods (and always "
                         "after the last).", flag_values=fv)
    flags.DEFINE_integer("keep_checkpoints", 2, "Keep the newest K checkpoints.", flag_values=fv)
    flags.DEFINE_boolean("plots", True, "Write the PNG plots at the end.", flag_values=fv)
    dist_lib().define_flags(fv)  # --data_shards, --coordinator_address, --num_processes, --process_id, ...
    return fv


def dist_lib():
    from sparse_rl_jax import distributed

    return distributed


def _rewrite_shorthands(argv: Sequence[str]) -> List[str]:
    """``--config.env=NAME`` -> ``--config.env.name=NAME`` (the env section's main field)."""
    out = []
    for arg in argv:
        if arg.startswith("--config.env="):
            arg = "--config.env.name=" + arg[len("--config.env="):]
        out.append(arg)
    return out


def _config_path(argv: Sequence[str]) -> Optional[str]:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg[len("--config="):]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _presets_hint() -> str:
    from sparse_rl_jax import methods, presets
    return (f"use experiments/configs/preset.py:<method>,<algo>[,<task>] (methods: {', '.join(methods.method_names())}; "
            f"tasks: {', '.join(presets.TASKS)}) or experiments/configs/demo.py")


def _top_level_fields() -> List[str]:
    from sparse_rl_jax import config as cfg_lib

    return [f.name for f in dataclasses.fields(cfg_lib.Config)]


def parse_flags(argv: Sequence[str]) -> flags.FlagValues:
    argv = _rewrite_shorthands(argv)
    path = _config_path(argv)
    if path is not None and not os.path.isfile(path.split(":", 1)[0]):
        raise UsageError(f"invalid --config={path!r}: no such config file; {_presets_hint()}")
    fv = define_flags(argv)
    try:
        extra = fv(argv)
        fv["config"].value  # the file is loaded lazily: surface its errors here  # noqa: B018
        if fv["config"].value is not None:
            fv["config"].value.to_dict()
    except flags.Error as err:
        text = str(err)
        if "Error whilst parsing config file" in text:  # get_config raised: keep its last line only
            raise UsageError(f"invalid --config={path!r}: {text.strip().splitlines()[-1]}") from None
        raise UsageError(" ".join(text.split())) from None
    except Exception as err:  # a config file that fails to load, or an override of an unknown field
        cause = err.__cause__ or err
        key_error = next((e for e in (err, err.__cause__, err.__context__, *getattr(err, "args", ()))
                          if isinstance(e, KeyError)), None)
        if key_error is not None:
            key = str(key_error.args[0]).strip("'\"") if key_error.args else "?"
            bad = [a.split("=", 1)[0] for a in argv if a.startswith("--config.") and key in a]
            raise UsageError(f"invalid {bad[0] if bad else '--config.' + key}: no such config field; "
                             f"top-level fields: {', '.join(_top_level_fields())}") from None
        raise UsageError(f"invalid --config={path!r}: {' '.join(str(cause).split())}") from None
    if len(extra) > 1:
        raise UsageError(f"unexpected positional arguments {extra[1:]!r}; only --flags are allowed")
    if not fv["workdir"].value:
        raise UsageError("--workdir is required (the directory that receives config, metrics, checkpoints)")
    for name, low in (("seeds", 1), ("checkpoint_every", 1), ("keep_checkpoints", 1), ("data_shards", 0),
                      ("num_processes", 1), ("process_id", 0)):
        value = fv[name].value
        if value is not None and value < low:
            raise UsageError(f"invalid --{name}={value}: must be an integer >= {low}")
    return fv


def start_distributed(fv: flags.FlagValues) -> None:
    """Join the multi-host run (`jax.distributed`) if the flags ask for one; before any JAX computation."""
    dist = dist_lib()
    try:
        dist.initialize_from_flag_values(fv)
    except dist.ScaleError as err:
        raise UsageError(" ".join(str(err).split())) from None
    except Exception as err:  # the runtime could not start or reach the coordinator
        raise UsageError(f"could not join the distributed run at --coordinator_address="
                         f"{fv['coordinator_address'].value!r}: {' '.join(str(err).split())[:300]}") from None


# ---------------------------------------------------------------------------- plan (all checks, no writes)
@dataclasses.dataclass
class Plan:
    config: Any
    workdir: str
    num_seeds: int
    restored: Any  # checkpoint.Restored or None
    checkpoint_every: int
    keep: int
    plots: bool
    data_shards: int = 0  # > 0: data-parallel with this many shards per seed
    sharded: bool = False  # run over a device mesh (`distributed`), not the plain single-device program


def _config_from_flag(config_dict) -> Any:
    from sparse_rl_jax import config as cfg_lib

    try:
        return cfg_lib.from_dict(config_dict.to_dict())
    except (TypeError, ValueError) as err:
        raise UsageError(f"--config: {' '.join(str(err).split())}") from None


def _validate(config) -> None:
    from sparse_rl_jax.validation import ConfigError, validate

    try:
        validate(config)
    except ConfigError as err:  # "invalid <option>=<value>: <allowed>" -> name the flag
        msg = " ".join(str(err).split())
        raise UsageError("invalid --config." + msg[len("invalid "):] if msg.startswith("invalid ") else msg) from None
    except ValueError as err:  # envs.check_* raise ValueError naming the option and the allowed values
        raise UsageError(" ".join(str(err).split())) from None


def flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def config_conflicts(saved: Dict[str, Any], resolved: Dict[str, Any]) -> List[str]:
    """``key=new (saved: old)`` for every field that differs."""
    a, b = flatten(saved), flatten(resolved)
    return [f"{k}={b.get(k)!r} (saved: {a.get(k)!r})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _has_run(workdir: str) -> List[str]:
    return [name for name in RUN_FILES if os.path.exists(os.path.join(workdir, name))]


def _check_writable(workdir: str, create: bool) -> None:
    """The work dir exists (or can be created) and accepts files; never touches existing files."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UsageError(f"invalid --workdir={workdir!r}: exists and is not a directory")
    if not os.path.exists(workdir):
        if not create:
            raise UsageError(f"invalid --workdir={workdir!r}: does not exist (nothing to resume)")
        try:
            os.makedirs(workdir, exist_ok=True)  # the processes of a multi-host run race here
        except OSError as err:
            raise UsageError(f"invalid --workdir={workdir!r}: cannot create it ({err.strerror}); "
                             "choose a writable directory") from None
    try:
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UsageError(f"invalid --workdir={workdir!r}: not writable ({err.strerror}); "
                         "choose a writable directory") from None


def _resume_plan(fv, workdir: str):
    from sparse_rl_jax import checkpoint, runs
    from sparse_rl_jax import config as cfg_lib
    from sparse_rl_jax import run_logging

    if not os.path.isdir(workdir):
        raise UsageError(f"invalid --workdir={workdir!r} with --resume: no such directory (nothing to resume)")
    try:
        meta = checkpoint.read_meta(workdir)
    except checkpoint.CheckpointError as err:
        raise UsageError(f"--resume: {err}") from None
    saved = meta["config"]
    config_json = os.path.join(workdir, "config.json")
    if os.path.exists(config_json):
        try:
            saved = run_logging.read_json(config_json)
        except (OSError, ValueError) as err:
            raise UsageError(f"--resume: {config_json} is unreadable ({err}); cannot check the flags against "
                             "the saved run") from None
    if fv["config"].value is not None:
        config = _config_from_flag(fv["config"].value)
        conflicts = config_conflicts(saved, cfg_lib.to_dict(config))
        if conflicts:
            shown = "; ".join(conflicts[:6]) + (f"; and {len(conflicts) - 6} more" if len(conflicts) > 6 else "")
            raise UsageError(f"--resume: the flags conflict with the run saved in {workdir}: {shown}. Resume "
                             "with the saved config (drop --config and its overrides) or use a new --workdir")
    else:
        try:
            config = cfg_lib.from_dict(saved)
        except (TypeError, ValueError) as err:
            raise UsageError(f"--resume: {config_json} holds an invalid config ({err})") from None
    _validate(config)
    seeds = fv["seeds"].value
    if seeds is not None and seeds != meta["num_seeds"]:
        raise UsageError(f"--resume: invalid --seeds={seeds}: the run saved in {workdir} has "
                         f"{meta['num_seeds']} seeds (omit --seeds or pass --seeds {meta['num_seeds']})")
    saved_shards = int(meta.get("data_shards", 0))
    if fv["data_shards"].present and fv["data_shards"].value != saved_shards:
        raise UsageError(f"--resume: invalid --data_shards={fv['data_shards'].value}: the run saved in {workdir} "
                         f"has data_shards={saved_shards} (omit --data_shards or pass --data_shards {saved_shards})")
    _check_writable(workdir, create=False)
    try:
        restored = runs.restore(workdir)
    except checkpoint.CheckpointError as err:
        raise UsageError(f"--resume: {err}") from None
    return config, restored.num_seeds, restored


def plan_run(fv: flags.FlagValues) -> Plan:
    """Resolve and check everything; raise `UsageError` before any compilation or any write."""
    if "://" in fv["workdir"].value:  # os.path would silently make a local directory named "gs:"
        raise UsageError(f"invalid --workdir={fv['workdir'].value!r}: must be a file-system path; mount remote "
                         "storage first (e.g. a GCS bucket with gcsfuse) and pass the mounted path")
    workdir = os.path.abspath(fv["workdir"].value)
    if fv["resume"].value:
        config, seeds, restored = _resume_plan(fv, workdir)
        shards = restored.data_shards
        sharded = check_layout(config, seeds, shards)
    else:
        if fv["config"].value is None:
            raise UsageError("--config is required for a new run, e.g. --config=experiments/configs/preset.py:rlx2,td3 "
                             "(or pass --resume to continue the run in --workdir)")
        config = _config_from_flag(fv["config"].value)
        _validate(config)
        seeds, restored, shards = fv["seeds"].value or 1, None, fv["data_shards"].value
        sharded = check_layout(config, seeds, shards)  # before the work dir is created
        existing = _has_run(workdir) if os.path.isdir(workdir) else []
        if existing:
            raise UsageError(f"invalid --workdir={workdir!r}: it already holds a run ({', '.join(existing)}); "
                             "pass --resume to continue it, or choose a new --workdir (nothing was changed)")
        _check_writable(workdir, create=True)
    return Plan(config, workdir, seeds, restored, fv["checkpoint_every"].value, fv["keep_checkpoints"].value,
                fv["plots"].value, shards, sharded)


def check_layout(config, seeds: int, data_shards: int) -> bool:
    """Check that the seeds (or data shards) map onto the devices; True if the run needs a device mesh."""
    import jax

    dist = dist_lib()
    devices = jax.device_count()
    if data_shards:
        try:
            dist.shard_config(config, data_shards)
        except dist.ScaleError as err:  # "invalid env.num_envs=6: must be a multiple of data_shards=4"
            msg = " ".join(str(err).split()).replace("invalid ", "invalid --config.", 1)
            raise UsageError(msg.replace("data_shards=", "--data_shards=")) from None
        if data_shards % devices:
            raise UsageError(f"invalid --data_shards={data_shards}: must be a multiple of the {devices} devices "
                             "(data-parallel runs put every device on the data axis)")
        return True
    if seeds % devices:
        raise UsageError(f"invalid --seeds={seeds}: the seeds are sharded over all {devices} devices, so --seeds "
                         f"must be a multiple of {devices} (use --seeds {-(-seeds // devices) * devices}), or pass "
                         f"--data_shards {devices} to split each seed's envs, replay and batch over the devices")
    return devices > 1


# ---------------------------------------------------------------------------- running
def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def check_finite(entry: List[Any], states, num_seeds: int, chunk: int) -> None:
    """Raise `NonFiniteError` naming the network and the step if a loss or any agent value (params,
    targets, optimizer moments, temperature, importance) is NaN/inf."""
    import jax
    import numpy as np

    steps, metrics = entry
    where = f"env step {steps:,} (evaluation period {chunk}, gradient update {metrics.get('training/updates')})"
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


class Hook:
    """The launcher's period callback (`runner.PeriodResult`): log, print, check, checkpoint, stop."""

    def __init__(self, plan: Plan, log, trainer, total_chunks: int, per_chunk_steps: int,
                 stop: Optional[StopRequest] = None):
        self.plan, self.log, self.trainer = plan, log, trainer
        self.stop = stop if stop is not None else StopRequest()
        self.total_chunks, self.per_chunk_steps = total_chunks, per_chunk_steps
        self.start = self.last = time.perf_counter()
        self.last_checkpoint: Optional[str] = None
        self.calls = 0

    def __call__(self, period) -> None:
        from sparse_rl_jax import checkpoint, run_logging
        from sparse_rl_jax import metrics as metrics_lib

        plan, chunk, states = self.plan, period.period, period.states
        env_steps, metrics = period.env_steps, period.metrics
        view = host_agent(plan, states)  # every process takes part in the gather
        metrics = {**metrics, **metrics_lib.layer_densities(self.trainer, view, plan.num_seeds)}
        entry = self.log.append(env_steps, metrics)
        now = time.perf_counter()
        # The first period of a process includes compilation: no rate or estimate from it.
        rate = self.per_chunk_steps / max(now - self.last, 1e-9) if self.calls else None
        self.last, self.calls = now, self.calls + 1
        total = self.total_chunks * self.per_chunk_steps
        remaining = max(total - env_steps, 0) / rate if rate else None
        if self.log.write:
            print(run_logging.format_progress(entry, total, chunk, self.total_chunks, rate, now - self.start,
                                              remaining, plan.num_seeds), flush=True)
        try:
            check_finite(entry, view, plan.num_seeds, chunk)
        except NonFiniteError as err:
            kept = self.last_checkpoint or _newest_checkpoint(plan.workdir)
            raise NonFiniteError(f"{err}; last good checkpoint: {kept or 'none yet'}") from None
        stopping = self.stop.agreed() and chunk < self.total_chunks
        if chunk % plan.checkpoint_every == 0 or chunk == self.total_chunks or stopping:
            # sharded runs save host copies: the layout on disk does not depend on the devices
            saved = dist_lib().to_host(states) if plan.sharded else states
            self.last_checkpoint = checkpoint.save(plan.workdir, chunk, saved, self.log.history, plan.config,
                                                   plan.num_seeds, keep=plan.keep, data_shards=plan.data_shards)
        if stopping:
            raise Terminated(f"stopped after period {chunk}/{self.total_chunks}, checkpoint {self.last_checkpoint}")


def host_agent(plan: Plan, states):
    """``states`` with its agent as host arrays (a collective gather on sharded runs; the other fields,
    which hold the big replay buffers, are left where they are)."""
    if not plan.sharded:
        return states
    return states.replace(agent=dist_lib().to_host(states.agent))


def _newest_checkpoint(workdir: str) -> Optional[str]:
    from sparse_rl_jax import checkpoint

    step = checkpoint.latest_step(workdir)
    return None if step is None else os.path.join(checkpoint.checkpoint_dir(workdir), str(step))


def _describe(config, num_seeds: int, total_chunks: int, per_chunk_steps: int) -> str:
    e, s = config.env, config.sparsity
    return (f"{config.method} {config.algo.upper()} on {e.name} ({e.backend}), {num_seeds} seed(s) from seed "
            f"{config.seed}, sparsity actor {s.actor:g} critic {s.critic:g}; {total_chunks * per_chunk_steps:,} "
            f"env steps in {total_chunks} evaluation periods of {per_chunk_steps:,}")


def _describe_layout(plan: Plan) -> str:
    import jax

    where = f"{jax.device_count()} {jax.devices()[0].platform} device(s)"
    if jax.process_count() > 1:
        where += f" in {jax.process_count()} processes"
    if plan.data_shards:
        return f"data-parallel, {plan.data_shards} shards per seed over {where}"
    return f"seeds sharded over {where}" if plan.sharded else f"one program on {where}"


def execute(plan: Plan, stop: Optional[StopRequest] = None) -> Dict[str, Any]:
    """Train (or finish) the planned run and write every output; returns the summary."""
    from sparse_rl_jax import config as cfg_lib
    from sparse_rl_jax import metrics as metrics_lib
    from sparse_rl_jax import plotting, run_logging
    from sparse_rl_jax import runner as runner_lib
    from sparse_rl_jax import trainer as trainer_lib

    config, workdir, restored = plan.config, plan.workdir, plan.restored
    primary = dist_lib().is_primary()
    say = print if primary else (lambda *args, **kwargs: None)
    _barrier("sparse_rl_jax: every process checked the work dir")  # before process 0 writes into it
    if restored is None and primary:
        run_logging.write_json(os.path.join(workdir, "config.json"), cfg_lib.to_dict(config))
    runner = runner_lib.Runner(config, plan.data_shards)  # one device is a one-device mesh
    trainer = runner.trainer
    total_chunks = trainer_lib.num_chunks(config)
    per_chunk_steps = trainer_lib.chunk_iterations(config) * config.env_steps_per_iteration
    start_chunk = restored.step if restored else 0
    log = run_logging.RunLog(workdir, plan.num_seeds, history=restored.history if restored else None,
                             write=primary)
    say(f"run: {_describe(config, plan.num_seeds, total_chunks, per_chunk_steps)}", flush=True)
    say(f"layout: {_describe_layout(plan)}", flush=True)
    say(f"workdir: {workdir}", flush=True)
    try:
        if start_chunk < total_chunks:
            what = f"resuming after period {start_chunk}/{total_chunks}" if restored else "starting"
            say(f"{what}; compiling (the first period takes longer)...", flush=True)
            hook = Hook(plan, log, trainer, total_chunks, per_chunk_steps, stop)
            states = _train(plan, runner, hook)
        else:
            say(f"the run is complete ({total_chunks} periods); rewriting summary and plots", flush=True)
            states = restored.states
    finally:
        log.close()
    if not primary:
        return {}
    summary = metrics_lib.summarize(config, log.history, trainer, states, plan.num_seeds)
    run_logging.write_json(os.path.join(workdir, "summary.json"), summary)
    print("\n" + run_logging.format_summary(summary), flush=True)
    if plan.plots:
        label = f"{config.method} {config.algo.upper()}"
        rlx2 = config.replay.dynamic or config.replay.nstep > 1
        paths = plotting.run_plots(workdir, log.history, metrics_lib.final_masks(trainer, states), label, rlx2)
        print(f"\nplots: {', '.join(_show(p) for p in paths)}", flush=True)
    print(f"summary: {_show(os.path.join(workdir, 'summary.json'))}", flush=True)
    return summary


def _train(plan: Plan, runner, hook: Hook):
    """Run the remaining periods; returns the final states (sharded runs: host copy of the agent)."""
    restored = plan.restored
    dist = dist_lib()
    states = None
    if restored is not None:  # host values -> this run's mesh (any device count: checkpoints are host data)
        states = dist.to_global(restored.states, runner.mesh, dist.state_spec(plan.data_shards))
    result = runner.train(plan.num_seeds, states=states, start_chunk=restored.step if restored else 0,
                          history=restored.history if restored else None, callbacks=[hook])
    return host_agent(plan, result.states)


def _barrier(name: str) -> None:
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _show(path: str) -> str:
    """Relative to the current directory when inside it, else absolute."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def main(argv: Sequence[str]) -> int:
    """CLI entry; ``argv[0]`` is the program name. Returns the exit status."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    if any(a in ("-h", "--help", "--helpshort") for a in argv[1:]):
        print(__doc__.split("\n\n", 2)[1] + "\n\n" + define_flags().get_help())
        return 0
    try:
        fv = parse_flags(argv)
        start_distributed(fv)
        plan = plan_run(fv)
    except UsageError as err:
        print(f"train: error: {err}", file=sys.stderr, flush=True)
        return USAGE_ERROR
    stop = StopRequest()
    previous = _on_sigterm(stop)
    try:
        execute(plan, stop)
    except NonFiniteError as err:
        print(f"train: stopped: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        return DIVERGED
    except (KeyboardInterrupt, Terminated) as err:
        # Ctrl-C stops at once: checkpoints are atomic, one cut short is never listed, the previous stays
        what = f"terminated (SIGTERM), {err}" if isinstance(err, Terminated) else "interrupted"
        print(f"train: {what}; continue with: python -m experiments.train --workdir {plan.workdir} --resume",
              file=sys.stderr, flush=True)
        return TERMINATED if isinstance(err, Terminated) else INTERRUPTED
    finally:
        _on_sigterm(previous)
    return 0


def _on_sigterm(handler):
    """Install a SIGTERM handler, returning the previous one (a no-op off the main thread, where Python
    cannot install handlers: `main` called from a worker thread keeps the default behaviour)."""
    if handler is None:
        return None
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv))
