"""The study's statistics: per-claim tests with intervals, Holm's correction, and the three verdict words.

Every number a verdict rests on is computed here from per-seed scores (one score per seed: the mean of
its last evaluations, `experiments.reproduce.report`), never written by hand:

* `welch`: the difference of two means with its Welch 95% confidence interval and one-sided p-values
  (sample standard deviations, ddof 1; no equal-variance assumption).
* `ratio`: the ratio of two means (a "% of dense") with Fieller's 95% interval, which stays exact when
  the reference's mean is uncertain (unbounded when the reference is not clearly away from zero).
* `equivalence`: "A within m of B" as two one-sided tests on the ratio (Sasabuchi's form:
  ``mean_a - (1 -/+ m) mean_b`` against zero with Welch's degrees of freedom); its p-value is the larger
  of the two, and `smallest_margin` is the narrowest margin the same data would establish at the level.
* `holm`: Holm's step-down adjustment over the claims a tier plans (`report.planned_family`), so "holds"
  keeps a 5% family-wise error rate however many claims are tested, and a verdict reached before the
  tier's last cell cannot be reversed by claims tested after it.
* `verdict`: **holds** (the claim's test rejects its null after Holm), **does not hold** (the opposite
  test does: the other method is better, or the ratio lies outside the margin), **inconclusive** (neither).

The aggregate measures of the RL evaluation standard (Agarwal et al., NeurIPS 2021) come from `rliable`
itself (the optional ``study`` extra), in `rl_aggregates`; its bootstrap draws from NumPy's global
generator whatever ``random_state`` says, so it runs inside `numpy_seed`, which seeds that generator and
restores it afterwards: the same records give the same intervals on every machine and every rerun.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
VERDICTS = ("holds", "does not hold", "inconclusive")
BOOTSTRAP_REPS = 50_000
BOOTSTRAP_SEED = 20211206  # fixed: a report's intervals are a function of its records alone


def sample_std(x: Sequence[float]) -> float:
    """The sample standard deviation (ddof 1); nan for fewer than two values."""
    x = np.asarray(x, float)
    return float(x.std(ddof=1)) if len(x) > 1 else float("nan")


def _welch_parts(a: np.ndarray, b: np.ndarray, c: float = 1.0) -> Tuple[float, float, float]:
    """(estimate, standard error, df) of ``mean(a) - c * mean(b)`` (Welch-Satterthwaite)."""
    va, vb = a.var(ddof=1) / len(a), c * c * b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    denom = (va * va / (len(a) - 1) if va else 0.0) + (vb * vb / (len(b) - 1) if vb else 0.0)
    df = (va + vb) ** 2 / denom if denom else float("inf")
    return float(a.mean() - c * b.mean()), se, df


def _one_sided_p(est: float, se: float, df: float) -> float:
    """p of H0: true value <= 0 against > 0."""
    if se == 0:
        return 0.0 if est > 0 else 1.0
    return float(sps.t.sf(est / se, df))


class Diff(NamedTuple):
    diff: float  # mean(a) - mean(b)
    lo: float
    hi: float
    p_greater: float  # one-sided p of H0: mean(a) <= mean(b)
    p_less: float  # one-sided p of H0: mean(a) >= mean(b)
    df: float


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Diff:
    """Difference of means with its Welch ``level`` interval and one-sided p-values."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"welch: need at least 2 seeds per side, got {len(a)} and {len(b)}")
    est, se, df = _welch_parts(a, b)
    half = float(sps.t.ppf(0.5 + level / 2, df)) * se if se else 0.0
    return Diff(est, est - half, est + half, _one_sided_p(est, se, df), _one_sided_p(-est, se, df), df)


class Ratio(NamedTuple):
    ratio: float  # mean(a) / mean(b)
    lo: float  # -inf / inf when the interval is unbounded
    hi: float


