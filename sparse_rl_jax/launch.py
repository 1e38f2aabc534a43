"""Launching runs: the one path of the launchers (`experiments/train.py`, `experiments/sweep.py`).

1. `main`: print the help, or parse and plan (a launcher's own ``plan(argv)``: every check, no
   compilation, no write; bad input is a `cli.UsageError`, printed as one line with exit status 2),
   then execute under a SIGTERM stop request (`callbacks.sigterm_sets`) and turn every ending into the
   exit status: 0 done, 1 diverged, 130 interrupted, 143 terminated.
2. Planning a training run (`plan_run` of a `Request`): a fresh run's work dir (a path, writable, holding
   no run), a resumed run's checkpoint and saved config (the flags must not conflict with it), the device
   layout (`check_layout`), the config (`config_flag.check`).
3. Executing it (`execute`): the remaining periods through `runner.Runner` with `callbacks.RunCallback`,
   then ``summary.json`` and the plots. The files of a run (`write_config`, `write_summary`, `write_run`)
   are written the same way for a launcher run and a sweep cell.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
from absl import flags
from absl import logging as absl_logging
from jax.experimental import multihost_utils

from sparse_rl_jax import callbacks, checkpoint, cli, config_flag, envs, plotting, run_logging, runlock, runs
from sparse_rl_jax import config as cfg_lib
from sparse_rl_jax import distributed as dist
from sparse_rl_jax import metrics as metrics_lib
from sparse_rl_jax import runner as runner_lib
from sparse_rl_jax import trainer as trainer_lib
from sparse_rl_jax.cli import UsageError

RUN_FILES = ("config.json", "summary.json", "checkpoints", "metrics", "tensorboard", "plots")


# ---------------------------------------------------------------------------- the launchers' main
def main(program: str, argv: Sequence[str], *, doc: str, help_flags: Callable[[], Sequence[flags.FlagValues]],
         plan: Callable[[Sequence[str]], Any], execute: Callable[[Any, callbacks.StopRequest], Any],
         continue_with: Callable[[Any], str]) -> int:
    """Plan ``argv`` (``argv[0]`` is the program name), execute the plan, return the exit status."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    if cli.wants_help(argv):
        print(cli.help_text(doc, *help_flags()))
        return 0
    try:
        planned = plan(argv)
    except UsageError as err:
        return cli.error(program, err)
    with callbacks.sigterm_sets(callbacks.StopRequest()) as stop:
        try:
            execute(planned, stop)
        except (callbacks.NonFiniteError, callbacks.ReplicaMismatchError) as err:
            print(f"{program}: stopped: {cli.one_line(err)}", file=sys.stderr, flush=True)
            return cli.DIVERGED
        except (KeyboardInterrupt, callbacks.Terminated) as err:
            # Ctrl-C stops at once: checkpoints are atomic, one cut short is never listed, the previous stays
            terminated = isinstance(err, callbacks.Terminated)
            what = f"terminated (SIGTERM), {err}" if terminated else "interrupted"
            print(f"{program}: {what}; continue with: {continue_with(planned)}", file=sys.stderr, flush=True)
            return cli.TERMINATED if terminated else cli.INTERRUPTED
        except Exception as err:
            # disk full, quota, permissions: a checkpoint that failed mid-save is an orbax temporary directory,
            # never listed, so every earlier checkpoint stays readable
            failure = cli.write_failure(err)
            gone = cli.peer_failure(err) if failure is None and cli.distributed_run() else None
            if gone is not None:
                print(f"{program}: stopped: another process of the distributed run failed or left ({gone}); "
                      f"{last_good_checkpoint(planned)}; fix the failed host, then start every process "
                      f"again with --resume: {continue_with(planned)}", file=sys.stderr, flush=True)
                return cli.PEER_FAILED
            if failure is None:
                raise
            report = checkpoint.save_report(err)
            # the writers' threads (orbax, tensorstore, tensorboardX's flusher and its exit hook) go on
            # reporting the failed writes until the process ends: into a file, not on the user's screen
            late = report or cli.report_file(program)
            out = cli.divert_stderr(late or os.devnull)
            where = (f"{checkpoint.SAVE_REPORT_NOTE}{report}" if report else
                     f"the libraries' later reports: {late}" if late else "")
            print(f"{program}: stopped: {cli.describe_write_failure(failure)}; {last_good_checkpoint(planned)}; "
                  f"make room or fix the permissions, then continue with: {continue_with(planned)}"
                  + (f" ({where})" if where else ""), file=out, flush=True)
            return cli.IO_ERROR
    return 0


