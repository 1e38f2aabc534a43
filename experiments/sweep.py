"""A grid of runs (methods x sparsities x envs x seeds [x drop fractions x learning rates]) as vmapped batches.

    python -m experiments.sweep --workdir runs/sweep --algo td3 --methods static,rigl,rlx2 \\
        --sparsities 0.5,0.8,0.9,0.95 --envs inverted_pendulum,halfcheetah --seeds 3 \\
        [--drop_fractions 0.1,0.3,0.5] [--lrs 3e-4,1e-3] [--set total_env_steps=100000 --set env.num_envs=16] \\
        [--recipe ma2025] [--widths 64,128,256,512 [--matched]] \\
        [--max_batch 64] [--nodense] [--coordinator_address HOST:PORT --num_processes N --process_id I]

A *cell* is one (env, method, actor/critic sparsity, drop fraction, learning rate); it runs ``--seeds``
seeds and gets its own work directory ``<workdir>/<env>/<method>/<cell>/`` laid out like a launcher run
(``config.json`` with the cell's own values, ``metrics/seed_<i>.csv|jsonl``, ``summary.json``).

``--recipe`` puts a paper's settings (`sparse_rl_jax.presets.RECIPES`, e.g. Ma et al.'s SimBa SAC) over
every cell's preset. ``--widths`` makes it a scaling sweep: every cell once per critic width (every layer,
or every SimBa block, that wide; a separate compiled program per width), and ``--matched`` adds, per
width, the sparsity levels at which its critic has as many weights as each narrower dense critic. Beside
``results.md`` it writes ``scaling.md`` and ``scaling.png`` (return against the critic's weights, all and
active).

Cells of one (env, method) differ only in numbers, and every number here -- the seed, the actor and critic
sparsity, the drop fraction, the learning rate -- is a traced value of the compiled program, so each
(env, method) group is ONE compiled program vmapped over all its cells x seeds: a whole sparsity sweep
compiles once (`sparse_rl_jax.sweep`). ``--max_batch`` splits a big group into equal batches (the last
padded) that reuse that program. With several devices the batch is sharded over them (seed axis; padded to
a multiple of the device count); on several hosts pass the ``--coordinator_address/--num_processes/
--process_id`` flags and only process 0 writes.

Resumable: a cell is done when its ``summary.json`` exists; a rerun skips done cells and runs the rest. A
batch running checkpoints after every evaluation period (the newest kept, in ``<workdir>/_partial/``,
removed once its cells are written), so an interrupted group resumes from its last period. Static choices
(method, env, network sizes, step budgets) stay per group: cells that differ there compile separately.

At the end (and with ``--aggregate_only``) every cell's summary is collected into ``results.csv`` and
``results.md``: final return and AUC, mean and std over seeds, and both as a percentage of the dense run
of the same env (and learning rate, when swept); ``--nodense`` leaves the dense baseline out. A scaling
sweep also tests the claims its grid declares (`experiments.scaling_claims`: intervals, Holm, verdicts)
into ``claims.md`` / ``claims.csv``, and ``--markdown PAGE`` puts that table into PAGE's scaling section.

Exit status (as `experiments.train`): 0 done; 2 bad input (one line on stderr naming the flag and what is
allowed, before anything is compiled or written); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM: the
sweep stops at the end of the period in progress). Rerun the same command to continue.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import shlex
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import flags

from experiments import scaling_claims
from experiments.reproduce import records, report
from sparse_rl_jax import agents, cli, config_flag, envs, launch, presets, sweep
from sparse_rl_jax import config as cfg_lib
from sparse_rl_jax import distributed as dist
from sparse_rl_jax import methods as methods_lib
from sparse_rl_jax.cli import UsageError, one_line
from sparse_rl_jax.validation import ConfigError, validate


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "Sweep root directory (created if missing).", flag_values=fv)
    flags.DEFINE_enum("algo", "td3", list(agents.names()), "The agent (sparse_rl_jax.agents.AGENTS).",
                      flag_values=fv)
    flags.DEFINE_string("methods", "static,rigl,rlx2", "Comma-separated method presets.", flag_values=fv)
    flags.DEFINE_string("envs", "inverted_pendulum", "Comma-separated Brax env names.", flag_values=fv)
    flags.DEFINE_string("sparsities", "0.5,0.8,0.9", "Comma-separated levels; 'a:c' for actor:critic.",
                        flag_values=fv)
    flags.DEFINE_integer("seeds", 3, "Seeds per cell (0..N-1, plus --seed_offset).", flag_values=fv)
    flags.DEFINE_integer("seed_offset", 0, "First seed.", flag_values=fv)
    flags.DEFINE_string("drop_fractions", None, "Comma-separated drop fractions (default: the preset's).",
                        flag_values=fv)
    flags.DEFINE_string("lrs", None, "Comma-separated learning rates for actor and critic (default: preset).",
                        flag_values=fv)
    flags.DEFINE_multi_string("set", [], "Config override for every cell, e.g. --set total_env_steps=100000.",
                              flag_values=fv)
    flags.DEFINE_integer("max_batch", 0, "Max vmapped runs per compiled batch (0: a whole group at once).",
                         flag_values=fv)
    flags.DEFINE_boolean("dense", True, "Add the dense baseline of every env (needed for % of dense).",
                         flag_values=fv)
    flags.DEFINE_string("recipe", None, "A paper's settings over every cell's preset (presets.RECIPES: "
                        + ", ".join(presets.RECIPES) + ").", flag_values=fv)
    flags.DEFINE_string("widths", None, "Comma-separated critic widths (every layer or SimBa block): a scaling "
                        "sweep.", flag_values=fv)
    flags.DEFINE_boolean("matched", False, "With --widths: add, per width, the levels that match each narrower "
                         "dense critic's weights.", flag_values=fv)
    flags.DEFINE_boolean("aggregate_only", False, "Only rebuild results.csv / results.md.", flag_values=fv)
    flags.DEFINE_string("markdown", None, "With --widths: a page whose <!-- study:scaling begin/end --> section "
                        "the scaling claims' table fills (experiments.scaling_claims).", flag_values=fv)
    dist.define_flags(fv)  # --coordinator_address, --num_processes, --process_id, ... (and --data_shards)
    return fv


# ---------------------------------------------------------------------------- flag values
def _items(text: Optional[str]) -> List[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _floats(text: Optional[str]) -> List[Optional[float]]:
    values = [float(t) for t in _items(text)]
    return values or [None]


def parse_sparsities(text: str) -> List[Tuple[float, float]]:
    """``"0.5,0.9:0.85"`` -> ``[(0.5, 0.5), (0.9, 0.85)]`` (``actor:critic``, one value = both)."""
    out = []
    for item in _items(text):
        a, _, c = item.partition(":")
        out.append((float(a), float(c or a)))
    return out


def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """``["total_env_steps=20000", "agent.hidden=(64,64)"]`` -> dotted overrides (Python literals)."""
    out = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f"invalid --set {item!r}: expected key=value, e.g. --set total_env_steps=100000")
        why = config_flag.unknown_field(key.strip())
        if why:
            raise UsageError(f"invalid --set {item!r}: {why}")
        try:
            out[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = text.strip()
    return out


def _swept(fv: flags.FlagValues, name: str, parse: Callable, field: Tuple[type, str]) -> list:
    """``--name``'s values, each checked against the range declared for the config field they set."""
    text = fv[name].value
    try:
        values = parse(text)
    except ValueError:
        raise UsageError(f"invalid --{name}={text!r}: expected comma-separated numbers"
                         + (" ('actor:critic' for two levels)" if name == "sparsities" else "")) from None
    allowed = cfg_lib.allowed_values(field[0])[field[1]]
    for value in (v for entry in values for v in (entry if isinstance(entry, tuple) else (entry,))):
        if value is not None and not allowed.admits(value):
            raise UsageError(f"invalid --{name}={text!r}: {value:g} is not {allowed.describe()}")
    return values


