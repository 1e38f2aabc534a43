"""The learning gate: dense SAC on Brax halfcheetah with this framework and with Brax's own SAC trainer.

    python -m experiments.bench.brax_gate [--seeds 3 --env_steps 100000 --evals 4 --workdir runs/gate]
        [--variants ours_matched,brax_norm,ours_default_entropy,brax_no_norm] [--record PATH.json]

Matching settings (both): Brax ``halfcheetah`` on the spring backend, 1 env, episodes of 1000 steps, 1000
random warm-up steps, batch 256, 2x256 networks, Adam 3e-4 for actor, critic and temperature, gamma 0.99,
tau 0.005, one update per env step, 1M buffer, running observation normalization, deterministic
evaluation over 10 episodes every quarter of the run. Brax's trainer sets the SAC target entropy to
-0.5 x |A| (-3 here) where this framework's default is -|A| (-6), so ``ours_matched`` uses -3.

Variants: ``ours_matched`` (this framework, the settings above, seeds vmapped in one program),
``brax_norm`` (Brax's trainer, the settings above, one process per seed), ``ours_default_entropy`` (ours with
its own -|A| target entropy), the two with normalization off (``ours_no_norm``, ``brax_no_norm``) and
``ours_softplus`` (``ours_matched`` with Brax's policy scale, ``agent.policy_scale=softplus``).
**The study's SAC** (issue 28, item 7: the gate must test the SAC the study runs): ``ours_study`` is
exactly the study's ``halfcheetah/sac/dense@rlx2.scaled`` cell, its dense SAC (`experiments/reproduce`:
100k env steps, 5k random warm-up, normalization off, target entropy -|A|, RLx2's SAC buffer scaled to
the budget, which is the whole run, evaluation every 5k) whatever ``--env_steps`` says; ``brax_study`` is
Brax's trainer at those settings as far as it has them (5k warm-up, normalization off, its 1M buffer,
which holds the whole 100k run; its target entropy is fixed at -0.5 x |A|). Run them with ``--variants
ours_study,brax_study --env_steps 100000 --evals 20``. ``ours_study_softplus`` is ``ours_study`` with
Brax's policy scale (``agent.policy_scale=softplus``), the difference the first gate measured to matter
most; ``ours_study_entropy`` is ``ours_study`` with Brax's target entropy -0.5 x |A| (-3).
Each variant's eval returns go to ``<workdir>/<variant>.json`` as soon as it finishes, and each seed of
Brax's trainer to ``<workdir>/<variant>_seed_<n>.json`` as soon as that seed finishes (ours checkpoints
every evaluation); a rerun skips what is finished and resumes the rest. At the end a markdown table: eval
return (mean ± sample std over seeds) at each evaluation; then, per pair (ours against Brax's at the same
settings), ours as a percentage of Brax's final return, the study's score (per seed the mean of the last
3 evaluations), with Fieller's 95% interval, and the verdict on "ours within 10% of Brax's trainer" (two
one-sided tests at 5%: **holds**, **does not hold** or **inconclusive**, as the study computes them).
``--record PATH`` also writes every per-seed return, the pairs' statistics and the provenance (commit,
command, CPU, both environments' package versions) to a JSON file; it never replaces an existing one.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

from absl import flags

from experiments.bench import venvs
from sparse_rl_jax import cli, run_logging

VARIANTS = ("ours_matched", "brax_norm", "ours_default_entropy", "ours_no_norm", "brax_no_norm", "ours_softplus",
            "ours_study", "brax_study", "ours_study_softplus", "ours_study_entropy")
STUDY_CELL = "small,halfcheetah/sac/dense@rlx2.scaled"  # experiments/reproduce/config.py's <tier>,<cell>
STUDY_WARMUP = 5_000
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WARMUP = 1000
PAIRS = (("ours_matched", "brax_norm"), ("ours_study", "brax_study"), ("ours_study_softplus", "brax_study"),
         ("ours_study_entropy", "brax_study"))
STUDY_VARIANTS = {"ours_study": {}, "ours_study_softplus": {"agent.policy_scale": "softplus"},
                  "ours_study_entropy": {"agent.target_entropy": -3.0}}  # over the study's cell, as --config.K=V
MARGIN = 0.10  # the gate: ours within 10% of Brax's trainer
LAST_EVALS = 3  # the study's score: per seed the mean of its last 3 evaluations (experiments/reproduce)
Result = Dict[int, List[float]]  # env steps -> eval return of each seed


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_integer("seeds", 3, "seeds per variant", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("env_steps", 100_000, "env steps per run", lower_bound=4000, flag_values=fv)
    flags.DEFINE_integer("evals", 4, "evaluations per run (evenly spaced; the last at the end)", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_string("workdir", "runs/gate", "where the runs and per-variant results go", flag_values=fv)
    flags.DEFINE_list("variants", ["ours_matched", "brax_norm"], f"which to run: {', '.join(VARIANTS)}",
                      flag_values=fv)
    flags.DEFINE_string("record", None, "also write the results with their provenance to this JSON file (a new "
                        "file: an existing record is never replaced)", flag_values=fv)
    return fv


class Gate(NamedTuple):
    """What every variant runs: seeds, length, evaluations, and where its runs go."""
    seeds: int
    env_steps: int
    evals: int
    workdir: str


def run_ours(variant: str, gate: Gate) -> Result:
    run_dir = os.path.join(gate.workdir, variant)
    subprocess.check_call([sys.executable, "-m", "experiments.train", *ours_args(variant, gate)[1:]], cwd=REPO)
    history = run_logging.read_history(run_dir)
    out: Dict[int, List[float]] = {}
    for steps, m in history:
        if m.get(run_logging.RETURN_KEY) is not None:
            out[int(steps)] = [float(v) for v in m[run_logging.RETURN_KEY]]
    return out


def ours_args(variant: str, gate: Gate) -> List[str]:
    """The launcher's arguments for one of our variants (resuming its run when it has a checkpoint)."""
    run_dir = os.path.join(gate.workdir, variant)
    sets = {"env.normalize_observations": variant != "ours_no_norm", "warmup_env_steps": WARMUP,
            "total_env_steps": gate.env_steps, "eval_every": gate.env_steps // gate.evals,
            "env.eval_episodes": 10, "replay.capacity": 1_000_000}
    if variant != "ours_default_entropy":
        sets["agent.target_entropy"] = -3.0
    if variant == "ours_softplus":
        sets["agent.policy_scale"] = "softplus"
    args = ["train", "--workdir", run_dir, "--noplots"]
    if os.path.isdir(os.path.join(run_dir, "checkpoints")):
        return args + ["--resume"]
    if variant in STUDY_VARIANTS:  # the study's own cell, unchanged but for the variant's keys
        return (args + [f"--config={REPO}/experiments/reproduce/config.py:{STUDY_CELL}", "--seeds", str(gate.seeds)]
                + [f"--config.{k}={v}" for k, v in STUDY_VARIANTS[variant].items()])
    return (args + [f"--config={REPO}/experiments/configs/preset.py:dense,sac,halfcheetah", "--seeds", str(gate.seeds)]
            + [f"--config.{k}={v}" for k, v in sets.items()])


