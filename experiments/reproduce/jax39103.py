"""Does JAX 0.10.2's CPU miscompilation (jax-ml/jax issue 39103) touch this project's numbers?

The bug: under ``jax.jit`` on CPU, XLA 0.10.2 returns a wrong value for a vmapped matrix-vector product
followed by a reduction at some batch sizes (the issue's case: ``vmap(lambda r: sum((M @ r) ** 2))`` over
32,769 float32 rows of 3, or 16,385 float64 rows); 0.10.1 and the 0.11 line compute it right. Each
measurement is written as one JSON record under ``--out`` (a rerun adds a record, never overwrites one):

    python -m experiments.reproduce.jax39103 probe  --out docs/results/platform
    python -m experiments.reproduce.jax39103 first-updates --dump /tmp/fu_new --against /tmp/fu_old
    python -m experiments.reproduce.jax39103 compare-cell --cell halfcheetah/td3/rlx2 \\
        --before docs/results/small_v1/runs/halfcheetah/td3/rlx2 --after <the rerun's record>

* ``probe``: the issue's reproducer, then the same pattern over a grid of shapes (rows x inner x outer,
  among them the ones of this project's programs), each compared with a float64 NumPy reference; a row
  is wrong when its error exceeds 1e-5 of the sum of absolute products (float32 rounding is ~1e-7).
* ``first-updates``: every ``tests/pins.py`` preset cut to ``--updates`` training iterations after its
  warm-up; the final states' float leaves are saved (``--dump``, an ``.npz`` per preset, not committed)
  and, with ``--against`` another version's dump folder (or later, ``compare-dumps --dump A --against
  B``), compared element by element: the record holds, per preset, the largest difference in float32
  units in the last place (ulps) and where, the largest relative difference, and the share of entries
  that differ. A miscompiled op gives wrong values (0.8% and 67% off in the probe here); a changed
  summation order gives rounding-sized differences that training then amplifies.

* ``dots``: the optimized HLO of one reproduction cell's compiled training period and evaluation
  (``--tier``, ``--cell``, ``--seeds``), every matrix product (``dot``) in it listed by shape: the bug
  needs a product with many rows (it showed at 16,385 and 32,769), so the record says how many rows the
  largest product of the real program has, beside the sizes the probe checked.

* ``compare-cell``: two finished records of one reproduction cell (``--before``, ``--after``: folders with
  ``metrics/seed_<i>.jsonl``), e.g. the committed 0.10.2 record and a rerun on the new set: per seed the
  final return (``report.final_return``), mean ± sample std of each, and the difference of means with
  its Welch 95% confidence interval. Runs on different XLA builds cannot be compared bit for bit; this
  says whether the rerun lands where the published figure did, within what the seeds can tell apart.

``--summary`` prints the table of every record under ``--out`` (docs/RESULTS.md quotes it).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Any, Dict, List

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

# (inner, outer) sizes of the product: the issue's 3x3, and this project's (observation 17-27 and action
# 1-8 into width 32-256 layers, 256x256 hidden layers, single-output heads)
SHAPES = ((3, 3), (6, 6), (8, 8), (17, 256), (23, 256), (256, 256), (256, 1), (3, 1))
ROWS = (100, 255, 256, 768, 1024, 4097, 8193, 16384, 16385, 32767, 32768, 32769, 65536, 65537)
TOLERANCE = 1e-5


def _versions() -> Dict[str, Any]:
    """A run's platform record (`run_logging.platform_info`) and the CPU model: XLA:CPU's code differs by
    CPU, and so did the bug's reach in the issue's reports."""
    from sparse_rl_jax import run_logging
    return {**run_logging.platform_info(), "cpu": run_logging.cpu_model()}


def issue_reproducer() -> List[Dict[str, Any]]:
    """The issue's own case, eager against jit (float64 needs x64, switched on here and off after)."""
    import jax.numpy as jnp
    out = []
    for dtype, n in (("float64", 16_385), ("float32", 32_769)):
        with jax.enable_x64(dtype == "float64"):
            i = jnp.arange(n, dtype=dtype)
            x = jnp.stack((i, jnp.zeros_like(i), jnp.zeros_like(i)), axis=1)
            matrix = jnp.eye(3, dtype=dtype)

            def f(x):
                return jax.vmap(lambda row: jnp.sum((matrix @ row) ** 2))(x)

            eager, jitted = float(f(x)[-1]), float(jax.jit(f)(x)[-1])
        out.append({"dtype": dtype, "rows": n, "eager": eager, "jit": jitted, "wrong": eager != jitted})
    return out


def shape_grid() -> List[Dict[str, Any]]:
    import jax.numpy as jnp

    @jax.jit
    def f(x, w):
        return jax.vmap(lambda row: jnp.sum((w @ row) ** 2))(x)

    out = []
    for inner, outer in SHAPES:
        for n in ROWS:
            rng = np.random.default_rng(n * 1009 + inner * 31 + outer)
            x = rng.standard_normal((n, inner)).astype(np.float32)
            w = rng.standard_normal((outer, inner)).astype(np.float32)
            x64, w64 = x.astype(np.float64), w.astype(np.float64)
            ref = ((x64 @ w64.T) ** 2).sum(-1)
            scale = ((np.abs(x64) @ np.abs(w64).T) ** 2).sum(-1)
            err = np.abs(np.asarray(f(x, w), np.float64) - ref) / scale
            out.append({"inner": inner, "outer": outer, "rows": n, "max_error": float(err.max()),
                        "wrong_rows": int((err > TOLERANCE).sum())})
    return out


def _ordered(x: np.ndarray) -> np.ndarray:
    """float32 bit patterns as integers ordered like the floats (sign-magnitude to two's complement), so a
    difference of two is the number of float32 values between them: ulps."""
    i = x.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


def first_updates(updates: int, dump: str) -> None:
    """Runs every pins preset to ``updates`` training iterations; saves its float leaves to ``dump``."""
    from sparse_rl_jax import config as cfg_lib
    from sparse_rl_jax import runner
    from tests import pins
    os.makedirs(dump, exist_ok=True)
    for method, algo in pins.cases():
        config = pins.config_of(method, algo)
        steps = config.warmup_env_steps + updates * config.env_steps_per_iteration
        config = cfg_lib.replace(config, total_env_steps=steps, eval_every=steps - config.warmup_env_steps)
        result = runner.train(config, num_seeds=pins.SEEDS)
        mine = {p: v for p, v in pins.leaves(result.states) if np.issubdtype(v.dtype, np.floating)}
        np.savez(os.path.join(dump, f"{method}_{algo}.npz".replace("+", "_")), **mine)
        print(f"{method}/{algo}: {len(mine)} float leaves saved", flush=True)


def _part(path: str) -> str:
    """The part of the train state a leaf belongs to: agent.actor, agent.critic, agent (the rest of it),
    env_state, replay, or other."""
    names = path.lstrip(".").split(".")
    if names[0] == "agent":
        return "agent." + names[1].split("[")[0] if len(names) > 1 and names[1].startswith(("actor", "critic")) \
            else "agent"
    return names[0].split("[")[0] if names[0].split("[")[0] in ("env_state", "replay") else "other"


def compare_dumps(mine_dir: str, theirs_dir: str) -> Dict[str, Any]:
    """Per preset: the largest difference in ulps (and its leaf), the largest relative difference among
    entries above 1e-3 in magnitude (near zero, ulps and ratios mean little), the share of entries that
    differ; the same two figures per part of the state (`_part`), which says where a difference starts
    (an environment that already differs feeds the update other data)."""
    out = {}
    for name in sorted(n for n in os.listdir(mine_dir) if n.endswith(".npz")):
        mine, theirs = np.load(os.path.join(mine_dir, name)), np.load(os.path.join(theirs_dir, name))
        worst, where, parts = 0, "", {}
        for path in mine.files:
            a, b = mine[path], theirs[path]
            d = np.abs(_ordered(a) - _ordered(b))
            if d.size and int(d.max()) > worst:
                worst, where = int(d.max()), path
            big = np.maximum(np.abs(a), np.abs(b)) > 1e-3
            rel = float((np.abs(a - b)[big] / np.maximum(np.abs(a), np.abs(b))[big]).max()) if big.any() else 0.0
            part = parts.setdefault(_part(path), {"max_relative": 0.0, "differ": 0, "entries": 0})
            part["max_relative"] = max(part["max_relative"], rel)
            part["differ"] += int((d > 0).sum())
            part["entries"] += int(d.size)
        total = sum(p["entries"] for p in parts.values())
        key = name[:-4].replace("_importance", "+importance").replace("_", "/")
        out[key] = {"max_ulps": worst, "at": where,
                    "max_relative": max(p["max_relative"] for p in parts.values()),
                    "differing_share": sum(p["differ"] for p in parts.values()) / max(total, 1),
                    "parts": {k: {"max_relative": p["max_relative"],
                                  "differing_share": p["differ"] / max(p["entries"], 1)}
                              for k, p in sorted(parts.items())}}
    return out


def dots(tier_name: str, cell: str, seeds: int) -> Dict[str, Any]:
    import re
    from collections import Counter

    from experiments.reproduce import grid
    from sparse_rl_jax import distributed as dist
    from sparse_rl_jax import runner as runner_lib
    from sparse_rl_jax import trainer as trainer_lib
    from jax.sharding import PartitionSpec as P
    config = grid.make_config(grid.parse_cell(cell), grid.TIERS[tier_name])
    run = runner_lib.Runner(config, num_seeds=seeds)
    keys = trainer_lib.seed_keys(config.seed, seeds)
    states = run.init(keys)
    texts = {"training period": run.chunk_fn.lower(states, np.int32(0)).compile().as_text(),
             "evaluation": run.eval_fn.lower(trainer_lib.policy_params(states),
                                             dist.to_global(np.asarray(keys), run.mesh, P(dist.SEED)))
             .compile().as_text()}
    pattern = re.compile(r"= (\w+)\[([\d,]*)\]\{?[\d,]*\}? dot\(")
    out: Dict[str, Any] = {"tier": tier_name, "cell": cell, "seeds": seeds}
    for name, text in texts.items():
        found = pattern.findall(text)
        shapes = Counter(f"{dtype}[{dims}]" for dtype, dims in found)
        dims = {f"{dtype}[{d}]": [int(x) for x in d.split(",") if x] for dtype, d in found}
        largest = max(((int(np.prod(v)), k) for k, v in dims.items()), default=(0, ""))
        out[name] = {"dots": sum(shapes.values()), "distinct_shapes": len(shapes),
                     "largest_output": largest[1], "largest_output_entries": largest[0],
                     "largest_dimension": max((x for v in dims.values() for x in v), default=0),
                     "shapes": dict(sorted(shapes.items())),
                     # a product XLA hands to a library call instead of emitting a dot would hide here
                     "custom_calls": dict(Counter(re.findall(r'custom_call_target="([^"]+)"', text)))}
    return out


def compare_cell(before: str, after: str) -> Dict[str, Any]:
    from scipy import stats

    from experiments.reproduce import records, report
    from sparse_rl_jax import run_logging
    out: Dict[str, Any] = {}
    for name, folder in (("before", before), ("after", after)):
        steps, returns = records.curve(run_logging.read_history(folder))
        final = report.final_return(steps, returns)
        summary = run_logging.read_json(os.path.join(folder, "summary.json"))
        out[name] = {"record": os.path.relpath(folder), "env_steps": int(steps[-1]),
                     "final_return_per_seed": [float(x) for x in final],
                     "mean": float(final.mean()), "std": float(final.std(ddof=1)),
                     "platform": summary.get("platform")}  # records before 2026-12-06 do not say
    a, b = (np.asarray(out[k]["final_return_per_seed"]) for k in ("after", "before"))
    test = stats.ttest_ind(a, b, equal_var=False)
    ci = test.confidence_interval(0.95)
    out["difference"] = {"after_minus_before": float(a.mean() - b.mean()), "welch_95ci": [float(ci.low),
                         float(ci.high)], "p_value": float(test.pvalue)}
    return out


def _write(out_dir: str, kind: str, record: Dict[str, Any]) -> str:
    from sparse_rl_jax import run_logging
    os.makedirs(out_dir, exist_ok=True)
    tag = record["versions"]["jax"]
    extra = {"dots": lambda: f"_{record['tier']}_{record['cell'].replace('/', '_').replace('+', '_')}_{record['seeds']}",
             "compare-cell": lambda: f"_{record['cell'].replace('/', '_')}",
             "first-updates": lambda: f"_{record['updates']}_vs_jax{record['against_versions']['jax']}",
             }.get(kind, lambda: "")()
    path = os.path.join(out_dir, f"jax39103_{kind}{extra}_jax{tag}.json")
    n = 1
    while os.path.exists(path):  # never overwrite a record: a rerun is a record of its own
        n += 1
        path = path.rsplit(".json", 1)[0].rsplit("_run", 1)[0] + f"_run{n}.json"
    run_logging.write_text_atomic(path, json.dumps(record, indent=1) + "\n")
    return path


def summary(out_dir: str) -> str:
    records = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out_dir, "jax39103_*.json")))]
    lines = ["| record | jax | python | result |", "|---|---|---|---|"]
    for r in records:
        v = r["versions"]
        if r["kind"] == "probe":
            wrong = [f"{g['rows']}x{g['inner']}->{g['outer']} ({g['wrong_rows']} rows)"
                     for g in r["grid"] if g["wrong_rows"]]
            repro = ", ".join(f"{x['dtype']} {'WRONG' if x['wrong'] else 'right'}" for x in r["reproducer"])
            lines.append(f"| probe | {v['jax']} | {v['python']} | issue case: {repro}; shape grid: "
                         f"{len(r['grid']) - len(wrong)}/{len(r['grid'])} right"
                         + (f", wrong at {'; '.join(wrong)}" if wrong else "") + " |")
        elif r["kind"] == "compare-cell":
            b, a, d = r["before"], r["after"], r["difference"]
            lines.append(f"| {r['cell']} final return, {b['env_steps']:,} steps, before (jax "
                         f"{r['before_jax']}) vs after | {v['jax']} | {v['python']} | {b['mean']:.1f} ± "
                         f"{b['std']:.1f} -> {a['mean']:.1f} ± {a['std']:.1f} (sample std, "
                         f"{len(a['final_return_per_seed'])} seeds); difference {d['after_minus_before']:+.1f}, "
                         f"Welch 95% CI [{d['welch_95ci'][0]:.1f}, {d['welch_95ci'][1]:.1f}], "
                         f"p = {d['p_value']:.2f} |")
        elif r["kind"] == "dots":
            parts = "; ".join(f"{name}: {r[name]['dots']} products, largest output {r[name]['largest_output']}, "
                              f"no dimension above {r[name]['largest_dimension']:,}"
                              + (f", custom calls {r[name].get('custom_calls')}" if r[name].get("custom_calls") else "")
                              for name in ("training period", "evaluation"))
            lines.append(f"| matrix products of {r['tier']}/{r['cell']} x {r['seeds']} seeds | {v['jax']} | "
                         f"{v['python']} | {parts} |")
        elif r["kind"] == "first-updates":
            rows = r["presets"]
            same = [k for k, x in rows.items() if x["max_ulps"] == 0]
            parts: Dict[str, List[float]] = {}
            moved = set()
            for x in rows.values():
                for k, p in x["parts"].items():
                    parts.setdefault(k, []).append(p["max_relative"])
                    if p["differing_share"]:
                        moved.add(k)
            shown = "; ".join(f"{k} {max(v):.2g}" for k, v in sorted(parts.items()) if k in moved)
            kept = ", ".join(sorted(set(parts) - moved)) or "none"
            lines.append(f"| first {r['updates']} update(s) of the {len(rows)} pins presets, against jax "
                         f"{r['against_versions']['jax']} | {v['jax']} | {v['python']} | bit-identical: "
                         f"{len(same)}/{len(rows)}; bit-identical in every preset: {kept}; largest "
                         f"relative difference (entries above 1e-3) of the rest: {shown} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = ("probe", "first-updates", "compare-dumps", "dots", "compare-cell")
    parser.add_argument("mode", nargs="?", choices=modes, help="what to measure")
    parser.add_argument("--out", default="docs/results/platform", help="folder of the JSON records")
    parser.add_argument("--cell", default="halfcheetah/td3/rlx2", help="dots, compare-cell: the cell")
    parser.add_argument("--tier", default="small", help="dots: the reproduction tier of --cell")
    parser.add_argument("--seeds", type=int, default=3, help="dots: vmapped seeds")
    parser.add_argument("--updates", type=int, default=1, help="first-updates: training iterations")
    parser.add_argument("--dump", default="", help="first-updates: folder for this version's .npz states")
    parser.add_argument("--against", default="", help="first-updates, compare-dumps: another version's --dump")
    parser.add_argument("--before", default="", help="compare-cell: the published record's folder")
    parser.add_argument("--before_jax", default="0.10.2", help="compare-cell: the JAX that computed --before")
    parser.add_argument("--after", default="", help="compare-cell: the rerun's record folder")
    parser.add_argument("--summary", action="store_true", help="print the table of every record in --out")
    args = parser.parse_args(argv)
    if not args.mode and not args.summary:
        parser.error(f"give a mode ({', '.join(modes)}), or --summary")
    if args.mode == "compare-dumps" and not (args.dump and args.against):
        parser.error("compare-dumps needs --dump FOLDER and --against FOLDER")
    if args.mode == "probe":
        record = {"kind": "probe", "versions": _versions(), "reproducer": issue_reproducer(),
                  "grid": shape_grid(), "tolerance": TOLERANCE}
        print(f"wrote {_write(args.out, 'probe', record)}")
    elif args.mode == "first-updates":
        if not args.dump:
            parser.error("first-updates needs --dump FOLDER")
        os.makedirs(args.dump, exist_ok=True)
        with open(os.path.join(args.dump, "versions.json"), "w") as f:
            json.dump({**_versions(), "updates": args.updates}, f)
        first_updates(args.updates, args.dump)
    if args.mode in ("first-updates", "compare-dumps") and args.against:
        mine, theirs = (json.load(open(os.path.join(d, "versions.json"))) for d in (args.dump, args.against))
        if mine.get("updates") != theirs.get("updates"):
            parser.error(f"--dump ran {mine.get('updates')} update(s), --against {theirs.get('updates')}")
        record = {"kind": "first-updates", "versions": mine, "against_versions": theirs,
                  "updates": mine["updates"], "presets": compare_dumps(args.dump, args.against)}
        print(f"wrote {_write(args.out, 'first-updates', record)}")
    if args.mode == "dots":
        record = {"kind": "dots", "versions": _versions(), **dots(args.tier, args.cell, args.seeds)}
        print(f"wrote {_write(args.out, 'dots', record)}")
    elif args.mode == "compare-cell":
        if not (args.before and args.after):
            parser.error("compare-cell needs --before and --after record folders")
        record = {"kind": "compare-cell", "versions": _versions(), "cell": args.cell,
                  "before_jax": args.before_jax, **compare_cell(args.before, args.after)}
        print(f"wrote {_write(args.out, 'compare-cell', record)}")
    if args.summary:
        print(summary(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