def ratio(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Ratio:
    """``mean(a) / mean(b)`` with Fieller's ``level`` interval (independent samples, Welch-style df)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ma, mb = a.mean(), b.mean()
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    _, _, df = _welch_parts(a, b, ma / mb if mb else 1.0)
    t2 = float(sps.t.ppf(0.5 + level / 2, df)) ** 2
    r = ma / mb if mb else float("nan")
    # roots of (ma - R mb)^2 = t^2 (va + R^2 vb)
    qa, qb, qc = mb * mb - t2 * vb, -2 * ma * mb, ma * ma - t2 * va
    if qa <= 0:  # the reference's mean is not clearly away from zero: no bounded interval
        return Ratio(r, -math.inf, math.inf)
    disc = qb * qb - 4 * qa * qc
    root = math.sqrt(max(disc, 0.0))
    return Ratio(r, (-qb - root) / (2 * qa), (-qb + root) / (2 * qa))


class Equivalence(NamedTuple):
    p: float  # TOST p-value of H0: mean(a)/mean(b) outside [1 - margin, 1 + margin]
    p_outside: float  # p that the ratio lies outside the margin (the "does not hold" side)
    smallest_margin: float  # narrowest margin these seeds establish at ALPHA


def equivalence(a: Sequence[float], b: Sequence[float], margin: float, alpha: float = ALPHA) -> Equivalence:
    """"``mean(a)`` within ``margin`` (a fraction) of ``mean(b)``" as two one-sided tests (b's mean > 0)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    lo = _one_sided_p(*_welch_parts(a, b, 1 - margin))
    hi_est, hi_se, hi_df = _welch_parts(a, b, 1 + margin)
    hi = _one_sided_p(-hi_est, hi_se, hi_df)
    # the ratio is outside the margin: below 1 - m, or above 1 + m (whichever side the estimate is on)
    below_est, below_se, below_df = _welch_parts(a, b, 1 - margin)
    # which side is tested follows the data, so the smaller one-sided p is doubled (Bonferroni over 2)
    outside = min(1.0, 2 * min(_one_sided_p(-below_est, below_se, below_df), _one_sided_p(hi_est, hi_se, hi_df)))
    rci = ratio(a, b, level=1 - 2 * alpha)  # TOST at alpha <=> the 1 - 2 alpha interval inside the margin
    smallest = max(1 - rci.lo, rci.hi - 1)
    return Equivalence(max(lo, hi), outside, float(smallest))


def holm(pvalues: Sequence[float], family: int = 0) -> List[float]:
    """Holm's step-down adjusted p-values (same order as given; nan stays nan and is not counted).

    ``family``: the number of hypotheses the correction is over, when more are planned than are given
    (the missing ones count as p = 1). Holm is monotone (a smaller p anywhere never undoes a rejection),
    so with the planned family fixed, a rejection made before every test is in cannot be reversed by the
    tests that come later."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m, out, running = max(len(idx), family), [float("nan")] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def verdict(p_holds: float, p_fails: float, alpha: float = ALPHA) -> str:
    """The verdict word from the Holm-adjusted p-values of the claim and of its opposite."""
    if p_holds <= alpha:
        return "holds"
    if p_fails <= alpha:
        return "does not hold"
    return "inconclusive"


def bootstrap_ci(values: Sequence[float], statistic, level: float = 0.95, reps: int = 10_000,
                 seed: int = BOOTSTRAP_SEED) -> Tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (a function of a resampled array) over seeds."""
    values = np.asarray(values)
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(reps)],
                     float)
    draws = draws[~np.isnan(draws)]
    if not len(draws):
        return float("nan"), float("nan")
    return float(np.quantile(draws, 0.5 - level / 2)), float(np.quantile(draws, 0.5 + level / 2))


# ------------------------------------------------------------------------------- rliable (optional)
@contextlib.contextmanager
def numpy_seed(seed: int = BOOTSTRAP_SEED) -> Iterator[None]:
    """Seed NumPy's global generator for the block, then put its previous state back (and keep rliable's
    per-method "Calculating estimates" log lines out of the output)."""
    from absl import logging
    saved, verbosity = np.random.get_state(), logging.get_verbosity()
    np.random.seed(seed)
    logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        np.random.set_state(saved)
        logging.set_verbosity(verbosity)


def _rliable():
    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError as err:
        raise ImportError(f"the study's aggregate measures need rliable ({err}): install the study extra, "
                          f"pip install -e .[study] (requirements.txt pins a set that imports)") from err
    return rly, metrics


class Aggregates(NamedTuple):
    iqm: Dict[str, Tuple[float, float, float]]  # method -> (IQM, lo, hi)
    mean: Dict[str, Tuple[float, float, float]]
    improvement: Dict[Tuple[str, str], Tuple[float, float, float]]  # (x, y) -> P(X > Y), lo, hi
    profile_taus: np.ndarray
    profiles: Dict[str, Tuple[np.ndarray, np.ndarray]]  # method -> (fraction above tau, its band [2, T])


def rl_aggregates(scores: Dict[str, np.ndarray], pairs: Sequence[Tuple[str, str]] = (),
                  reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED) -> Aggregates:
    """IQM and mean with stratified-bootstrap 95% intervals, probabilities of improvement and
    performance profiles, from ``scores[method]`` of shape [runs, tasks] (normalised scores).

    Each method (and pair) is bootstrapped on its own from the same seed: rliable draws every method's
    resamples from one generator in turn, so one call over all of them would move a method's interval
    whenever a cell is added to the study; this way an interval depends on its own scores alone."""
    rly, metrics = _rliable()
    iqm_fn = lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])  # noqa: E731

    def each(items: Dict[str, Any], fn: Callable[[Dict[str, Any]], Tuple[Dict, Dict]]) -> Tuple[Dict, Dict]:
        point, ci = {}, {}
        for k, v in items.items():
            with numpy_seed(seed):
                p, c = fn({k: v})
            point[k], ci[k] = p[k], c[k]
        return point, ci

    point, ci = each(scores, lambda s: rly.get_interval_estimates(s, iqm_fn, reps=reps))
    iqm = {k: (float(point[k][0]), float(ci[k][0, 0]), float(ci[k][1, 0])) for k in scores}
    mean = {k: (float(point[k][1]), float(ci[k][0, 1]), float(ci[k][1, 1])) for k in scores}
    improvement = {}
    if pairs:
        pair_scores = {f"{x},{y}": (scores[x], scores[y]) for x, y in pairs}
        p_point, p_ci = each(pair_scores, lambda s: rly.get_interval_estimates(
            s, metrics.probability_of_improvement, reps=max(reps // 25, 1000)))
        improvement = {(x, y): (float(p_point[f"{x},{y}"]), *map(float, np.ravel(p_ci[f"{x},{y}"])))
                       for x, y in pairs}
    allv = np.concatenate([v.ravel() for v in scores.values()])
    taus = np.linspace(min(0.0, float(allv.min())), max(1.5, float(allv.max())), 101)
    prof, prof_ci = each(scores, lambda s: rly.create_performance_profile(s, taus, reps=max(reps // 25, 1000)))
    profiles = {k: (np.asarray(prof[k]), np.asarray(prof_ci[k])) for k in scores}
    return Aggregates(iqm, mean, improvement, taus, profiles)


def describe_power(n: int, alpha: float = ALPHA, power: float = 0.8) -> float:
    """The smallest true difference, in standard deviations, a one-sided Welch test of ``n`` seeds per side
    detects with ``power`` (normal approximation with a t correction): what "inconclusive" means here."""
    df = 2 * n - 2
    return float((sps.t.ppf(1 - alpha, df) + sps.t.ppf(power, df)) * math.sqrt(2.0 / n))


def fmt_interval(point: float, lo: float, hi: float, pct: bool = False, digits: int = 0) -> str:
    f = (lambda v: f"{100 * v:.{digits}f}%") if pct else (lambda v: f"{v:.{digits}f}")
    show = lambda v: ("-inf" if v < 0 else "inf") if math.isinf(v) else f(v)  # noqa: E731
    return f"{f(point)} [{show(lo)}, {show(hi)}]"


def ratio_of(a: Sequence[float], b: Sequence[float]) -> Optional[Ratio]:
    return ratio(a, b) if len(a) > 1 and len(b) > 1 and np.mean(b) != 0 else None