# ---------------------------------------------------------------------------- plan
@dataclasses.dataclass(frozen=True)
class Plan:
    root: str
    algo: str
    cells: List[sweep.Cell]
    seeds: List[int]
    overrides: Dict[str, Any]
    recipe: Optional[str]
    max_batch: int
    aggregate_only: bool
    command: str  # to continue after an interruption
    lock: Any = None  # the sweep root's writer lock (process 0), held until execute ends
    matched: Optional[Dict[int, List[float]]] = None  # --matched: per width, the levels of `sweep.matched_sparsities`
    page: Optional[str] = None  # --markdown
    argv: Tuple[str, ...] = ()  # the command line, for the provenance record


def grid(fv: flags.FlagValues,
         overrides: Dict[str, Any]) -> Tuple[List[sweep.Cell], Optional[Dict[int, List[float]]]]:
    """The sweep's cells, each one's config validated, and the matched levels (None without --matched)."""
    for name in _items(fv["methods"].value):
        try:
            methods_lib.parse(name)
        except ValueError as err:
            raise UsageError(f"invalid --methods={fv['methods'].value!r}: {one_line(err)}") from None
    names = _items(fv["envs"].value)
    if not names:
        raise UsageError(f"invalid --envs={fv['envs'].value!r}: name at least one env")
    for name in names:
        try:
            envs.check_name(name)
        except ValueError as err:
            raise UsageError(f"invalid --envs={fv['envs'].value!r}: {one_line(err)}") from None
    recipe = fv["recipe"].value
    if recipe is not None and recipe not in presets.RECIPES:
        raise UsageError(f"invalid --recipe={recipe!r}: allowed values are {', '.join(presets.RECIPES)}")
    widths = _widths(fv)
    methods = _items(fv["methods"].value)
    matched = None
    if fv["matched"].value:
        if len(widths) < 2 or widths == [None]:
            raise UsageError("invalid --matched: needs --widths with at least two widths")
        base = presets.make_config(methods[0] if methods else sweep.DENSE, fv["algo"].value, recipe=recipe,
                                   **{**overrides, "env.name": names[0]})
        matched = sweep.matched_sparsities(base, widths)
    cells = sweep.build_grid(
        fv["algo"].value, methods, names,
        _swept(fv, "sparsities", parse_sparsities, (cfg_lib.SparsityConfig, "actor")),
        _swept(fv, "drop_fractions", _floats, (cfg_lib.TopologyConfig, "drop_fraction")),
        _swept(fv, "lrs", _floats, (cfg_lib.AgentConfig, "actor_lr")), dense=fv["dense"].value,
        widths=widths, extra_sparsities=matched)
    if not cells:
        raise UsageError(f"no cells: --methods={fv['methods'].value!r} with --nodense; name at least one method")
    for cell in cells:
        try:
            validate(sweep.cell_config(cell, fv["algo"].value, overrides, recipe=recipe))
        except ConfigError as err:
            raise UsageError(f"cell {cell.env}/{cell.method}/{cell.name}: {one_line(err)}") from None
    return cells, matched


