"""Matplotlib (Agg) figures of a run or of several runs; every function writes one PNG and returns its path.

Inputs are canonical histories (`run_logging.history_to_json` form: ``[[env_steps, {name: per-seed list or
number}]]``) and mask arrays, so the figures can be drawn from a live run or from files on disk.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

RETURN_KEY = "eval/episode_reward"


def _per_seed(history: List[list], name: str) -> tuple:
    """(steps[T], values[T, seeds]) of a metric; missing values are NaN."""
    steps, rows = [], []
    for s, m in history:
        if name not in m:
            continue
        v = m[name]
        v = v if isinstance(v, list) else [v]
        steps.append(s)
        rows.append([np.nan if x is None else float(x) for x in v])
    width = max((len(r) for r in rows), default=0)
    values = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        values[i, :len(r)] = r
    return np.asarray(steps, float), values


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _band(ax, steps, values, label: Optional[str]) -> None:
    """Mean over seeds with a min-max band (the spread over seeds)."""
    with warnings.catch_warnings():  # all-NaN rows (no evaluation yet) give NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=1)
        lo, hi = np.nanmin(values, axis=1), np.nanmax(values, axis=1)
    line, = ax.plot(steps, mean, label=label, marker="." if len(steps) < 30 else None)
    if values.shape[1] > 1:
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)


def learning_curves(runs: Dict[str, List[list]], path: str, title: str = "Learning curve") -> str:
    """Eval return vs env steps, one line per run (mean over seeds, shaded min-max over seeds)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, history in runs.items():
        steps, values = _per_seed(history, RETURN_KEY)
        if len(steps):
            n = values.shape[1]
            _band(ax, steps, values, f"{label} ({n} seed{'s' if n != 1 else ''})")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return _save(fig, path)


def layer_density(history: List[list], path: str) -> str:
    """Per-layer density (fraction of active weights) over env steps, mean over seeds."""
    names = sorted({k for _, m in history for k in m if k.startswith("density/")})
    nets = sorted({n.split("/")[1] for n in names}) or ["(none)"]
    fig, axes = plt.subplots(1, len(nets), figsize=(6 * len(nets), 4), squeeze=False)
    for ax, net in zip(axes[0], nets):
        for name in [n for n in names if n.split("/")[1] == net]:
            steps, values = _per_seed(history, name)
            _band(ax, steps, values, name.split("/", 2)[2])
        ax.set_title(f"{net}: per-layer density")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("density (active / dense)")
        ax.set_ylim(0.0, 1.05)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="x-small")
    return _save(fig, path)


def buffer_and_nstep(history: List[list], path: str) -> str:
    """RLx2: replay buffer size and the n of the TD target over env steps."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    steps, values = _per_seed(history, "buffer/size")
    if len(steps):
        _band(ax1, steps, values, "buffer size")
    ax1.set_title("replay buffer size (transitions)")
    steps, values = _per_seed(history, "nstep")
    if len(steps):
        ax2.step(steps, values[:, 0], where="post")
    ax2.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax2.set_title("n of the n-step TD target")
    for ax in (ax1, ax2):
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    return _save(fig, path)


PLASTICITY_PANELS = (("dormant_ratio", "dormant ReLU units (tau 0.1)"), ("srank", "srank of the features"),
                     ("feature_norm", "feature norm"), ("weight_norm", "weight norm"),
                     ("grad_norm", "gradient norm (mean over updates)"))


def plasticity_curves(history: List[list], path: str, title: str = "Plasticity") -> str:
    """The plasticity measures (`sparse_rl_jax.plasticity`) over env steps, one column per measure, one
    line per network (mean over seeds, shaded min-max)."""
    fig, axes = plt.subplots(1, len(PLASTICITY_PANELS), figsize=(4 * len(PLASTICITY_PANELS), 3.6), squeeze=False)
    for ax, (measure, label) in zip(axes[0], PLASTICITY_PANELS):
        for net in ("actor", "critic"):
            steps, values = _per_seed(history, f"plasticity/{net}/{measure}")
            if len(steps):
                _band(ax, steps, values, net)
        ax.set_title(label, fontsize="medium")
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="x-small")
    fig.suptitle(title)
    return _save(fig, path)


def masks_picture(masks: Dict[str, np.ndarray], path: str, title: str = "Final masks") -> str:
    """One panel per layer: active connections (dark) of a ``bool[in, out]`` mask, with its density."""
    names = list(masks) or ["(none)"]
    cols = min(len(names), 4)
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        if name not in masks:
            continue
        m = np.asarray(masks[name], bool)
        m2 = m.reshape(m.shape[0], -1)
        ax.imshow(m2, cmap="Greys", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        ax.set_title(f"{name}\n{m2.shape[0]}x{m2.shape[1]}, density {m.mean():.3f}", fontsize="small")
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return _save(fig, path)


def run_plots(workdir: str, history: List[list], masks: Dict[str, np.ndarray], label: str,
              rlx2_panels: bool) -> Sequence[str]:
    """All figures of one run into ``<workdir>/plots``; returns their paths."""
    out = os.path.join(workdir, "plots")
    paths = [learning_curves({label: history}, os.path.join(out, "learning_curve.png"), f"{label}: learning curve"),
             layer_density(history, os.path.join(out, "layer_density.png")),
             masks_picture(masks, os.path.join(out, "final_masks.png"), f"{label}: final masks (seed 0)"),
             plasticity_curves(history, os.path.join(out, "plasticity.png"), f"{label}: plasticity")]
    if rlx2_panels:
        paths.append(buffer_and_nstep(history, os.path.join(out, "buffer_nstep.png")))
    return paths


def mean_ci_curves(curves: Dict[str, tuple], path: str, title: str = "Learning curves") -> str:
    """Eval return vs env steps from ``{label: (steps[T], returns[T, seeds])}``: the mean over seeds with
    its 95% t-interval band (not the min-max spread: the band says where the mean is)."""
    from scipy import stats as sps
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, (steps, values) in curves.items():
        n = values.shape[1]
        mean = values.mean(axis=1)
        line, = ax.plot(steps, mean, label=f"{label} ({n} seeds)")
        if n > 1:
            half = sps.t.ppf(0.975, n - 1) * values.std(axis=1, ddof=1) / math.sqrt(n)
            ax.fill_between(steps, mean - half, mean + half, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="x-small", ncol=2)
    return _save(fig, path)


def performance_profiles(taus: np.ndarray, profiles: Dict[str, tuple], path: str) -> str:
    """rliable's performance profiles: the fraction of runs whose normalised score exceeds tau, with the
    bootstrap band, one line per method (``profiles[name] = (fractions[T], band[2, T])``)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (frac, band) in profiles.items():
        line, = ax.plot(taus, frac, label=label)
        ax.fill_between(taus, band[0], band[1], color=line.get_color(), alpha=0.15)
    ax.set_xlabel("normalised score tau (final return / dense reference)")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    return _save(fig, path)


def interval_bars(values: Dict[str, tuple], path: str, xlabel: str) -> str:
    """One horizontal interval per name from ``{name: (point, lo, hi)}``."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1))
    for i, n in enumerate(names):
        p, lo, hi = values[n]
        ax.plot([lo, hi], [i, i], linewidth=6, alpha=0.4, color="C0")
        ax.plot([p], [i], "o", color="C0")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def fraction_curves(series: Dict[str, List[tuple]], path: str, xlabel: str, ylabel: str, title: str) -> str:
    """One line per name through ``[(x, point, lo, hi), ...]``, each point with its interval."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, points) in enumerate(series.items()):
        points = sorted(points)
        x = [p[0] for p in points]
        y = np.array([p[1] for p in points], float)
        lo = np.array([p[2] if p[2] is not None else np.nan for p in points], float)
        hi = np.array([p[3] if p[3] is not None else np.nan for p in points], float)
        ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=3, label=name, color=f"C{i}")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="small")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    return _save(fig, path)


def scaling_curves(series: Dict[str, List[tuple]], path: str, title: str = "Return against critic size") -> str:
    """Two panels, final return (mean, +-std bars) against the critic's weights and against its active
    weights (log axes), one line per method and level: ``series`` as `sweep.scaling_series` gives it."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for label, points in series.items():
        pts = sorted(points)
        for ax, i in zip(axes, (0, 1)):
            xs = [p[i] for p in pts]
            ax.errorbar(xs, [p[2] for p in pts], yerr=[p[3] for p in pts], marker="o", capsize=3, label=label)
    for ax, xlabel in zip(axes, ("critic weights (all)", "critic weights (active)")):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("final return (mean ± std over seeds)")
    if series:  # a sweep aggregated before any cell finished has nothing to label yet
        axes[1].legend(fontsize="x-small")
    fig.suptitle(title)
    return _save(fig, path)
