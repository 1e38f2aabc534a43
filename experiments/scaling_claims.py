"""The claims a scaling sweep tests, with intervals and computed verdicts (as the study's, docs/RESULTS.md).

A scaling sweep (``experiments.sweep --widths ... [--matched]``) declares its claims from its grid before
any cell runs, per env:

* **sparse above dense at the widest critic** (Ma et al., ICML 2025): each sparse method at each level that
  every width runs, against the dense critic of the widest width;
* **a wide sparse critic above a narrower dense one with the same weights** (Ma et al.'s comparison): each
  sparse method at a ``--matched`` level of width W against the dense critic of the narrower width it
  matches;
* **sparse return rises with width** / **dense return rises with width**: widest against narrowest, the
  pair that says whether a network keeps improving as it grows;
* **a dynamic topology above a static one** (the question Ma et al.'s static masks leave open): each
  dynamic method against static, at each width and level.

Each is a one-sided Welch test on per-seed scores (the mean of a seed's last `report.LAST_EVALS`
evaluations), with the 95% interval of the difference and Fieller's of the ratio; Holm's correction runs
over every claim the grid declares (fixed before the runs, untested ones at p = 1, `stats.holm`); the
verdict is one of `stats.VERDICTS`. `write` puts ``claims.csv`` / ``claims.md`` beside the sweep's tables
and, given a page, the table between its ``<!-- study:scaling begin/end -->`` markers.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from experiments.reproduce import records, report, stats
from sparse_rl_jax import run_logging, sweep

DENSE = sweep.DENSE
STATIC = "static"


class Claim(NamedTuple):
    text: str
    source: str
    a: sweep.Cell  # claimed above b
    b: sweep.Cell


def _fmt_cell(cell: sweep.Cell) -> str:
    level = "" if cell.method == DENSE else f" @ {cell.critic_sparsity:g}"
    return f"{cell.method}{level}, critic {cell.width}"


def plan(cells: Sequence[sweep.Cell], matched: Optional[Dict[int, List[float]]] = None) -> List[Claim]:
    """The claims ``cells`` (a scaling sweep's grid) can decide once every cell has run; ``matched``:
    `sweep.matched_sparsities` of the grid's widths (per width, one level per narrower width, narrowest
    first). Cells with a swept drop fraction or learning rate take no part (a claim compares widths,
    sparsities and methods only)."""
    plain = [c for c in cells if c.drop_fraction is None and c.lr is None and c.width is not None]
    claims: List[Claim] = []
    for env in dict.fromkeys(c.env for c in plain):
        here = {c for c in plain if c.env == env}
        widths = sorted({c.width for c in here})
        if len(widths) < 2:
            continue
        narrow, wide = widths[0], widths[-1]
        sparse = list(dict.fromkeys(c.method for c in plain if c.env == env and c.method != DENSE))
        dynamic = [m for m in sparse if m != STATIC]

        def cell(method, width, level=0.0):
            c = sweep.Cell(env, method, level, level, None, None, width)
            return c if c in here else None

        def levels(method):  # the levels every width runs (both networks at one level)
            per = [{c.critic_sparsity for c in here if c.method == method and c.width == w
                    and c.actor_sparsity == c.critic_sparsity} for w in widths]
            return sorted(set.intersection(*per)) if per else []

        def add(text, source, a, b):
            if a is not None and b is not None:
                claims.append(Claim(text, source, a, b))

        for m in sparse:
            for s in levels(m):
                add("sparse above dense at the widest critic", "Ma et al. 2025", cell(m, wide, s), cell(DENSE, wide))
        for m in sparse:
            for w in widths:
                for n, s in zip([x for x in widths if x < w], (matched or {}).get(w, [])):
                    add("a wide sparse critic above a narrower dense one with the same weights", "Ma et al. 2025",
                        cell(m, w, s), cell(DENSE, n))
        for m in sparse:
            for s in levels(m):
                add("sparse return rises with width", "Ma et al. 2025", cell(m, wide, s), cell(m, narrow, s))
        add("dense return rises with width", "Ma et al. 2025 (dense stops improving at scale)",
            cell(DENSE, wide), cell(DENSE, narrow))
        for d in dynamic:
            for w in widths:
                for s in sorted(set(levels(d)) & set(levels(STATIC))):
                    add("a dynamic topology above a static one", "open question (Ma et al.'s masks are static)",
                        cell(d, w, s), cell(STATIC, w, s))
    return claims


def scores(root: str, cell: sweep.Cell) -> Optional[np.ndarray]:
    """Per-seed scores of a done cell (None: not done, or no evaluation recorded)."""
    workdir = cell.workdir(root)
    if not sweep.is_done(cell, root):
        return None
    steps, returns = records.curve(run_logging.read_history(workdir))
    return report.final_return(steps, returns) if len(steps) else None


def rows(root: str, claims: Sequence[Claim]) -> List[Dict[str, Any]]:
    """The claims whose two cells are done, tested; Holm over all of ``claims``."""
    out = []
    for claim in claims:
        a, b = scores(root, claim.a), scores(root, claim.b)
        if a is None or b is None or len(a) < 2 or len(b) < 2:
            continue
        d = stats.welch(a, b)
        r = stats.ratio(a, b) if b.mean() > 0 else None
        out.append({"env": claim.a.env, "claim": claim.text, "source": claim.source, "a": _fmt_cell(claim.a),
                    "b": _fmt_cell(claim.b), "seeds": f"{len(a)} / {len(b)}", "a_mean": float(a.mean()),
                    "b_mean": float(b.mean()),
                    "interval": f"difference {stats.fmt_interval(d.diff, d.lo, d.hi)}"
                                + (f"; ratio {stats.fmt_interval(r.ratio, r.lo, r.hi, pct=True)}" if r else ""),
                    "p_holds": d.p_greater, "p_fails": d.p_less})
    holds = stats.holm([r["p_holds"] for r in out], len(claims))
    fails = stats.holm([r["p_fails"] for r in out], len(claims))
    for r, ph, pf in zip(out, holds, fails):
        r.update({"p_holds_holm": ph, "p_fails_holm": pf, "verdict": stats.verdict(ph, pf)})
    return out


def markdown(tested: List[Dict[str, Any]], family: int) -> str:
    lines = ["### Scaling claims", ""]
    if not tested:
        lines.append(f"None of the {family} claims this grid declares can be tested yet: no claim has both of its "
                     "cells done.")
        return "\n".join(lines) + "\n"
    lines += ["| env | claim | a vs b | seeds | a / b mean | interval | p (Holm) holds / fails | verdict |",
              "|---|---|---|---:|---:|---|---:|---|"]
    for r in tested:
        lines.append(f"| {r['env']} | {r['claim']} | {r['a']} vs {r['b']} | {r['seeds']} | {r['a_mean']:.0f} / "
                     f"{r['b_mean']:.0f} | {r['interval']} | {r['p_holds_holm']:.3f} / {r['p_fails_holm']:.3f} | "
                     f"**{r['verdict']}** |")
    lines += ["", f"Per seed the score is the mean of its last {report.LAST_EVALS} evaluations. Verdicts: "
              f"**holds** when the one-sided Welch test of the claim rejects at {stats.ALPHA} after Holm's "
              f"correction over the {family} claims the grid declares ({len(tested)} tested, the rest counted at "
              "p = 1); **does not hold** when the opposite test does; **inconclusive** otherwise. Intervals: 95% "
              "of the difference of means (Welch) and of their ratio (Fieller)."]
    return "\n".join(lines) + "\n"


def write(root: str, cells: Sequence[sweep.Cell], matched: Optional[Dict[int, List[float]]] = None,
          page: Optional[str] = None) -> List[Dict[str, Any]]:
    """``claims.csv`` and ``claims.md`` in ``root`` (and the table into ``page``'s scaling section)."""
    claims = plan(cells, matched)
    tested = rows(root, claims)
    text = markdown(tested, len(claims))
    run_logging.write_text_atomic(os.path.join(root, "claims.csv"), report.csv_text(tested))
    run_logging.write_text_atomic(os.path.join(root, "claims.md"), text)
    if page and not report.place(page, "scaling", text):
        raise ValueError(f"{page} has no <!-- study:scaling begin --> / <!-- study:scaling end --> markers")
    return tested