def last_good_checkpoint(planned: Any) -> str:
    """Where a stopped run would continue from, in words (the newest finalised checkpoint)."""
    workdir = getattr(planned, "workdir", None)
    newest = checkpoint.newest_path(workdir) if workdir else None
    return f"the last good checkpoint is {newest}" if newest else "no checkpoint was written yet"


def start_distributed(fv: flags.FlagValues) -> None:
    """Join the multi-host run (`jax.distributed`) if the flags ask for one; before any JAX computation
    (importing JAX computes nothing)."""
    try:
        dist.initialize_from_flag_values(fv)
    except dist.ScaleError as err:
        raise UsageError(cli.one_line(err)) from None
    except (RuntimeError, ValueError) as err:  # the runtime could not start or reach the coordinator
        raise UsageError(f"could not join the distributed run at --coordinator_address="
                         f"{fv['coordinator_address'].value!r}: {cli.one_line(err)[:300]}") from None


def local_path(path: str, flag: str = "--workdir") -> str:
    """``path`` made absolute; `UsageError` for a URL (os.path would make a local directory "gs:")."""
    if "://" in path:
        raise UsageError(f"invalid {flag}={path!r}: must be a file-system path; mount remote storage first "
                         "(e.g. a GCS bucket with gcsfuse) and pass the mounted path")
    return os.path.abspath(path)


def check_workdir(path: str, create: bool, flag: str = "--workdir") -> str:
    """The absolute work dir; it exists (or is created: ``create``) and accepts files. Existing files
    are never touched."""
    workdir = local_path(path, flag)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UsageError(f"invalid {flag}={workdir!r}: exists and is not a directory")
    if not os.path.exists(workdir):
        if not create:
            raise UsageError(f"invalid {flag}={workdir!r}: does not exist (nothing to resume)")
        try:
            os.makedirs(workdir, exist_ok=True)  # the processes of a multi-host run race here
        except OSError as err:
            raise UsageError(f"invalid {flag}={workdir!r}: cannot create it ({err.strerror}); "
                             "choose a writable directory") from None
    try:
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UsageError(f"invalid {flag}={workdir!r}: not writable ({err.strerror}); "
                         "choose a writable directory") from None
    return workdir


# ---------------------------------------------------------------------------- planning a run
@dataclasses.dataclass(frozen=True)
class Request:
    """What the command line asks for (`experiments/train.py`'s flags)."""
    workdir: str
    config: Optional[cfg_lib.Config]  # None: only with resume (the saved config)
    resume: bool = False
    seeds: Optional[int] = None  # None: 1, or the saved number
    data_shards: Optional[int] = None  # None: not given (0, or the saved value)
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    plots: bool = True
    extend_to: Optional[int] = None  # with resume: continue the run to this many env steps (`extend`)
    sparsity_levels: Tuple[float, ...] = ()  # every seed at each level, in one program (`LEVELS_FILE`)


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
    lock: Optional[runlock.RunLock] = None  # the work dir's writer lock (process 0), held until execute ends
    extension: Optional[Dict[str, Any]] = None  # this launch extends the run (`extend`): what it records
    sparsity_levels: Tuple[float, ...] = ()  # entry ``l * seeds_per_level + s``: seed s at level l

    @property
    def seeds_per_level(self) -> int:
        return self.num_seeds // max(len(self.sparsity_levels), 1)

    @property
    def run(self) -> cfg_lib.RunSpec:
        if not self.sparsity_levels:
            return cfg_lib.RunSpec.consecutive(self.config, self.num_seeds, self.workdir, self.data_shards)
        seeds = tuple(range(self.config.seed, self.config.seed + self.seeds_per_level))
        return cfg_lib.RunSpec(self.config, seeds * len(self.sparsity_levels), self.workdir, self.data_shards)

    def level_runs(self) -> List[Tuple[cfg_lib.RunSpec, List[int]]]:
        """Per sparsity level, the run it is on its own (its config at that level, its seeds, the work
        dir's `level_dir`) and its entries in this program."""
        n = self.seeds_per_level
        return [(cfg_lib.RunSpec.consecutive(level_config(self.config, level), n, level_dir(self.workdir, level)),
                 list(range(i * n, (i + 1) * n))) for i, level in enumerate(self.sparsity_levels)]