def run_brax(variant: str, gate: Gate, learn: Optional[Callable[[Dict], List[Dict]]] = None) -> Result:
    """Brax's trainer, one process per seed; each seed's evaluations are kept in its own file, with the
    provenance of the process that ran it, as soon as it finishes, so a rerun (after an interruption, or
    on another machine given those files) runs only the seeds not yet done. ``learn(args)``: the worker's
    evaluation rows for one seed (default: the Brax environment's worker process)."""
    learn = learn or _learn_in_brax_env
    out: Result = {}
    for seed in range(gate.seeds):
        path = os.path.join(gate.workdir, f"{variant}_seed_{seed}.json")
        if os.path.exists(path):
            rows = run_logging.read_json(path)["rows"]
            print(f"  {variant} seed {seed}: finished earlier ({path})", flush=True)
        else:
            from experiments.reproduce import records

            warmup = STUDY_WARMUP if variant == "brax_study" else WARMUP
            args = {"mode": "learn", "env_steps": gate.env_steps, "warmup": warmup, "evals": gate.evals,
                    "seed": seed, "normalize": variant == "brax_norm"}
            provenance = records.provenance(REPO, ["experiments.bench.workers.brax_sac", json.dumps(args)])
            rows = learn(args)
            provenance["ended"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            _write_new(path, {"provenance": provenance, "rows": rows})
        for row in rows:
            if row["env_steps"] > 0:
                out.setdefault(row["env_steps"], []).append(row["eval_return"])
        print(f"  {variant} seed {seed}: " + ", ".join(f"{s}: {v[-1]:.0f}" for s, v in sorted(out.items())), flush=True)
    return out


def _learn_in_brax_env(args: Dict) -> List[Dict]:
    proc = subprocess.run([venvs.python("brax"), "-m", "experiments.bench.workers.brax_sac", json.dumps(args)],
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"), check=True,
                          stdout=subprocess.PIPE, text=True)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _write_new(path: str, obj) -> None:
    """``obj`` as JSON, atomically (a cut-off write never leaves a partial file); an unbounded Fieller
    interval stays ``Infinity``, which `run_logging.write_json` refuses."""
    run_logging.write_text_atomic(path, json.dumps(obj, indent=1) + "\n")


def _cell(values: List[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.0f} ± {sd:.0f}"


def final_scores(result: Result) -> List[float]:
    """Per seed, the mean of its last `LAST_EVALS` evaluations (the study's score)."""
    last = [result[s] for s in sorted(result)][-LAST_EVALS:]
    return [statistics.mean(vals) for vals in zip(*last)]


def compare(ours: Result, brax: Result) -> Dict:
    """Ours against Brax's trainer: final scores, their ratio with Fieller's 95% interval, and the gate's
    verdict (ours within `MARGIN` of Brax's, two one-sided tests at 5%)."""
    from experiments.reproduce import stats

    a, b = final_scores(ours), final_scores(brax)
    out = {"ours": a, "brax": b, "margin": MARGIN, "ratio": statistics.mean(a) / statistics.mean(b)}
    if len(a) > 1 and len(b) > 1:
        r = stats.ratio(a, b)
        eq = stats.equivalence(a, b, MARGIN)
        out.update(ratio_lo=r.lo, ratio_hi=r.hi, p_within=eq.p, p_outside=eq.p_outside,
                   smallest_margin=eq.smallest_margin, verdict=stats.verdict(eq.p, eq.p_outside))
    return out


def describe(mine: str, theirs: str, c: Dict) -> str:
    from experiments.reproduce import stats

    line = (f"{mine} / {theirs}, final return (per seed the mean of the last {LAST_EVALS} evaluations): "
            f"{statistics.mean(c['ours']):.0f} / {statistics.mean(c['brax']):.0f} = ")
    if "verdict" not in c:
        return line + f"{100 * c['ratio']:.0f}% (one seed: no interval)"
    return line + (f"{stats.fmt_interval(c['ratio'], c['ratio_lo'], c['ratio_hi'], pct=True)} (95% CI); within "
                   f"{100 * c['margin']:.0f}% of Brax's: {c['verdict']} (TOST p {c['p_within']:.3g}, outside "
                   f"p {c['p_outside']:.3g}; the smallest margin these seeds establish: "
                   f"{100 * c['smallest_margin']:.0f}%)")


def _versions(exe: str) -> Dict[str, str]:
    code = ("import importlib.metadata as m, json, sys; print(json.dumps({'python': sys.version.split()[0], "
            "**{p: m.version(p) for p in ('jax', 'jaxlib', 'brax', 'flax', 'optax', 'mujoco') "
            "if any(d.metadata['Name'].lower() == p for d in m.distributions())}}))")
    try:
        return json.loads(subprocess.run([exe, "-c", code], capture_output=True, text=True, check=True).stdout)
    except (OSError, subprocess.CalledProcessError, ValueError) as err:
        return {"error": str(err)}


def main(argv: Sequence[str]) -> int:
    fv = define_flags()
    if not cli.parse(fv, argv, "brax_gate"):
        return cli.USAGE_ERROR
    bad = [v for v in fv.variants if v not in VARIANTS]
    if bad:
        return cli.error("brax_gate", f"invalid --variants={bad[0]!r}: allowed {', '.join(VARIANTS)}")
    if fv.record and os.path.exists(fv.record):
        return cli.error("brax_gate", f"--record={fv.record} exists: records are never replaced (name a new file)")
    gate = Gate(fv.seeds, fv.env_steps, fv.evals, fv.workdir)
    os.makedirs(gate.workdir, exist_ok=True)
    from experiments.reproduce import records
    provenance = records.provenance(REPO, list(argv))
    results: Dict[str, Result] = {}
    for v in fv.variants:
        path = os.path.join(gate.workdir, f"{v}.json")
        if os.path.exists(path):
            results[v] = {int(k): x for k, x in run_logging.read_json(path).items()}
            continue
        print(f"brax_gate: running {v} ({gate.seeds} seeds, {gate.env_steps:,} env steps)", flush=True)
        results[v] = run_ours(v, gate) if v.startswith("ours") else run_brax(v, gate)
        _write_new(path, results[v])
    lines = table(results, gate)
    pairs = {f"{mine}/{theirs}": compare(results[mine], results[theirs])
             for mine, theirs in PAIRS if mine in results and theirs in results}
    lines += ["", *(describe(*key.split("/"), c) for key, c in pairs.items())]
    print("\n" + "\n".join(lines))
    if fv.record:
        provenance["ended"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        provenance["versions"] = {"ours": _versions(sys.executable)}
        if any(not v.startswith("ours") for v in results):
            exe = venvs.built("brax")
            provenance["versions"]["brax_trainer"] = _versions(exe) if exe else {"error": "environment not built"}
        os.makedirs(os.path.dirname(os.path.abspath(fv.record)), exist_ok=True)
        seeds = {}  # Brax's seeds of this run's variants: the process that ran each
        for v in results:
            for seed in range(gate.seeds):
                path = os.path.join(gate.workdir, f"{v}_seed_{seed}.json")
                if os.path.exists(path):
                    seeds[f"{v}_seed_{seed}"] = run_logging.read_json(path)["provenance"]
        _write_new(fv.record, {"provenance": provenance, "seed_provenance": seeds, "gate": gate._asdict(),
                               "variants": list(fv.variants),
                               "eval_returns": {v: {str(s): vals for s, vals in sorted(r.items())}
                                                for v, r in results.items()},
                               "pairs": pairs, "table": "\n".join(lines)})
        print(f"\nrecord: {fv.record}")
    return 0


def table(results: Dict[str, Result], gate: Gate) -> List[str]:
    """Markdown: each variant's eval return (mean ± sample std over seeds) at its last ``gate.evals``
    evaluations."""
    lines = ["| variant | " + " | ".join(f"eval {i + 1}" for i in range(gate.evals)) + " |",
             "|---|" + "---:|" * gate.evals]
    for v, r in results.items():
        cells = [f"{_cell(vals)} @ {s:,}" for s, vals in sorted(r.items())][-gate.evals:]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines + ["", f"(eval return, mean ± sample std over {gate.seeds} seed(s))"]


if __name__ == "__main__":
    cli.run(main)