def _widths(fv: flags.FlagValues) -> List[Optional[int]]:
    text = fv["widths"].value
    if text is None:
        return [None]
    try:
        widths = [int(t) for t in _items(text)]
    except ValueError:
        widths = []
    if not widths or min(widths) < 1:
        raise UsageError(f"invalid --widths={text!r}: expected comma-separated positive integers, e.g. 64,128,256")
    return sorted(set(widths))


def plan(argv: Sequence[str]) -> Plan:
    fv = cli.parse_args(define_flags(), argv)
    cli.require(fv, "workdir", "the root directory of the sweep's cells and tables")
    cli.at_least(fv, seeds=1, seed_offset=0, max_batch=0, num_processes=1, process_id=0)
    if fv["data_shards"].value:
        raise UsageError(f"invalid --data_shards={fv['data_shards'].value}: a sweep shards its runs over the "
                         "devices (seed axis); data-parallel cells are not supported (drop --data_shards)")
    launch.start_distributed(fv)  # before any JAX computation
    overrides = parse_overrides(fv["set"].value)
    cells, matched = grid(fv, overrides)
    page = fv["markdown"].value
    if page is not None:
        if fv["widths"].value is None:
            raise UsageError("invalid --markdown: the scaling claims need a scaling sweep (--widths)")
        marker = report.MARK.format("scaling", "begin")
        if not os.path.isfile(page) or marker not in open(page, encoding="utf-8").read():
            raise UsageError(f"invalid --markdown={page!r}: no such page with a "
                             f"{marker} marker")
    root = launch.check_workdir(fv["workdir"].value, create=True)
    lock = launch.lock_workdir(root)  # one sweep per root: a second one exits 2 naming the first
    first = fv["seed_offset"].value
    return Plan(root, fv["algo"].value, cells, list(range(first, first + fv["seeds"].value)), overrides,
                fv["recipe"].value, fv["max_batch"].value, fv["aggregate_only"].value,
                f"python -m experiments.sweep {shlex.join(argv[1:])} (done cells are skipped, an unfinished batch resumes from its last period)",
                lock, matched, page, tuple(argv))


PROVENANCE = "provenance.jsonl"


def _record_provenance(p: Plan, entry: Dict[str, Any], started: float, status: Optional[int]) -> None:
    """One line per training invocation in ``<root>/provenance.jsonl`` (appended, never rewritten): the
    commit and uncommitted files it started from, its command, the machine, its times and what it finished
    (``exit_status`` null: it ended by a signal or an error, which the launcher's exit status names)."""
    entry = {**entry, "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "exit_status": status,
             "wall_seconds": round(time.time() - started, 1),
             "cells_done_after": sum(sweep.is_done(c, p.root) for c in p.cells)}
    with open(os.path.join(p.root, PROVENANCE), "a") as f:
        f.write(json.dumps(entry) + "\n")


def execute(p: Plan, stop=None) -> int:
    if p.lock is not None:
        p.lock.announce()
    started, status = time.time(), None
    entry = {**records.provenance(REPO, ["python", "-m", "experiments.sweep", *p.argv[1:]]),
             "cells_done_before": sum(sweep.is_done(c, p.root) for c in p.cells)}
    try:
        status = sweep.run(p.root, p.algo, p.cells, p.seeds, p.overrides, max_batch=p.max_batch,
                           aggregate_only=p.aggregate_only, stop=stop, recipe=p.recipe)
        if status == 0 and dist.is_primary() and any(c.width is not None for c in p.cells):
            tested = scaling_claims.write(p.root, p.cells, p.matched, p.page)
            print(f"[sweep] {len(tested)}/{len(scaling_claims.plan(p.cells, p.matched))} scaling claims tested; "
                  f"verdicts in {os.path.join(p.root, 'claims.md')}", flush=True)
        return status
    finally:
        if dist.is_primary() and not p.aggregate_only:
            _record_provenance(p, entry, started, status)
        if p.lock is not None:
            p.lock.release()


def main(argv: Sequence[str]) -> int:
    """CLI entry; ``argv[0]`` is the program name. Returns the exit status."""
    return launch.main("sweep", argv, doc=__doc__, help_flags=lambda: [define_flags()], plan=plan,
                       execute=execute, continue_with=lambda p: p.command)


if __name__ == "__main__":
    cli.run(main)