# ---------------------------------------------------------------------------- sparsity levels in one program
LEVELS_FILE = "sparsity_levels.json"


def level_config(config, level: float):
    """``config`` at one uniform sparsity level (actor and critic)."""
    return cfg_lib.replace(config, **{"sparsity.actor": level, "sparsity.critic": level})


def level_dir(workdir: str, level: float) -> str:
    """Where a levels run writes one level's own run (config, metrics, summary) when it ends."""
    return os.path.join(workdir, f"level_{level:g}")


def check_levels(config, levels: Sequence[float], data_shards: int) -> Tuple[float, ...]:
    """The levels a run may vmap: each in (0, 1), distinct, on a sparse config whose levels are its own
    (not DS's ER lambdas, which set the densities instead), seeds on the devices."""
    flag = f"--sparsity_levels={','.join(f'{v:g}' for v in levels)}"
    if any(not 0.0 < v < 1.0 for v in levels) or len(set(levels)) != len(levels):
        raise UsageError(f"invalid {flag}: give distinct sparsity levels between 0 and 1 (exclusive), e.g. "
                         "0.8,0.95,0.98")
    s = config.sparsity
    if s.er_lambdas is not None or s.actor <= 0.0 or s.critic <= 0.0:
        what = "ER lambdas set its densities" if s.er_lambdas is not None else "it is dense"
        raise UsageError(f"invalid {flag}: the config's method {config.method!r} has no sparsity level to vary "
                         f"({what}); use a sparse method with uniform levels (static, set, rigl, rlx2)")
    if data_shards:
        raise UsageError(f"invalid {flag} with --data_shards={data_shards}: levels are vmapped beside the seeds; "
                         "run them without --data_shards")
    return tuple(float(v) for v in levels)


def lock_workdir(workdir: str) -> Optional[runlock.RunLock]:
    """Take the work dir's writer lock on the process that writes it (`runlock`); `UsageError` when another
    live process holds it."""
    if not dist.is_primary():
        return None
    try:
        return runlock.RunLock(workdir).acquire()
    except runlock.RunLocked as err:
        raise UsageError(f"invalid --workdir: {err}") from None
    except OSError as err:
        raise UsageError(f"invalid --workdir={workdir!r}: cannot take its writer lock ({err.strerror})") from None


def plan_run(request: Request) -> Plan:
    """Resolve and check everything; raise `UsageError` before any compilation or any write. The plan
    holds the work dir's writer lock (`lock_workdir`); a plan that fails releases it before raising."""
    workdir = local_path(request.workdir)
    extension = None
    if request.extend_to is not None and not request.resume:
        raise UsageError(f"invalid --extend_to={request.extend_to}: it extends a saved run; pass --resume too")
    if request.resume:
        if not os.path.isdir(workdir):
            raise UsageError(f"invalid --workdir={workdir!r} with --resume: no such directory (nothing to resume)")
        lock = lock_workdir(workdir)  # before the checkpoint is read: a live writer may be adding one
        with _released_on_error(lock):
            config, seeds, restored = _resume_plan(request, workdir)
            levels = _saved_levels(workdir, request.sparsity_levels)
            per_level = seeds // max(len(levels), 1)
            _check_resumed_seeds(request.seeds, per_level, len(levels), workdir)
            if request.extend_to is not None:
                config, extension = extend(config, request.extend_to, restored)
            shards = restored.data_shards
            sharded = check_layout(config, per_level, shards, len(levels))
    else:
        if request.config is None:
            raise UsageError("--config is required for a new run, e.g. --config=experiments/configs/preset.py:rlx2,td3 "
                             "(or pass --resume to continue the run in --workdir)")
        config = config_flag.check(request.config)
        seeds, restored, shards = request.seeds or 1, None, request.data_shards or 0
        levels = check_levels(config, request.sparsity_levels, shards) if request.sparsity_levels else ()
        sharded = check_layout(config, seeds, shards, len(levels))  # before the work dir is created
        seeds *= max(len(levels), 1)  # the program's entries
        _check_no_run(workdir)  # first without the lock: a work dir holding a run is left untouched
        check_workdir(workdir, create=True)
        lock = lock_workdir(workdir)
        with _released_on_error(lock):
            _check_no_run(workdir)  # again under the lock: a launch racing this one may have started meanwhile
    return Plan(config, workdir, seeds, restored, request.checkpoint_every, request.keep_checkpoints,
                request.plots, shards, sharded, lock, extension, levels)


