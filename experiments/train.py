"""Train one preset on one Brax task, several seeds vmapped in one program, into a work directory.

    python -m experiments.train --config=experiments/configs/preset.py:rlx2,td3 --workdir runs/rlx2 \\
        [--config.env.name=hopper] [--config.sparsity.actor=0.95] [--seeds 4] [--resume] \\
        [--checkpoint_every 1] [--keep_checkpoints 2] [--data_shards D] [--sparsity_levels 0.8,0.95] \\
        [--coordinator_address HOST:PORT --num_processes N --process_id I]

Every config field can be overridden with ``--config.<section>.<field>=value`` (``--config.env=NAME`` is
short for ``--config.env.name=NAME``); ``--config=experiments/configs/preset.py:<method>,<algo>`` picks any
preset by name. ``--resume`` continues the newest checkpoint of ``--workdir`` (``--config`` may then be
left out; if given, the resolved config must equal the saved one, field by field); a newer checkpoint
that cannot be read is skipped (and moved to ``checkpoints_unreadable/``) with a line saying so.
``--resume --extend_to N`` continues a run, finished or not, to N env steps, recorded in
``extensions.json``; schedules that are fractions of the run keep the budget they were planned for.

``--sparsity_levels 0.8,0.95`` runs every seed at each level (actor and critic) in the same program (the
levels are traced values) and writes each level's own run to ``<workdir>/level_<level>/`` at the end.

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
preemption: the period in progress is finished and checkpointed first); 74 a file of the run could not be
written (disk full, quota, permissions: one line naming the file and the last good checkpoint, which
stays readable, as does every earlier one); 75 another process of a multi-host run failed or left (this
one stops at once, naming the last good checkpoint). Continue with --resume.
Outputs: see ``docs/launcher.md``. The planning, the period callbacks and the outputs are
`sparse_rl_jax.launch`, `sparse_rl_jax.callbacks` and `sparse_rl_jax.config_flag`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

from absl import flags

from sparse_rl_jax import cli, config_flag, launch
from sparse_rl_jax import distributed as dist
from sparse_rl_jax.config import Config


def define_flags() -> flags.FlagValues:
    """The launcher's flags but ``--config`` (`config_flag`), on a fresh FlagValues."""
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "Work directory (created if missing).", flag_values=fv)
    flags.DEFINE_integer("seeds", None, "Number of seeds, vmapped in one program (default 1; with --resume "
                         "the saved number).", flag_values=fv)
    flags.DEFINE_boolean("resume", False, "Continue from the newest readable checkpoint in --workdir.",
                         flag_values=fv)
    flags.DEFINE_integer("extend_to", None, "With --resume: continue the run (finished or not) to this many env "
                         "steps; schedules keep the budget they were planned for (docs/launcher.md).",
                         flag_values=fv)
    flags.DEFINE_integer("checkpoint_every", 1, "Save a checkpoint every N evaluation periods (and always "
                         "after the last).", flag_values=fv)
    flags.DEFINE_integer("keep_checkpoints", 2, "Keep the newest K checkpoints.", flag_values=fv)
    flags.DEFINE_boolean("plots", True, "Write the PNG plots at the end.", flag_values=fv)
    flags.DEFINE_list("sparsity_levels", [], "Run every seed at each of these sparsity levels (actor and "
                      "critic, e.g. 0.8,0.95,0.98) in one program: seeds x levels entries; each level's own "
                      "run is written to <workdir>/level_<level>/ at the end (docs/launcher.md).", flag_values=fv)
    dist.define_flags(fv)  # --data_shards, --coordinator_address, --num_processes, --process_id, ...
    return fv


def parse_flags(argv: Sequence[str]) -> Tuple[flags.FlagValues, Optional[Config]]:
    """The parsed flags and the config ``argv`` asks for (not yet validated); `cli.UsageError` on bad input."""
    config, rest = config_flag.parse(argv)
    fv = cli.parse_args(define_flags(), rest)
    cli.require(fv, "workdir", "the directory that receives config, metrics, checkpoints")
    cli.at_least(fv, seeds=1, checkpoint_every=1, keep_checkpoints=1, data_shards=0, num_processes=1,
                 process_id=0, extend_to=1)
    return fv, config


def _levels(fv: flags.FlagValues) -> Tuple[float, ...]:
    try:
        return tuple(float(v) for v in fv["sparsity_levels"].value)
    except ValueError:
        raise cli.UsageError(f"invalid --sparsity_levels={','.join(fv['sparsity_levels'].value)}: expected "
                             "numbers between 0 and 1, e.g. 0.8,0.95,0.98") from None


def plan(argv: Sequence[str]) -> launch.Plan:
    fv, config = parse_flags(argv)
    levels = _levels(fv)
    launch.start_distributed(fv)  # before any JAX computation (the plan asks for the devices)
    return launch.plan_run(launch.Request(
        fv["workdir"].value, config, fv["resume"].value, fv["seeds"].value,
        fv["data_shards"].value if fv["data_shards"].present else None, fv["checkpoint_every"].value,
        fv["keep_checkpoints"].value, fv["plots"].value, fv["extend_to"].value, levels))


def main(argv: Sequence[str]) -> int:
    """CLI entry; ``argv[0]`` is the program name. Returns the exit status."""
    return launch.main("train", argv, doc=__doc__, help_flags=lambda: [config_flag.define(()), define_flags()],
                       plan=plan, execute=launch.execute,
                       continue_with=lambda p: f"python -m experiments.train --workdir {p.workdir} --resume")


if __name__ == "__main__":
    cli.run(main)
