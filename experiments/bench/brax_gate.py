"""The learning gate: dense SAC on Brax halfcheetah with this framework and with Brax's own SAC trainer.

    python -m experiments.bench.brax_gate [--seeds 3 --env_steps 100000 --workdir runs/gate]
        [--variants ours_matched,brax_norm,ours_default_entropy,brax_no_norm]

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
which holds the whole 100k run; its target entropy is fixed at -0.5 x |A|). Run them with ``--variants ours_study,brax_study --env_steps 100000 --evals 20``.
Each variant's eval returns go to ``<workdir>/<variant>.json`` as soon as it finishes; a rerun skips
finished variants. At the end a markdown table: eval return (mean ± std over seeds) at each evaluation,
and ours as a percentage of Brax's at the last one.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List

from absl import app, flags

from experiments.bench import venvs

FLAGS = flags.FLAGS
VARIANTS = ("ours_matched", "brax_norm", "ours_default_entropy", "ours_no_norm", "brax_no_norm", "ours_softplus",
            "ours_study", "brax_study")
STUDY_CELL = "small,halfcheetah/sac/dense@rlx2.scaled"  # experiments/reproduce/config.py's <tier>,<cell>
STUDY_WARMUP = 5_000
flags.DEFINE_integer("seeds", 3, "seeds per variant", lower_bound=1)
flags.DEFINE_integer("env_steps", 100_000, "env steps per run", lower_bound=4000)
flags.DEFINE_integer("evals", 4, "evaluations per run (evenly spaced; the last at the end)", lower_bound=1)
flags.DEFINE_string("workdir", "runs/gate", "where the runs and per-variant results go")
flags.DEFINE_list("variants", ["ours_matched", "brax_norm"], f"which to run: {', '.join(VARIANTS)}")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WARMUP = 1000


def run_ours(variant: str, workdir: str) -> Dict[int, List[float]]:
    from sparse_rl_jax import run_logging

    run_dir = os.path.join(workdir, variant)
    sets = {"env.normalize_observations": variant != "ours_no_norm", "warmup_env_steps": WARMUP,
            "total_env_steps": FLAGS.env_steps, "eval_every": FLAGS.env_steps // FLAGS.evals,
            "env.eval_episodes": 10, "replay.capacity": 1_000_000}
    if variant != "ours_default_entropy":
        sets["agent.target_entropy"] = -3.0
    if variant == "ours_softplus":
        sets["agent.policy_scale"] = "softplus"
    resume = os.path.isdir(os.path.join(run_dir, "checkpoints"))
    cmd = [sys.executable, "-m", "experiments.train", "--workdir", run_dir, "--noplots"]
    if resume:
        cmd += ["--resume"]
    elif variant == "ours_study":  # the study's own cell, unchanged
        cmd += [f"--config=experiments/reproduce/config.py:{STUDY_CELL}", "--seeds", str(FLAGS.seeds)]
    else:
        cmd += (["--config=experiments/configs/preset.py:dense,sac,halfcheetah", "--seeds", str(FLAGS.seeds)]
                + [f"--config.{k}={v}" for k, v in sets.items()])
    subprocess.check_call(cmd, cwd=REPO)
    history = run_logging.read_history(run_dir)
    out: Dict[int, List[float]] = {}
    for steps, m in history:
        if m.get(run_logging.RETURN_KEY) is not None:
            out[int(steps)] = [float(v) for v in m[run_logging.RETURN_KEY]]
    return out


def run_brax(variant: str) -> Dict[int, List[float]]:
    exe = venvs.python("brax")
    out: Dict[int, List[float]] = {}
    for seed in range(FLAGS.seeds):
        warmup = STUDY_WARMUP if variant == "brax_study" else WARMUP
        args = {"mode": "learn", "env_steps": FLAGS.env_steps, "warmup": warmup, "evals": FLAGS.evals,
                "seed": seed, "normalize": variant == "brax_norm"}
        proc = subprocess.run([exe, "-m", "experiments.bench.workers.brax_sac", json.dumps(args)], cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"), check=True,
                              stdout=subprocess.PIPE, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                if row["env_steps"] > 0:
                    out.setdefault(row["env_steps"], []).append(row["eval_return"])
        print(f"  {variant} seed {seed}: " + ", ".join(f"{s}: {v[-1]:.0f}" for s, v in sorted(out.items())), flush=True)
    return out


def _cell(values: List[float]) -> str:
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.0f} ± {sd:.0f}"


def main(argv) -> int:
    del argv
    bad = [v for v in FLAGS.variants if v not in VARIANTS]
    if bad:
        print(f"brax_gate: error: invalid --variants={bad[0]!r}: allowed {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    os.makedirs(FLAGS.workdir, exist_ok=True)
    results = {}
    for v in FLAGS.variants:
        path = os.path.join(FLAGS.workdir, f"{v}.json")
        if os.path.exists(path):
            results[v] = {int(k): x for k, x in json.load(open(path)).items()}
            continue
        print(f"brax_gate: running {v} ({FLAGS.seeds} seeds, {FLAGS.env_steps:,} env steps)", flush=True)
        results[v] = run_ours(v, FLAGS.workdir) if v.startswith("ours") else run_brax(v)
        with open(path, "w") as f:
            json.dump(results[v], f)
    print("\n| variant | " + " | ".join(f"eval {i + 1}" for i in range(FLAGS.evals)) + " |")
    print("|---|" + "---:|" * FLAGS.evals)
    for v, r in results.items():
        cells = [f"{_cell(vals)} @ {s:,}" for s, vals in sorted(r.items())][-FLAGS.evals:]
        print(f"| {v} | " + " | ".join(cells) + " |")
    for mine, theirs in (("ours_matched", "brax_norm"), ("ours_study", "brax_study")):
        if mine in results and theirs in results:
            ours = results[mine][max(results[mine])]
            brax = results[theirs][max(results[theirs])]
            pct = 100 * statistics.mean(ours) / statistics.mean(brax)
            line = f"\n{mine} / {theirs} at the last evaluation: {pct:.0f}%"
            if len(ours) > 1 and len(brax) > 1:
                from experiments.reproduce import stats  # Fieller's interval, as the study reports ratios
                r = stats.ratio_of(ours, brax)
                line += f" (95% CI {stats.fmt_interval(r.ratio, r.lo, r.hi, pct=True)})" if r else ""
            print(line)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