def _check_resumed_seeds(asked: Optional[int], saved: int, levels: int, workdir: str) -> None:
    """``--seeds`` on resume must be the saved run's (seeds at each level, for a levels run)."""
    if asked is not None and asked != saved:
        where = f" at each of its {levels} sparsity levels" if levels else ""
        raise UsageError(f"--resume: invalid --seeds={asked}: the run saved in {workdir} has {saved} seeds{where} "
                         f"(omit --seeds or pass --seeds {saved})")


def _saved_levels(workdir: str, asked: Sequence[float]) -> Tuple[float, ...]:
    """The sparsity levels of the run saved in ``workdir`` (none: a plain run); `UsageError` when
    ``--sparsity_levels`` asks for others."""
    path = os.path.join(workdir, LEVELS_FILE)
    saved = tuple(run_logging.read_json(path)["sparsity_levels"]) if os.path.exists(path) else ()
    if asked and tuple(asked) != saved:
        raise UsageError(f"--resume: invalid --sparsity_levels={','.join(f'{v:g}' for v in asked)}: the run saved "
                         f"in {workdir} has " + (f"levels {','.join(f'{v:g}' for v in saved)}" if saved else
                                                  "no sparsity levels") + " (omit --sparsity_levels)")
    return saved


EXTENSIONS = "extensions.json"


