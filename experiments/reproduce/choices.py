"""The family choices of a tier, made once from finished cells and recorded in ``choices.json``.

* per task, algorithm and family (`grid.Cell.family`), ``buffer``: ``scaled`` or ``full``, whichever of
  the family's own dense pair (``dense@<family>.scaled``, ``dense@<family>.full``) has the higher mean
  final return over the same seeds; ``scaled`` for a family whose scaled buffer already holds the whole
  run (DS), which has one recipe (`grid.recipes`);
* per tier with candidate second tasks (`grid.Tier.second_tasks`), ``second_task``: once every
  candidate's probe (`grid.PROBE`, a dense TD3) has `grid.Tier.probe_seeds` seeds, the candidate whose
  final return rises most clearly above its untrained policy's (the first evaluation, taken after the
  random warm-up and before any update): per seed the difference final - untrained, a one-sided
  one-sample t-test at `stats.ALPHA`, and among the candidates that pass it the largest t; ``none`` if
  none passes;
* per family (every task and algorithm), ``period``: ``scaled`` only when the arm
  ``<family>@scaled_period`` of the family's period ablation (the first in grid order whose two arms
  finished) is better than ``<family>@paper_period`` by a one-sided Welch test at `stats.ALPHA`; else
  ``paper``.

Each choice is written with the numbers it was made from and the records it read, and is never
rewritten: cells started after it ran with it, and a later record (more seeds) must not change their
config under them. Delete the entry by hand to choose again (and rerun what depended on it).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, Optional

import numpy as np

from experiments.reproduce import grid, stats

FILE = "choices.json"
TIER_KEY = "tier"  # the entry of choices that hold for the whole tier (the second task)


def path(results: str, tier: grid.Tier) -> str:
    return os.path.join(results, tier.name, FILE)


def read(results: str, tier: grid.Tier) -> Dict[str, Any]:
    p = path(results, tier)
    if not os.path.exists(p):
        return {}
    with open(p) as f:
        return json.load(f)


def _key(cell: grid.Cell) -> str:
    return f"{cell.task}/{cell.algo}/{cell.family}"


def _family_key(cell: grid.Cell) -> str:
    return f"family/{cell.family}"


def of(results: str, tier: grid.Tier, cell: grid.Cell) -> Dict[str, str]:
    """The recorded choices of ``cell``'s family (``{}`` when none is made yet)."""
    data = read(results, tier)
    entries = {**data.get(TIER_KEY, {}), **data.get(_family_key(cell), {}), **data.get(_key(cell), {})}
    return {k: v["value"] for k, v in entries.items()}


def _write(results: str, tier: grid.Tier, data: Dict[str, Any]) -> None:
    p = path(results, tier)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    tmp = p + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, p)


def _second_task(tier: grid.Tier, final, untrained) -> Optional[Dict[str, Any]]:
    """The second-task choice from the candidates' probes, or None while a probe lacks its seeds."""
    from scipy import stats as sps

    probes = {}
    for task in tier.second_tasks:
        probe = grid.parse_name(task, "td3", grid.PROBE)
        fin, unt = final(probe), untrained(probe)
        if fin is None or len(fin) < tier.probe_seeds:
            return None
        probes[task] = fin - unt
    n = min(len(d) for d in probes.values())
    rows = {}
    for task, diff in probes.items():
        test = sps.ttest_1samp(diff[:n], 0.0, alternative="greater")
        rows[task] = {"mean_gain": float(np.mean(diff[:n])), "sd_gain": float(np.std(diff[:n], ddof=1)),
                      "t": float(test.statistic), "p": float(test.pvalue)}
    learners = [t for t, r in rows.items() if r["p"] <= stats.ALPHA]
    return {"value": max(learners, key=lambda t: rows[t]["t"]) if learners else "none", "probes": rows,
            "seeds": n, "rule": f"final - untrained return per seed of {grid.PROBE}: one-sided one-sample "
                                f"t-test at {stats.ALPHA}; the largest t among those that pass"}


def choose(results: str, tier: grid.Tier, cell: grid.Cell,
           final: Callable[[grid.Cell], Optional[np.ndarray]],
           untrained: Optional[Callable[[grid.Cell], Optional[np.ndarray]]] = None) -> Dict[str, str]:
    """Make the choices ``cell``'s family (and its tier) still lack whose deciding cells have finished
    (``final(cell)``: per-seed final returns of a finished cell, or None; ``untrained(cell)``: its per-seed
    first evaluation), record them, and return the cell's choices."""
    data = read(results, tier)
    entry = data.setdefault(_key(cell), {})
    family = data.setdefault(_family_key(cell), {})
    whole = data.setdefault(TIER_KEY, {})
    fam = cell.family
    made = []
    if tier.second_tasks and "second_task" not in whole and untrained is not None:
        second = _second_task(tier, final, untrained)
        if second is not None:
            whole["second_task"] = second
            made.append(second)
    if "buffer" not in entry:
        pair = {r.buffer: final(r) for r in grid.recipes(tier, cell.task, cell.algo, fam)}
        if pair and all(v is not None for v in pair.values()):
            means = {b: float(np.mean(v)) for b, v in pair.items()}
            entry["buffer"] = {"value": max(means, key=means.get), "mean_final_return": means,
                               "seeds": {b: len(v) for b, v in pair.items()},
                               "rule": ("higher mean final return of the family's dense pair" if len(pair) > 1
                                        else "the family's one recipe: its scaled buffer holds the whole run")}
            made.append(entry["buffer"])
    arms = [c for c in tier.cells if c.method == fam and c.tags == ("scaled_period",)]
    for arm in arms if "period" not in family else []:
        paper = final(grid.Cell(arm.task, arm.algo, fam, ("paper_period",)))
        scaled = final(arm)
        if paper is not None and scaled is not None:
            test = stats.welch(scaled, paper)
            family["period"] = {"value": "scaled" if test.p_greater <= stats.ALPHA else "paper",
                                "decided_on": f"{arm.task}/{arm.algo}",
                                "mean_final_return": {"paper": float(np.mean(paper)),
                                                      "scaled": float(np.mean(scaled))},
                                "seeds": {"paper": len(paper), "scaled": len(scaled)},
                                "difference_95ci": [test.lo, test.hi], "p_scaled_better": test.p_greater,
                                "rule": f"scaled only if better by a one-sided Welch test at {stats.ALPHA}"}
            made.append(family["period"])
            break
    for m in made:
        m["made"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if made:
        _write(results, tier, {k: v for k, v in data.items() if v})
    return {k: v["value"] for k, v in {**whole, **family, **entry}.items()}
