"""Overlay several runs in one figure and compare them against the dense run.

    python -m experiments.plot runs/dense runs/ds runs/rlx2 [--out comparison.png] [--labels a,b,c]

Each DIR is a work directory written by ``experiments.train`` (reads ``config.json``, ``metrics/*.jsonl``
and ``summary.json``). The figure shows every run's evaluation return over env steps (mean over seeds,
shaded min-max). The table gives each run's final and best return, AUC, total size and training FLOPs;
``% dense`` columns divide by the dense run's value (the first DIR whose method is ``dense``, or
``--reference``). Exit status 0, or 2 on bad input (one line on stderr).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

from absl import flags
from absl import logging as absl_logging



def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("out", "comparison.png", "Output PNG.", flag_values=fv)
    flags.DEFINE_list("labels", None, "Comma-separated labels, one per DIR (default: method, algo, "
                      "sparsity).", flag_values=fv)
    flags.DEFINE_string("reference", None, "DIR of the dense reference (default: first dense run).",
                        flag_values=fv)
    return fv


def load_run(workdir: str) -> dict:
    """config, summary (None if the run has not finished) and history of one work dir."""
    from sparse_rl_jax import run_logging

    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path) or run_logging.num_seeds_on_disk(workdir) == 0:
        raise ValueError(f"invalid DIR {workdir!r}: not a training work dir (needs config.json and "
                         "metrics/seed_*.jsonl written by experiments.train)")
    summary_path = os.path.join(workdir, "summary.json")
    return {"dir": workdir, "config": run_logging.read_json(config_path),
            "summary": run_logging.read_json(summary_path) if os.path.isfile(summary_path) else None,
            "history": run_logging.read_history(workdir)}


def default_label(config: dict) -> str:
    s = config["sparsity"]
    label = f"{config['method']} {config['algo'].upper()}"
    return label if config["method"] == "dense" else f"{label} ({s['actor']:g}/{s['critic']:g})"


def run_stats(run: dict) -> Dict[str, Optional[float]]:
    """Mean-over-seeds numbers: from summary.json when present, else from the metrics history."""
    import numpy as np

    from sparse_rl_jax import run_logging

    if run["summary"] is not None:
        return dict(run["summary"]["mean"])
    seeds = run_logging.num_seeds_on_disk(run["dir"])
    finals, bests, aucs = [], [], []
    for i in range(seeds):
        steps, rets = run_logging.returns_of(run["history"], i)
        if len(rets):
            finals.append(rets[-1])
            bests.append(rets.max())
            aucs.append(run_logging.area_under_curve(steps, rets))
    mean = (lambda v: float(np.mean(v)) if v else None)
    return {"final_return": mean(finals), "best_return": mean(bests), "auc": mean(aucs),
            "total_size": None, "train_flops": None}


def _pct(value: Optional[float], ref: Optional[float]) -> str:
    if value is None or ref is None or ref == 0:
        return "n/a"
    return f"{100.0 * value / ref:.1f}%"


def _num(value: Optional[float], fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def comparison_table(labels: List[str], stats: List[dict], ref: Optional[int]) -> str:
    width = max(len(l) for l in labels + ["run"])
    head = (f"{'run':<{width}} {'final':>9} {'% dense':>8} {'best':>9} {'AUC':>9} {'% dense':>8} "
            f"{'size':>6} {'train FLOPs':>11}")
    lines = [head, "-" * len(head)]
    r = stats[ref] if ref is not None else {}
    for label, s in zip(labels, stats):
        lines.append(
            f"{label:<{width}} {_num(s.get('final_return'), '9.1f')} {_pct(s.get('final_return'), r.get('final_return')):>8} "
            f"{_num(s.get('best_return'), '9.1f')} {_num(s.get('auc'), '9.1f')} "
            f"{_pct(s.get('auc'), r.get('auc')):>8} {_num(s.get('total_size'), '6.3f')} "
            f"{_num(s.get('train_flops'), '11.3f')}")
    note = ("% dense = return / the dense run's return (" + labels[ref] + ")" if ref is not None
            else "no dense run among the inputs: % dense columns are n/a (pass --reference DIR)")
    lines.append(note + "; size and train FLOPs are fractions of dense")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    from sparse_rl_jax import cli

    absl_logging.set_verbosity(absl_logging.WARNING)
    fv = define_flags()
    if cli.wants_help(argv):
        print(cli.help_text(__doc__, fv))
        return 0
    try:
        fv, dirs = cli.parse_args(fv, argv, positional=True)
        if not dirs:
            raise cli.UsageError("give at least one run DIR (python -m experiments.plot DIR [DIR ...])")
        labels = fv["labels"].value
        if labels is not None and len(labels) != len(dirs):
            raise cli.UsageError(f"invalid --labels={','.join(labels)!r}: need one label per DIR ({len(dirs)})")
        runs = [load_run(d) for d in dirs]
        reference = fv["reference"].value
        if reference is not None and os.path.abspath(reference) not in [os.path.abspath(d) for d in dirs]:
            runs.append(load_run(reference))
    except (cli.UsageError, ValueError, OSError) as err:
        return cli.error("plot", err)
    from sparse_rl_jax import plotting

    labels = list(labels or []) + [default_label(r["config"]) for r in runs[len(labels or []):]]
    labels = [l if labels.count(l) == 1 else f"{l} [{os.path.basename(os.path.normpath(r['dir']))}]"
              for l, r in zip(labels, runs)]
    if reference is not None:
        ref = [os.path.abspath(r["dir"]) for r in runs].index(os.path.abspath(reference))
    else:
        ref = next((i for i, r in enumerate(runs) if r["config"]["method"] == "dense"), None)
    shown = runs[:len(dirs)]
    path = plotting.learning_curves({l: r["history"] for l, r in zip(labels, shown)}, fv["out"].value,
                                    "Evaluation return")
    print(comparison_table(labels, [run_stats(r) for r in runs], ref))
    print(f"\nfigure: {path}")
    return 0


if __name__ == "__main__":
    from sparse_rl_jax import cli

    cli.run(main)