def extend(config, extend_to: int, restored) -> tuple:
    """The config of a run continued to ``extend_to`` env steps, and the record of the extension.

    The rule: schedules that are fractions of the run (`TopologyConfig.schedule_env_steps`: the topology
    stop and stop margin, the cosine drop-fraction decay, GMP's window, DS's last prune-only event) keep
    the length the run was planned for, so what already ran is exactly what a run planned that way runs,
    and the added steps continue at each schedule's end value (topology frozen where it had stopped, final
    sparsity, n-step targets as switched). Step counts (periods, n-step switch, buffer checks) are counts
    and simply go on."""
    if extend_to <= config.total_env_steps:
        raise UsageError(f"invalid --extend_to={extend_to}: the run in its work dir is planned for "
                         f"{config.total_env_steps:,} env steps; give a larger budget")
    planned = config.topology.schedule_env_steps or config.total_env_steps
    extended = cfg_lib.replace(config, total_env_steps=extend_to, **{"topology.schedule_env_steps": planned})
    config_flag.check(extended)
    record = {"from_env_steps": config.total_env_steps, "to_env_steps": extend_to,
              "schedules_planned_for_env_steps": planned, "at_checkpoint": restored.period,
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return extended, record


@contextlib.contextmanager
def _released_on_error(lock: Optional[runlock.RunLock]):
    # a raised error keeps this frame (and the lock in it) alive in its traceback: release it explicitly
    try:
        yield
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _check_no_run(workdir: str) -> None:
    existing = [name for name in RUN_FILES if os.path.exists(os.path.join(workdir, name))]
    if existing:
        raise UsageError(f"invalid --workdir={workdir!r}: it already holds a run ({', '.join(existing)}); "
                         "pass --resume to continue it, or choose a new --workdir (nothing was changed)")


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


def _resume_plan(request: Request, workdir: str):
    check_workdir(workdir, create=False)
    try:
        restored = runs.restore(workdir)  # the newest readable checkpoint (newer unreadable ones: .skipped)
    except checkpoint.CheckpointError as err:
        raise UsageError(f"--resume: {err}") from None
    saved = restored.config
    config_json = os.path.join(workdir, "config.json")
    if os.path.exists(config_json):
        try:
            saved = run_logging.read_json(config_json)
        except (OSError, ValueError) as err:
            raise UsageError(f"--resume: {config_json} is unreadable ({err}); cannot check the flags against "
                             "the saved run") from None
    if request.config is not None:
        config = request.config
        conflicts = config_conflicts(saved, cfg_lib.to_dict(config))
        if conflicts:
            shown = "; ".join(conflicts[:6]) + (f"; and {len(conflicts) - 6} more" if len(conflicts) > 6 else "")
            hint = (" (to continue a run to a larger budget: --resume --extend_to=N)"
                    if any(c.startswith("total_env_steps=") for c in conflicts) else "")
            raise UsageError(f"--resume: the flags conflict with the run saved in {workdir}: {shown}. Resume "
                             f"with the saved config (drop --config and its overrides) or use a new --workdir"
                             f"{hint}")
    else:
        try:
            config = cfg_lib.from_dict(saved)
        except (TypeError, ValueError) as err:
            raise UsageError(f"--resume: {config_json} holds an invalid config ({err})") from None
    config_flag.check(config)
    if request.data_shards is not None and request.data_shards != restored.data_shards:
        raise UsageError(f"--resume: invalid --data_shards={request.data_shards}: the run saved in {workdir} "
                         f"has data_shards={restored.data_shards} (omit --data_shards or pass --data_shards "
                         f"{restored.data_shards})")
    return config, restored.num_seeds, restored


def check_layout(config, seeds: int, data_shards: int, levels: int = 0) -> bool:
    """Check that the program's entries (``seeds``, times ``levels`` sparsity levels when there are any) or
    its data shards map onto the devices; True if the run needs a device mesh."""
    devices = jax.device_count()
    if data_shards:
        try:
            dist.shard_config(config, data_shards)
        except dist.NotAMultiple as err:  # named as the flags that set them
            raise UsageError(f"invalid --config.{err.field}={err.value}: must be a multiple of "
                             f"--data_shards={err.shards}") from None
        if data_shards % devices:
            raise UsageError(f"invalid --data_shards={data_shards}: must be a multiple of the {devices} devices "
                             "(data-parallel runs put every device on the data axis)")
        return True
    if levels:  # the program's entries are seeds x levels: they, not the seeds, are sharded
        if (seeds * levels) % devices:
            fits = next(n for n in range(seeds, seeds + devices + 1) if (n * levels) % devices == 0)
            raise UsageError(f"invalid --seeds={seeds}: with {levels} --sparsity_levels the program's "
                             f"{seeds * levels} entries (seeds x levels) are sharded over all {devices} devices, so "
                             f"seeds x levels must be a multiple of {devices} (use --seeds {fits})")
        return devices > 1
    if seeds % devices:
        raise UsageError(f"invalid --seeds={seeds}: the seeds are sharded over all {devices} devices, so --seeds "
                         f"must be a multiple of {devices} (use --seeds {-(-seeds // devices) * devices}), or pass "
                         f"--data_shards {devices} to split each seed's envs, replay and batch over the devices")
    return devices > 1


# ---------------------------------------------------------------------------- executing it
def execute(plan: Plan, stop: Optional[callbacks.StopRequest] = None) -> Dict[str, Any]:
    """Train (or finish) the planned run and write every output; returns the summary. The work dir's
    writer lock is released at the end, however the run ends."""
    try:
        return _execute(plan, stop)
    finally:
        if plan.lock is not None:
            plan.lock.release()


def _execute(plan: Plan, stop: Optional[callbacks.StopRequest]) -> Dict[str, Any]:
    config, workdir, restored = plan.config, plan.workdir, plan.restored
    primary = dist.is_primary()
    say = print if primary else (lambda *args, **kwargs: None)
    _barrier("sparse_rl_jax: every process checked the work dir")  # before process 0 writes into it
    if plan.lock is not None:
        plan.lock.announce()
    if restored is not None and restored.skipped and primary:
        for step, reason in restored.skipped:  # out of the way of this run's next save, never deleted
            where = checkpoint.set_aside(workdir, step)
            say(f"resume: skipped checkpoint {step}: {reason}; moved to {_show(where)}", flush=True)
        say(f"resume: continuing from checkpoint {restored.period}, the newest readable one", flush=True)
    if (restored is None or plan.extension is not None) and primary:
        write_config(workdir, config)
    if restored is None and plan.sparsity_levels and primary:
        run_logging.write_json(os.path.join(workdir, LEVELS_FILE), {
            "sparsity_levels": list(plan.sparsity_levels), "seeds_per_level": plan.seeds_per_level,
            "entry": "level index * seeds_per_level + seed index (each level's seeds use the keys of a plain "
                     "run's seeds)"})
    if plan.extension is not None and primary:
        path = os.path.join(workdir, EXTENSIONS)
        done = run_logging.read_json(path) if os.path.exists(path) else []
        run_logging.write_json(path, done + [plan.extension])
        say(f"extend: from {plan.extension['from_env_steps']:,} to {plan.extension['to_env_steps']:,} env "
            f"steps; schedules stay laid out over {plan.extension['schedules_planned_for_env_steps']:,} "
            f"(recorded in {EXTENSIONS})", flush=True)
    runner = runner_lib.Runner(config, plan.data_shards)  # one device is a one-device mesh
    trainer = runner.trainer
    total_periods = trainer_lib.num_periods(config)
    period_env_steps = trainer_lib.chunk_iterations(config) * config.env_steps_per_iteration
    start_period = restored.period if restored else 0
    log = run_logging.RunLog(workdir, plan.num_seeds, history=restored.history if restored else None,
                             write=primary)
    say(f"run: {_describe(config, plan.num_seeds, total_periods, period_env_steps)}", flush=True)
    if plan.sparsity_levels:
        say(f"levels: {plan.seeds_per_level} seed(s) at each of the sparsity levels "
            f"{', '.join(f'{v:g}' for v in plan.sparsity_levels)} (actor and critic) in one program; each "
            f"level's run is written to {_show(level_dir(workdir, plan.sparsity_levels[0]))} and beside it at "
            "the end", flush=True)
    say(f"layout: {_describe_layout(plan)}", flush=True)
    say(f"workdir: {workdir}", flush=True)
    failed = True
    try:
        if start_period < total_periods:
            what = f"resuming after period {start_period}/{total_periods}" if restored else "starting"
            say(f"{what}; compiling (the first period takes longer)...", flush=True)
            hook = callbacks.RunCallback(plan, log, stop)
            states = None
            if restored is not None:  # host values -> this run's mesh (any device count: checkpoints are host data)
                states = dist.to_global(restored.states, runner.mesh, dist.state_spec(plan.data_shards))
            result = runner.train(plan.num_seeds, states=states, start_period=start_period,
                                  history=restored.history if restored else None, callbacks=[hook],
                                  **_level_args(plan))
            states = callbacks.host_agent(plan.sharded, result.states)
        else:
            say(f"the run is complete ({total_periods} periods); rewriting summary and plots", flush=True)
            states = restored.states
        failed = False
    finally:
        log.close(check=not failed)
    if not primary:
        return {}
    levels = []
    for run, entries in plan.level_runs():  # each level's own run, as if it had run alone (before the
        # run's summary.json, whose presence marks it done)
        level = write_entries(run, log.history, entries, plan.num_seeds, trainer, states.agent)
        levels.append(f"level {run.config.sparsity.actor:g}: final return {level['mean']['final_return']:.1f} "
                      f"({_show(run.workdir)})")
    summary = write_summary(plan.run, log.history, trainer, states.agent)
    print("\n" + run_logging.format_summary(summary), flush=True)
    for line in levels:
        print(line, flush=True)
    if plan.plots:
        label = f"{config.method} {config.algo.upper()}"
        rlx2 = config.replay.dynamic or config.replay.nstep > 1
        paths = plotting.run_plots(workdir, log.history, metrics_lib.final_masks(trainer, states.agent), label, rlx2)
        print(f"\nplots: {', '.join(_show(p) for p in paths)}", flush=True)
    print(f"summary: {_show(os.path.join(workdir, 'summary.json'))}", flush=True)
    return summary


def _level_args(plan: Plan) -> Dict[str, Any]:
    """A fresh levels run's per-entry keys and levels (a resumed run's states already hold them)."""
    if not plan.sparsity_levels or plan.restored is not None:
        return {}
    n = plan.seeds_per_level
    keys = np.tile(np.asarray(trainer_lib.seed_keys(plan.config.seed, n)), (len(plan.sparsity_levels), 1))
    per_entry = [level for level in plan.sparsity_levels for _ in range(n)]
    return {"keys": keys, "actor_sparsity": per_entry, "critic_sparsity": per_entry}


def write_config(workdir: str, config) -> None:
    run_logging.write_json(os.path.join(workdir, "config.json"), cfg_lib.to_dict(config))


def write_summary(run: cfg_lib.RunSpec, history, trainer, agent) -> Dict[str, Any]:
    """``summary.json`` of ``run`` (`metrics.summarize`, plus the platform and any extensions)."""
    summary = metrics_lib.summarize(run, history, trainer, agent)
    summary["platform"] = run_logging.platform_info()
    extensions = os.path.join(run.workdir, EXTENSIONS)
    if os.path.exists(extensions):
        summary["extensions"] = run_logging.read_json(extensions)
    run_logging.write_json(os.path.join(run.workdir, "summary.json"), summary)
    return summary


def write_run(run: cfg_lib.RunSpec, history, trainer, agent) -> Dict[str, Any]:
    """A finished run's files at once (a sweep cell): ``config.json``, the metric files, then
    ``summary.json`` last (its presence marks the run done)."""
    os.makedirs(run.workdir, exist_ok=True)
    write_config(run.workdir, run.config)
    log = run_logging.RunLog(run.workdir, run.num_seeds, tensorboard=False)
    for steps, metrics in history:
        log.append(steps, metrics)
    log.close()
    return write_summary(run, log.history, trainer, agent)


def write_entries(run: cfg_lib.RunSpec, history, entries: Sequence[int], total: int, trainer,
                  agent) -> Dict[str, Any]:
    """`write_run` of some entries of a program of ``total`` (a sweep cell, one level of a levels run):
    their slice of the history and of the (host) agent."""
    index = np.asarray(entries)
    return write_run(run, run_logging.slice_history(history, entries, total), trainer,
                     jax.tree.map(lambda x: x[index], agent))


def _describe(config, num_seeds: int, total_periods: int, period_env_steps: int) -> str:
    e, s = config.env, config.sparsity
    # with ER lambdas (DS) the densities follow from the lambdas, not from sparsity.actor / .critic
    levels = (f"ER lambdas {', '.join(f'{v:g}' for v in s.er_lambdas)}" if s.er_lambdas is not None
              else f"sparsity actor {s.actor:g} critic {s.critic:g}")
    backend = envs.resolve_backend(e.name, e.backend)
    return (f"{config.method} {config.algo.upper()} on {e.name} ({backend}), {num_seeds} seed(s) from seed "
            f"{config.seed}, {levels}; {total_periods * period_env_steps:,} "
            f"env steps in {total_periods} evaluation periods of {period_env_steps:,}")


def _describe_layout(plan: Plan) -> str:
    where = f"{jax.device_count()} {jax.devices()[0].platform} device(s)"
    if jax.process_count() > 1:
        where += f" in {jax.process_count()} processes"
    if plan.data_shards:
        return f"data-parallel, {plan.data_shards} shards per seed over {where}"
    return f"seeds sharded over {where}" if plan.sharded else f"one program on {where}"


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _show(path: str) -> str:
    """Relative to the current directory when inside it, else absolute."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel
