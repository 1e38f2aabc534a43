"""The study's report, computed from the committed records alone: cells, claims, aggregates, figures.

Per seed, a cell's **score** is its final return: the mean of its last `LAST_EVALS` evaluations. From the
records (`experiments.reproduce.records`) this module writes ``<results>/<tier>/``:

* ``cells.csv`` / ``cells.md``: per cell the seeds, mean final return with its 95% t-interval and sample
  standard deviation, the return as a fraction of the task's dense **reference** (the best of the dense
  recipes, `grid`) and of the cell's **recipe-matched** dense, each with Fieller's 95% interval, sizes and
  FLOPs as fractions of dense, wall time, and the commits its batches ran from;
* ``claims.csv`` / ``claims.md``: every claim of `CLAIMS` the finished cells can test, with its test,
  interval, Holm-adjusted p-values and verdict (`stats.verdict`: holds / does not hold / inconclusive);
* ``aggregates.md`` and ``profile.png`` / ``iqm.png``: IQM and mean over tasks with stratified-bootstrap
  95% intervals, probabilities of improvement, performance profiles (rliable), over scores normalised by
  each task's reference;
* ``curves/<task>_<algo>_<cell>.csv`` and ``<task>_<algo>.png``: evaluation return per seed, mean and
  its 95% band;
* ``report.md``: all of the above in one page, which `write` also places in docs/RESULTS.md between the
  ``<!-- study:<tier> -->`` markers.

Claims are declared here, with their margins, before their cells run; "dense" in a claim is the claimed
method's recipe-matched dense and ``REF`` the task's reference (each claim against dense is tested
against both).
"""
from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
from scipy import stats as sps

from experiments.reproduce import choices, grid, records, stats
from sparse_rl_jax import run_logging

LAST_EVALS = 3
REF = "REF"


class Claim(NamedTuple):
    text: str
    source: str
    kind: str  # "greater": a above b; "within": a within margin of b; "faster": a reaches b's final early
    a: str
    b: str
    margin: float = 0.0  # "within": the relative margin; "faster": the fraction of the run


CLAIMS = (
    Claim("RLx2 within 3% of dense at its sparsities", "RLx2 (Tan et al. 2023)", "within", "rlx2", "dense", 0.03),
    Claim("RLx2 above RigL at the same sparsity and schedule", "RLx2, Table 3", "greater", "rlx2", "rigl"),
    Claim("RigL above SET at the same sparsity and schedule", "RLx2, Table 3", "greater", "rigl", "set"),
    Claim("SET above static sparse at the same sparsity", "RLx2, Table 3", "greater", "set", "static"),
    Claim("RLx2 above static sparse at the same sparsity", "RLx2, Table 3", "greater", "rlx2", "static"),
    Claim("importance scoring improves RLx2", "Xu, Chen, Wang (TNNLS 2024)", "greater", "rlx2+importance", "rlx2"),
    Claim("RLx2's value learning alone improves dense", "RLx2's ablation (multi-step targets)", "greater",
          "dense@vl", "dense"),
    Claim("RLx2's sparsity costs under 3% at equal value learning", "RLx2 (Tan et al. 2023)", "within", "rlx2",
          "dense@vl", 0.03),
    Claim("DS above dense at DS's densities", "DS (Sokar et al. 2022)", "greater", "ds", "dense"),
    Claim("DS reaches dense's final return within 50% of the steps", "DS (Sokar et al. 2022)", "faster", "ds",
          "dense", 0.5),
    Claim("importance scoring improves DS", "Xu, Chen, Wang (TNNLS 2024)", "greater", "ds+importance", "ds"),
    Claim("DS at RLx2's sparsities falls below dense", "DS: 'at 80% sparsity DS fails to learn well'", "greater",
          "dense", "ds@rlx2_sparsity"),
    Claim("importance scoring improves DS at RLx2's sparsities", "Xu, Chen, Wang (TNNLS 2024)", "greater",
          "ds+importance@rlx2_sparsity", "ds@rlx2_sparsity"),
)
EQUAL_FLOPS = "importance"  # claims whose a is an importance variant are also tested at equal training FLOPs
PROBABILITY_PAIRS = (("rlx2", "rigl"), ("rlx2", "static"), ("rlx2+importance", "rlx2"), ("ds+importance", "ds"),
                     ("rlx2", REF))


def final_return(steps: np.ndarray, returns: np.ndarray, upto: Optional[float] = None) -> np.ndarray:
    """Per seed: mean of the last `LAST_EVALS` evaluations at or before ``upto`` env steps."""
    keep = steps <= upto if upto is not None else np.ones(len(steps), bool)
    return returns[keep][-LAST_EVALS:].mean(axis=0)


def steps_to_reach(steps: np.ndarray, returns: np.ndarray, target: float) -> Optional[int]:
    """First evaluation step at which the mean over seeds reaches ``target``."""
    hit = np.nonzero(returns.mean(axis=1) >= target)[0]
    return int(steps[hit[0]]) if len(hit) else None


class Study(NamedTuple):
    """A tier's finished cells, with the names the claims use resolved per task and algorithm."""
    tier: grid.Tier
    cells: Dict[grid.Cell, records.CellData]
    chosen: Dict[str, Dict[str, str]]  # "<task>/<algo>/<family>" -> choices
    results: str  # the records' root, `records`

    def groups(self) -> List[Tuple[str, str]]:
        return sorted({(c.task, c.algo) for c in self.cells})

    def reference(self, task: str, algo: str) -> Optional[grid.Cell]:
        """The best dense recipe of the task (highest mean final return; only among recipes with as
        many seeds as the best-seeded one, so that a recipe is not chosen for having fewer)."""
        recipes = [c for c in self.cells if (c.task, c.algo) == (task, algo) and c.is_recipe]
        if not recipes:
            return None
        n = max(self.cells[c].num_seeds for c in recipes)
        full = [c for c in recipes if self.cells[c].num_seeds == n]
        return max(full, key=lambda c: self.score(c).mean())

    def reference_settled(self, task: str, algo: str) -> bool:
        """Whether every dense recipe the tier declares for the task has run, so that its reference can no
        longer change (claims against the reference wait for this)."""
        return all(c in self.cells for c in self.tier.cells if (c.task, c.algo) == (task, algo) and c.is_recipe)

    def score(self, cell: grid.Cell) -> np.ndarray:
        d = self.cells[cell]
        return final_return(d.steps, d.returns)

    def choices_of(self, task: str, algo: str, family: str) -> Dict[str, str]:
        return {**self.chosen.get(f"family/{family}", {}), **self.chosen.get(f"{task}/{algo}/{family}", {})}

    def resolve(self, name: str, task: str, algo: str, family: Optional[str] = None) -> Optional[grid.Cell]:
        """A claim's name as a finished cell: ``REF`` the reference, ``dense`` the recipe-matched dense of
        ``family``, a family's own method the arm of its chosen period rule (`grid.resolve`)."""
        if name == REF:
            return self.reference(task, algo)
        if name == "dense":
            fam = family or "rlx2"
            buffer = self.choices_of(task, algo, fam).get("buffer")
            cell = grid.Cell(task, algo, "dense", (fam, buffer)) if buffer else None
        else:
            fam = grid.parse_name(task, algo, name).family
            cell = grid.resolve(self.tier, task, algo, name, self.choices_of(task, algo, fam).get("period"))
        return cell if cell in self.cells else None


def load(results: str, tier: grid.Tier) -> Study:
    cells = {}
    for cell in tier.cells:
        data = records.load(results, tier, cell)
        if data is not None:
            cells[cell] = data
    raw = choices.read(results, tier)
    return Study(tier, cells, {k: {n: v["value"] for n, v in e.items()} for k, e in raw.items()}, results)


# ------------------------------------------------------------------------------------------- cells
def _mean_ci(x: np.ndarray) -> Tuple[float, float, float]:
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    half = float(sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - half, m + half


def cell_rows(study: Study) -> List[Dict[str, Any]]:
    rows = []
    for cell, data in study.cells.items():
        score = study.score(cell)
        mean, lo, hi = _mean_ci(score)
        ref = study.reference(cell.task, cell.algo)
        matched = study.resolve("dense", cell.task, cell.algo, cell.family)
        row = {"task": cell.task, "algo": cell.algo, "cell": cell.name, "seeds": data.num_seeds,
               "env_steps": int(data.steps[-1]), "final_return": mean, "ci_lo": lo, "ci_hi": hi,
               "std": stats.sample_std(score), "reference": ref.name if ref else None,
               "matched_dense": matched.name if matched else None}
        for label, other in (("ref", ref), ("matched", matched)):
            r = stats.ratio_of(score, study.score(other)) if other is not None and other != cell else None
            row.update({f"pct_{label}": r.ratio if r else None, f"pct_{label}_lo": r.lo if r else None,
                        f"pct_{label}_hi": r.hi if r else None})
        means = [s.get("mean", {}) for s in data.summaries]
        for k in ("sparsity_actor", "sparsity_critic", "total_size", "train_flops", "inference_flops"):
            vals = [m.get(k) for m in means if m.get(k) is not None]
            row[k] = float(np.mean(vals)) if vals else None
        row["wall_time_s"] = float(sum(wall_seconds(h) for h in data.histories))
        commits = []
        for b in data.batches:
            p = os.path.join(b, records.PROVENANCE)
            if os.path.exists(p):
                prov = run_logging.read_json(p)
                commits += [(c or "?")[:8] for c in [prov.get("commit")] + [r.get("commit") for r in
                                                                            prov.get("runs", []) if "commit" in r]]
        row["commits"] = " ".join(dict.fromkeys(commits)) or "-"
        rows.append(row)
    order = {c: i for i, c in enumerate(study.tier.cells)}
    rows.sort(key=lambda r: order[grid.parse_name(r["task"], r["algo"], r["cell"])])
    return rows


# ------------------------------------------------------------------------------------------ claims
def _test(claim: Claim, a: np.ndarray, b: np.ndarray) -> Dict[str, Any]:
    if claim.kind == "greater":
        d = stats.welch(a, b)
        r = stats.ratio(a, b) if b.mean() > 0 else None
        return {"p_holds": d.p_greater, "p_fails": d.p_less,
                "interval": f"difference {stats.fmt_interval(d.diff, d.lo, d.hi)}"
                            + (f"; ratio {stats.fmt_interval(r.ratio, r.lo, r.hi, pct=True)}" if r else "")}
    if claim.kind == "within":
        e = stats.equivalence(a, b, claim.margin)
        r = stats.ratio(a, b, level=1 - 2 * stats.ALPHA)
        return {"p_holds": e.p, "p_fails": e.p_outside,
                "interval": f"ratio {stats.fmt_interval(r.ratio, r.lo, r.hi, pct=True)} (90%, TOST); "
                            f"smallest margin these seeds establish: {100 * e.smallest_margin:.0f}%"}
    raise ValueError(claim.kind)


def _faster(study: Study, a_cell: grid.Cell, b_cell: grid.Cell, fraction: float) -> Dict[str, Any]:
    """Bootstrap over a's seeds: the first step at which a's mean curve reaches b's mean final return."""
    a, b = study.cells[a_cell], study.cells[b_cell]
    target = float(final_return(b.steps, b.returns, upto=a.steps[-1]).mean())
    limit = fraction * a.steps[-1]
    point = steps_to_reach(a.steps, a.returns, target)
    rng = np.random.default_rng(stats.BOOTSTRAP_SEED)
    draws = []
    for _ in range(10_000):
        s = steps_to_reach(a.steps, a.returns[:, rng.integers(0, a.num_seeds, a.num_seeds)], target)
        draws.append(math.inf if s is None else s)
    draws = np.asarray(draws, float)
    # draws never reaching the target are inf: an interpolating quantile turns inf x 0 into nan
    lo, hi = np.quantile(draws, [0.025, 0.975], method="inverted_cdf")
    show = lambda v: "not reached" if math.isinf(v) else f"{int(v):,}"  # noqa: E731
    return {"p_holds": float(np.mean(draws > limit)), "p_fails": float(np.mean(draws <= limit)),
            "interval": f"reached at {show(point if point is not None else math.inf)} of {int(a.steps[-1]):,} "
                        f"steps (bootstrap 95%: {show(lo)} to {show(hi)})"}


def _equal_flops(study: Study, a_cell: grid.Cell, b_cell: grid.Cell) -> Optional[Tuple[np.ndarray, str]]:
    """a's per-seed final return at the env step where its training FLOPs equal b's whole run's."""
    fa = np.mean([s.get("mean", {}).get("train_flops") or np.nan for s in study.cells[a_cell].summaries])
    fb = np.mean([s.get("mean", {}).get("train_flops") or np.nan for s in study.cells[b_cell].summaries])
    if not (np.isfinite(fa) and np.isfinite(fb)) or fa <= fb:
        return None
    a = study.cells[a_cell]
    upto = a.steps[-1] * fb / fa
    if upto < a.steps[LAST_EVALS - 1]:
        return None
    return final_return(a.steps, a.returns, upto=upto), f"at {int(upto):,} env steps ({fb / fa:.0%} of a's FLOPs)"


def _planned(tier: grid.Tier, task: str, algo: str, name: str) -> bool:
    """Whether a claim's name will resolve to a cell of ``tier`` once everything has run."""
    names = {c.name for c in tier.cells if (c.task, c.algo) == (task, algo)}
    if name in ("dense", REF):
        return any(c.is_recipe for c in tier.cells if (c.task, c.algo) == (task, algo))
    return name in names or any(n.startswith(f"{name}@") and n.endswith("_period") for n in names)


def planned_family(tier: grid.Tier) -> int:
    """Holm's family: an upper bound on the claim rows ``tier`` yields once every cell has run (each claim
    against dense counted twice, recipe-matched and reference, and each importance claim twice more, at
    equal FLOPs). Of the candidate second tasks only one runs, so one of them is counted. Fixing the family
    before the runs keeps every verdict what it will be at the end (`stats.holm`)."""
    groups = {(c.task, c.algo) for c in tier.cells if c.task not in tier.second_tasks[1:]}
    rows = 0
    for task, algo in groups:
        for claim in CLAIMS:
            if _planned(tier, task, algo, claim.a) and _planned(tier, task, algo, claim.b):
                rows += (2 if "dense" in (claim.a, claim.b) else 1) * (2 if EQUAL_FLOPS in claim.a else 1)
    return rows


def claim_rows(study: Study) -> List[Dict[str, Any]]:
    """Every claim the finished cells can test, per task and algorithm; claims against the reference wait
    until all of the task's dense recipes have run (`Study.reference_settled`)."""
    rows = []
    for task, algo in study.groups():
        for claim in CLAIMS:
            a_name = claim.a
            fam = grid.parse_name(task, algo, claim.a if claim.a != "dense" else claim.b).family
            a_cell = study.resolve(claim.a, task, algo, fam)
            against = [("recipe-matched", claim.b)] if claim.b != "dense" and claim.a != "dense" \
                else [("recipe-matched", "dense"), ("reference", REF)]
            seen = set()
            for label, b_name in against:
                if label == "reference" and not study.reference_settled(task, algo):
                    continue
                if claim.a == "dense":
                    a_cell = study.resolve("dense" if label == "recipe-matched" else REF, task, algo, "ds")
                    b_cell = study.resolve(claim.b, task, algo, fam)
                else:
                    b_cell = study.resolve(b_name, task, algo, fam)
                if a_cell is None or b_cell is None or a_cell == b_cell or (a_cell, b_cell) in seen:
                    continue  # (the reference is often the recipe-matched dense itself: one row)
                seen.add((a_cell, b_cell))
                a, b = study.score(a_cell), study.score(b_cell)
                if len(a) < 2 or len(b) < 2:
                    continue
                base = {"task": task, "algo": algo, "claim": claim.text, "source": claim.source,
                        "a": a_cell.name, "b": b_cell.name, "against": label if "dense" in (claim.a, claim.b)
                        else "-", "seeds": f"{len(a)} / {len(b)}",
                        "a_mean": float(a.mean()), "b_mean": float(b.mean())}
                if claim.kind == "faster":
                    rows.append({**base, **_faster(study, a_cell, b_cell, claim.margin)})
                    continue
                rows.append({**base, **_test(claim, a, b)})
                if EQUAL_FLOPS in a_name:
                    eq = _equal_flops(study, a_cell, b_cell)
                    if eq is not None:
                        t = _test(claim, eq[0], b)
                        rows.append({**base, "claim": claim.text + ", at equal training FLOPs",
                                     "a_mean": float(eq[0].mean()), **t,
                                     "interval": t["interval"] + f"; a {eq[1]}"})
    family = planned_family(study.tier)
    holds = stats.holm([r["p_holds"] for r in rows], family)
    fails = stats.holm([r["p_fails"] for r in rows], family)
    for r, ph, pf in zip(rows, holds, fails):
        r.update({"p_holds_holm": ph, "p_fails_holm": pf, "verdict": stats.verdict(ph, pf)})
    return rows


# --------------------------------------------------------------------------------------- aggregates
def normalised_scores(study: Study, names: List[str]) -> Dict[str, np.ndarray]:
    """``{name: [runs, tasks]}``: final returns over the task's reference mean, tasks where every name ran
    and the reference is settled (`Study.reference_settled`), runs cut to the fewest seeds among them
    (rliable's stratified bootstrap needs equal runs)."""
    groups = []
    for task, algo in study.groups():
        if not study.reference_settled(task, algo):
            continue
        ref = study.reference(task, algo)
        cells = {n: (ref if n == REF else study.resolve(n, task, algo, grid.parse_name(task, algo, n).family
                                                          if n != REF else None)) for n in names}
        if ref is None or any(c is None for c in cells.values()):
            continue
        refmean = study.score(ref).mean()
        groups.append({n: study.score(c) / refmean for n, c in cells.items()})
    if not groups:
        return {}
    runs = min(len(v) for g in groups for v in g.values())
    return {n: np.stack([g[n][:runs] for g in groups], axis=1) for n in names}


AGG_METHODS = [REF, "static", "set", "rigl", "rlx2", "rlx2+importance", "dense@vl", "ds", "ds+importance"]


def aggregate_section(study: Study, out: str) -> str:
    present = [n for n in AGG_METHODS
               if any(study.resolve(n, t, a, grid.parse_name(t, a, n).family if n != REF else None)
                      for t, a in study.groups())]
    scores = normalised_scores(study, present)
    # a method missing from some task would shrink every other method's tasks: keep the largest set
    while present and not scores:
        present = present[:-1]
        scores = normalised_scores(study, present)
    if len(present) < 2:
        return ("Aggregates: not enough finished cells yet (a task counts once all its dense recipes have run, "
                "since its scores are normalised by the best of them).\n")
    pairs = [p for p in PROBABILITY_PAIRS if p[0] in scores and p[1] in scores]
    agg = stats.rl_aggregates(scores, pairs, reps=stats.BOOTSTRAP_REPS)
    n_runs, n_tasks = next(iter(scores.values())).shape
    lines = [f"Over {n_tasks} task(s) x algorithm(s), {n_runs} runs each (scores: final return / the task's "
             f"dense reference mean; stratified bootstrap, {stats.BOOTSTRAP_REPS:,} resamples, seed "
             f"{stats.BOOTSTRAP_SEED}).", "", "| method | IQM [95% CI] | mean [95% CI] |", "|---|---:|---:|"]
    for n in present:
        lines.append(f"| {n} | {stats.fmt_interval(*agg.iqm[n], digits=2)} | "
                     f"{stats.fmt_interval(*agg.mean[n], digits=2)} |")
    if agg.improvement:
        lines += ["", "| X | Y | P(X > Y) [95% CI] |", "|---|---|---:|"]
        lines += [f"| {x} | {y} | {stats.fmt_interval(*v, digits=2)} |" for (x, y), v in agg.improvement.items()]
    from sparse_rl_jax import plotting
    plotting.performance_profiles(agg.profile_taus, agg.profiles, os.path.join(out, "profile.png"))
    plotting.interval_bars({n: agg.iqm[n] for n in present}, os.path.join(out, "iqm.png"),
                           xlabel="IQM of normalised final return (95% CI)")
    lines += ["", "![performance profiles](profile.png) ![IQM](iqm.png)"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ sparsity curve
def curve_rows(study: Study, rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The sparsity curve's points: each curve method's plain cell (the paper's level) and its level cells,
    with their sparsities and final return as a fraction of the task's dense reference (Fieller 95% CI)."""
    by_name = {(r["task"], r["algo"], r["cell"]): r for r in rows}
    out = []
    for task, algo in study.groups():
        for method in grid.CURVE_METHODS:
            cells = [study.resolve(method, task, algo)] + [
                grid.Cell(task, algo, method, (level,)) for level in grid.LEVELS]
            for cell in cells:
                row = by_name.get((task, algo, cell.name)) if cell is not None else None
                if row is None or row["pct_ref"] is None:
                    continue
                out.append({"task": task, "algo": algo, "method": method, "cell": cell.name,
                            "seeds": row["seeds"], "sparsity_actor": row["sparsity_actor"],
                            "sparsity_critic": row["sparsity_critic"], "total_size": row["total_size"],
                            "pct_ref": row["pct_ref"], "pct_ref_lo": row["pct_ref_lo"],
                            "pct_ref_hi": row["pct_ref_hi"], "reference": row["reference"]})
    return out


def curve_section(points: List[Dict[str, Any]], out: str) -> str:
    """The curve's table and figure (x: the agent's overall sparsity, 1 - its size as a fraction of dense)."""
    from sparse_rl_jax import plotting

    if not points:
        return "Sparsity curve: no level cell has finished yet.\n"
    lines = ["| task | method | cell | seeds | sparsity actor / critic | size of dense | "
             "final return, % of the dense reference [95% CI] |", "|---|---|---|---:|---:|---:|---:|"]
    figures = []
    for task, algo in sorted({(p["task"], p["algo"]) for p in points}):
        series: Dict[str, List[tuple]] = {}
        for p in (p for p in points if (p["task"], p["algo"]) == (task, algo)):
            lines.append(f"| {task} {algo.upper()} | {p['method']} | {p['cell']} | {p['seeds']} | "
                         f"{_fmt(p['sparsity_actor'], 'frac')} / {_fmt(p['sparsity_critic'], 'frac')} | "
                         f"{_fmt(p['total_size'], 'frac')} | "
                         f"{stats.fmt_interval(p['pct_ref'], p['pct_ref_lo'], p['pct_ref_hi'], pct=True)} |")
            if p["total_size"] is not None:
                series.setdefault(p["method"], []).append(
                    (1.0 - p["total_size"], p["pct_ref"], p["pct_ref_lo"], p["pct_ref_hi"]))
        name = f"sparsity_curve_{task}_{algo}.png"
        plotting.fraction_curves(series, os.path.join(out, name), xlabel="sparsity of the agent (1 - size / dense)",
                                 ylabel="final return / dense reference",
                                 title=f"{task} {algo.upper()}: final return against sparsity, 95% CIs")
        figures.append(f"![sparsity curve {task} {algo}]({name})")
    return "\n".join(lines + [""] + figures) + "\n"


# ---------------------------------------------------------------------------------------- writing
def _fmt(v: Any, kind: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if kind == "pct":
        return "inf" if math.isinf(v) else f"{100 * v:.0f}%"
    if kind == "frac":
        return f"{v:.3f}"
    if kind == "p":
        return f"{v:.3g}"
    if kind == "time":
        return run_logging.format_duration(v)
    return f"{v:.0f}" if isinstance(v, float) else str(v)


def rate_key(cell: grid.Cell) -> str:
    """What sets a cell's cost per seed-step: its algorithm and its family (whose batch size it has:
    RLx2's 256, DS's 100)."""
    return f"{cell.algo}/{cell.family}"


def seed_step_rates(cells: Dict[grid.Cell, records.CellData]) -> Dict[str, List[float]]:
    """Per algorithm and family (`rate_key`), the seed-steps per second of each finished batch of ``cells``
    (`load`'s records): the median over its periods (the first, which compiles, left out; a period paused
    by other work is one outlier among twenty) of the program's env steps per second times its seeds,
    since a vmapped seed costs the same whether 1 or 10 share it."""
    rates: Dict[str, List[float]] = {}
    for cell, data in cells.items():
        for batch, history in zip(data.batches, data.histories):
            sps = [float(np.median(m["training/sps"])) for _, m in history[1:] if m.get("training/sps")]
            # a program that ran several levels ran that many times this batch's seeds
            seeds = len(history[0][1].get("training/sps", [])) * records.programs_sharing(batch) \
                if history else 0
            if sps and seeds:
                rates.setdefault(rate_key(cell), []).append(float(np.median(sps)) * seeds)
    return rates


def seed_steps_left(results: str, tier: grid.Tier, cells: List[grid.Cell],
                    seeds: int) -> Tuple[float, Dict[str, float]]:
    """(cells, seed-steps per `rate_key`) that ``cells`` still need for ``seeds`` seeds each, less the
    seeds on record. Before the second task is chosen its candidates' cells count once (only one
    candidate's cells will run)."""
    chosen_any = choices.read(results, tier).get(choices.TIER_KEY, {}).get("second_task")
    left: Dict[str, float] = {}
    count = 0.0
    for cell in cells:
        data = records.load(results, tier, cell)
        want = grid.seeds_wanted(tier, cell, seeds, choices.of(results, tier, cell))
        share = 1.0 if chosen_any or grid.is_probe(tier, cell) or cell.task not in tier.second_tasks \
            else 1.0 / len(tier.second_tasks)
        key, have = rate_key(cell), (data.num_seeds if data else 0)
        left[key] = left.get(key, 0.0) + share * (tier.env_steps or 1_000_000) * (want - have)
        count += share
    return count, left


def hours_at_rates(rates: Dict[str, List[float]], left: Dict[str, float]) -> Tuple[Optional[float], List[str]]:
    """Wall hours for ``left`` (seed-steps per `rate_key`) at the median recorded rate of each key (a key
    with no finished batch yet takes its algorithm's rate, else every batch's), and one phrase per key
    naming its rate; (None, []) when no batch has a rate yet."""
    known = [r for rs in rates.values() for r in rs]
    hours, parts = 0.0, []
    for key, seed_steps in sorted(left.items()):
        same_algo = [r for k, rs in rates.items() if k.split("/")[0] == key.split("/")[0] for r in rs]
        fallback = same_algo or known
        if key not in rates and not fallback:
            return None, []
        rate = float(np.median(rates[key] if key in rates else fallback))
        hours += seed_steps / rate / 3600
        parts.append(f"{key} {rate:.0f} seed-steps/s" + (f" (median of {len(rates[key])} batches)" if key in rates
                                                         else " (no batch yet: " + ("its algorithm's rate)" if same_algo
                                                                                    else "the others' rate)")))
    return hours, parts


def cells_markdown(rows: List[Dict[str, Any]], study: Study) -> str:
    lines = ["| task | algo | cell | seeds | final return [95% CI] | sd | % of reference [95% CI] | "
             "% of matched dense [95% CI] | sparsity actor / critic | total size | train FLOPs | wall time | "
             "commits |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        pr = "-" if r["pct_ref"] is None else (f"{_fmt(r['pct_ref'], 'pct')} [{_fmt(r['pct_ref_lo'], 'pct')}, "
                                              f"{_fmt(r['pct_ref_hi'], 'pct')}]")
        pm = "-" if r["pct_matched"] is None else (f"{_fmt(r['pct_matched'], 'pct')} [{_fmt(r['pct_matched_lo'], 'pct')}, "
                                                  f"{_fmt(r['pct_matched_hi'], 'pct')}]")
        lines.append(f"| {r['task']} | {r['algo']} | {r['cell']} | {r['seeds']} | {_fmt(r['final_return'])} "
                     f"[{_fmt(r['ci_lo'])}, {_fmt(r['ci_hi'])}] | {_fmt(r['std'])} | {pr} | {pm} | "
                     f"{_fmt(r['sparsity_actor'], 'frac')} / {_fmt(r['sparsity_critic'], 'frac')} | "
                     f"{_fmt(r['total_size'], 'frac')} | {_fmt(r['train_flops'], 'frac')} | "
                     f"{_fmt(r['wall_time_s'], 'time')} | {r['commits']} |")
    done = {(r["task"], r["algo"], r["cell"]) for r in rows}
    second = study.chosen.get(choices.TIER_KEY, {}).get("second_task")
    unchosen = [c.key for c in study.tier.cells if second and c.task in study.tier.second_tasks
                and c.task != second and not grid.is_probe(study.tier, c)]
    missing = [c.key for c in study.tier.cells
               if (c.task, c.algo, c.name) not in done and c.key not in unchosen]
    if missing:
        lines.append(f"\nNot run yet ({len(missing)} of {len(study.tier.cells)}): {', '.join(missing)}")
    tier, unrun = study.tier, [grid.parse_cell(k) for k in missing]
    short = [c for c, d in study.cells.items() if c.key not in unchosen
             and d.num_seeds < grid.seeds_wanted(tier, c, tier.seeds, choices.of(study.results, tier, c))]
    cells, left = seed_steps_left(study.results, tier, unrun + short, tier.seeds)
    hours, _ = hours_at_rates(seed_step_rates(study.cells), left)
    if hours is not None:
        what = ", ".join(p for p in ((f"the {len(unrun)} not run yet" if unrun else ""),
                                     (f"{len(short)} short of {tier.seeds} seeds" if short else "")) if p)
        once = "" if cells == len(unrun + short) else \
            f", of which {cells:.0f} run (the second task's candidates count once)"
        lines.append(f"\nLeft to run ({what}{once}): {sum(left.values()) / 1e6:.1f}M seed-steps, about "
                     f"{hours:.0f} hours of wall time at the recorded rates (`--list` gives the breakdown).")
    if second:
        probes = ", ".join(f"{t}/td3/{grid.PROBE}" for t in study.tier.second_tasks)
        lines.append(f"\nSecond task (chosen from the probes {probes}, choices.json): {second}; the other "
                     f"candidates' cells do not run.")
    spent = compute_spent(study)
    if spent["hours"]:
        lines.append(f"\nCompute spent on the recorded batches: {spent['hours']:.1f} hours of wall time "
                     f"({spent['batches']} batches; {', '.join(spent['cpus'])}; the periods' wall time from each "
                     "batch's metrics, every attempt included, as are pauses while the machine did other work).")
    refs = sorted({(r["task"], r["algo"], r["reference"]) for r in rows if r["reference"]})
    if refs:
        lines.append("\nReferences (best dense recipe, by mean final return over the same seeds): "
                     + "; ".join(f"{t}/{a}: {n}" + ("" if study.reference_settled(t, a) else
                                                    " (provisional: not all of its dense recipes have run; "
                                                    "claims against the reference wait for them)")
                                 for t, a, n in refs))
    lines.append(f"\nFinal return: per seed the mean of its last {LAST_EVALS} evaluations; mean over seeds with "
                 "its 95% t-interval; sd is the sample standard deviation (ddof 1). Percentages: ratio of means "
                 "with Fieller's 95% interval. Sizes and FLOPs: fractions of the dense agent.")
    return "\n".join(lines) + "\n"


def wall_seconds(history: List[list]) -> float:
    """A batch's training wall time: its periods' (every attempt's, as the metrics keep them across
    resumptions; a pause for other work on the machine included)."""
    return float(sum(run_logging.mean_of(m.get("training/walltime")) or 0.0 for _, m in history))


def compute_spent(study: Study) -> Dict[str, Any]:
    """Wall hours of every recorded batch (`wall_seconds`) and the CPUs they ran on (their provenance)."""
    seconds, batches, cpus = 0.0, 0, set()
    for data in study.cells.values():
        for b, history in zip(data.batches, data.histories):
            share = records.programs_sharing(b)  # a levels run's wall time once, over its levels' records
            seconds += wall_seconds(history) / share
            batches += 1 / share
            p = os.path.join(b, records.PROVENANCE)
            if os.path.exists(p):
                prov = run_logging.read_json(p)
                cpus.add(f"{prov.get('cpu_model', '?')} x {prov.get('cpu_count', '?')}")
    return {"hours": seconds / 3600, "batches": round(batches), "cpus": sorted(cpus)}


def claims_markdown(rows: List[Dict[str, Any]], family: int) -> str:
    if not rows:
        return ("No claim can be tested yet: no claim has both of its cells finished (see the cells table "
                "for what has run; claims against a task's reference also wait for all its dense recipes).\n")
    lines = ["| task | algo | claim | a vs b | against | seeds | a / b mean | interval | p (Holm) holds / "
             "fails | verdict |", "|---|---|---|---|---|---:|---:|---|---:|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['algo']} | {r['claim']} | {r['a']} vs {r['b']} | {r['against']} | "
                     f"{r['seeds']} | {r['a_mean']:.0f} / {r['b_mean']:.0f} | {r['interval']} | "
                     f"{_fmt(r['p_holds_holm'], 'p')} / {_fmt(r['p_fails_holm'], 'p')} | **{r['verdict']}** |")
    lines.append(f"\nVerdicts: **holds** when the claim's one-sided test (Welch; for 'within', two one-sided "
                 f"tests on the ratio; for 'faster', a bootstrap over seeds) rejects at {stats.ALPHA} after "
                 f"Holm's correction over the tier's planned family of {family} claim rows ({len(rows)} tested so "
                 f"far, the rest counted at p = 1, so no verdict here can be reversed by a claim tested later); "
                 f"**does not hold** when the opposite test does; "
                 "**inconclusive** otherwise. "
                 f"At n seeds a side, a one-sided test at {stats.ALPHA} with 80% power needs a true difference "
                 f"of about {stats.describe_power(10):.1f} sd at 10 seeds ({stats.describe_power(3):.1f} sd at "
                 "3), before Holm.")
    return "\n".join(lines) + "\n"


def csv_text(rows: List[Dict[str, Any]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if v is None else v for k, v in r.items()})
    return out.getvalue()


MARK = "<!-- study:{} {} -->"


def place(markdown_path: str, tier: str, body: str) -> bool:
    """Put ``body`` between the tier's markers of ``markdown_path`` (if the file has them)."""
    if not os.path.exists(markdown_path):
        return False
    with open(markdown_path) as f:
        text = f.read()
    begin, end = MARK.format(tier, "begin"), MARK.format(tier, "end")
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    run_logging.write_text_atomic(markdown_path, f"{head}{begin}\n{body}{end}{tail}")
    return True


def write(results: str, tier: grid.Tier, markdown: Optional[str] = None) -> int:
    """Write the tier's report from its records; returns the number of finished cells."""
    from sparse_rl_jax import plotting
    study = load(results, tier)
    out = os.path.join(results, tier.name)
    os.makedirs(os.path.join(out, "curves"), exist_ok=True)
    rows = cell_rows(study)
    crow = claim_rows(study)
    for cell, data in study.cells.items():
        m = data.returns.mean(axis=1)
        half = (sps.t.ppf(0.975, data.num_seeds - 1) * data.returns.std(axis=1, ddof=1) / math.sqrt(data.num_seeds)
                if data.num_seeds > 1 else np.full_like(m, np.nan))
        curve = [{"env_steps": int(s), **{f"seed_{k}": float(v) for k, v in zip(data.seeds, r)}, "mean": float(mm),
                  "ci_lo": float(mm - h), "ci_hi": float(mm + h)}
                 for s, r, mm, h in zip(data.steps, data.returns, m, half)]
        run_logging.write_text_atomic(os.path.join(out, "curves", f"{cell.task}_{cell.algo}_{cell.dirname}.csv"),
                                      csv_text(curve))
    for task, algo in study.groups():
        cur = {c.name: (d.steps, d.returns) for c, d in study.cells.items() if (c.task, c.algo) == (task, algo)}
        plotting.mean_ci_curves(cur, os.path.join(out, f"{task}_{algo}.png"),
                                title=f"{task} {algo.upper()} ({tier.name} tier): mean and 95% band over seeds")
    run_logging.write_text_atomic(os.path.join(out, "cells.csv"), csv_text(rows))
    run_logging.write_text_atomic(os.path.join(out, "claims.csv"), csv_text(crow))
    cells_md, claims_md = cells_markdown(rows, study), claims_markdown(crow, planned_family(study.tier))
    agg_md = aggregate_section(study, out)
    points = curve_rows(study, rows)
    run_logging.write_text_atomic(os.path.join(out, "curve.csv"), csv_text(points))
    curve_md = curve_section(points, out)
    run_logging.write_text_atomic(os.path.join(out, "curve.md"), curve_md)
    run_logging.write_text_atomic(os.path.join(out, "cells.md"), cells_md)
    run_logging.write_text_atomic(os.path.join(out, "claims.md"), claims_md)
    run_logging.write_text_atomic(os.path.join(out, "aggregates.md"), agg_md)
    prefix = os.path.relpath(out, os.path.dirname(markdown)) if markdown else "."
    plots = " ".join(f"![{t} {a}]({prefix}/{t}_{a}.png)" for t, a in study.groups())
    body = (f"### Claims\n\n{claims_md}\n### Aggregates\n\n{agg_md.replace('](', f']({prefix}/')}\n"
            f"### Sparsity curve\n\n{curve_md.replace('](', f']({prefix}/')}\n"
            f"### Cells\n\n{cells_md}\n### Learning curves\n\n{plots}\n")
    run_logging.write_text_atomic(os.path.join(out, "report.md"), body.replace(f"]({prefix}/", "](")
                                  if markdown else body)
    if markdown:
        place(markdown, tier.name, body)
    return len(study.cells)
