"""What a run writes to its work directory (the numbers themselves come from `sparse_rl_jax.metrics`).

Layout of ``<workdir>``::

    config.json                     fully resolved config (`config.to_dict`)
    metrics/seed_<i>.csv            one row per evaluation period: env_steps, then every metric
    metrics/seed_<i>.jsonl          the same rows as JSON objects (NaN -> null)
    tensorboard/seed_<i>/           TensorBoard event files (tensorboardX), step = env steps
    summary.json                    `metrics.summarize(...)`: per-seed and mean final/best return, AUC, sparsity,
                                    total size and FLOPs relative to dense; ``platform``: what computed it
                                    (`platform_info`)
    checkpoints/<period>/           orbax checkpoints (`sparse_rl_jax.checkpoint`)
    plots/*.png                     `sparse_rl_jax.plotting`

History is kept in the canonical JSON form of `history_to_json` (``[[env_steps, {name: value
or per-seed list}]]``); the CSV/JSONL files are rewritten from the whole history after every period, so a
resumed run (whose history comes back from the checkpoint) writes exactly the files of an uninterrupted
run. TensorBoard files are append-only: a resumed run opens its writers with ``purge_step`` so TensorBoard
drops points a killed run logged after its last checkpoint.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

RETURN_KEY = "eval/episode_reward"
SUMMARY_FIELDS = ("final_return", "best_return", "auc", "sparsity_actor", "sparsity_critic", "total_size",
                  "train_flops", "inference_flops", "actor_weights", "actor_active_weights", "critic_weights",
                  "critic_active_weights")


# ---------------------------------------------------------------------------- history <-> JSON
def _json_value(value: Any) -> Any:
    """numpy scalars/arrays -> Python numbers/lists; NaN/inf -> None (strict JSON)."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        item = arr.item()
        if isinstance(item, float) and not math.isfinite(item):
            return None
        return item
    return [_json_value(v) for v in arr]


def history_to_json(history: List[Tuple[int, Dict[str, Any]]]) -> List[list]:
    """``[(env_steps, {name: per-seed array or scalar})]`` -> ``[[env_steps, {name: list or number}]]``.

    The result is the canonical host-side form used by the logger, the plots and the checkpoints: it
    survives a JSON round trip unchanged (float32 values become exact Python floats, NaN becomes None).
    """
    return [[int(steps), {k: _json_value(v) for k, v in metrics.items()}] for steps, metrics in history]


# ---------------------------------------------------------------------------- files
PLATFORM_PACKAGES = ("jax", "jaxlib", "flax", "optax", "brax", "mujoco", "orbax-checkpoint", "numpy", "scipy")


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module knows."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def platform_info() -> Dict[str, Any]:
    """The interpreter, the packages that decide a run's numbers, and the JAX backend: the same config and
    seeds give other bits on another XLA build or CPU, so a record says which computed it."""
    import platform
    from importlib import metadata

    import jax
    out: Dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    for name in PLATFORM_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["backend"] = jax.default_backend()
    out["devices"] = [d.device_kind for d in jax.devices()][:1] + ([f"x{jax.device_count()}"]
                                                                    if jax.device_count() > 1 else [])
    return out


def write_text_atomic(path: str, text: str) -> None:
    """Write via a temporary file and rename, so readers never see a half-written file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def seed_value(value: Any, seed: int) -> Any:
    """A metric's value for one seed: per-seed lists are indexed, scalars apply to every seed."""
    return value[seed] if isinstance(value, list) else value


def seed_rows(history: List[list], seed: int) -> List[Dict[str, Any]]:
    """One dict per evaluation period for one seed: ``env_steps`` then the metrics."""
    return [{"env_steps": steps, **{k: seed_value(v, seed) for k, v in m.items()}} for steps, m in history]


def slice_history(history: List[list], index: Sequence[int], total: int) -> List[list]:
    """A run's history restricted to its entries ``index`` (of ``total``): per-entry metric arrays are
    sliced, scalars stay (one level of a levels run, one cell of a sweep batch)."""
    out = []
    for steps, metrics in history:
        m = {}
        for k, v in metrics.items():
            arr = np.asarray(v)
            m[k] = arr[list(index)] if arr.ndim >= 1 and arr.shape[0] == total else v
        out.append((steps, m))
    return out


def _csv_text(rows: List[Dict[str, Any]]) -> str:
    columns: List[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return out.getvalue()


def read_history(workdir: str) -> List[list]:
    """Rebuild the canonical history of a run from its per-seed JSONL files."""
    seeds = num_seeds_on_disk(workdir)
    per_seed = []
    for i in range(seeds):
        with open(os.path.join(workdir, "metrics", f"seed_{i}.jsonl")) as f:
            per_seed.append([json.loads(line) for line in f if line.strip()])
    history = []
    for rows in zip(*per_seed):
        steps = rows[0]["env_steps"]
        names = [k for k in rows[0] if k != "env_steps"]
        history.append([steps, {k: [r.get(k) for r in rows] for k in names}])
    return history


def num_seeds_on_disk(workdir: str) -> int:
    folder = os.path.join(workdir, "metrics")
    if not os.path.isdir(folder):
        return 0
    return len([f for f in os.listdir(folder) if f.startswith("seed_") and f.endswith(".jsonl")])


class RunLog:
    """Per-seed CSV/JSONL/TensorBoard writer over the run's whole history.

    ``write=False`` keeps the history without touching the disk (the non-primary processes of a
    multi-host run, which must not write)."""

    def __init__(self, workdir: str, num_seeds: int, history: Optional[List[list]] = None,
                 tensorboard: bool = True, write: bool = True):
        self.workdir, self.num_seeds, self.write = workdir, num_seeds, write
        self.history: List[list] = list(history or [])
        self._writers = []
        if not write:
            return
        os.makedirs(os.path.join(workdir, "metrics"), exist_ok=True)
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = self.history[-1][0] + 1 if self.history else None
            self._writers = [SummaryWriter(os.path.join(workdir, "tensorboard", f"seed_{i}"), purge_step=purge,
                                           flush_secs=30) for i in range(num_seeds)]
        if self.history:
            self._write_files()

    def append(self, env_steps: int, metrics: Dict[str, Any]) -> List[Any]:
        """Add one evaluation period (raw per-seed numpy metrics); returns the canonical entry."""
        entry = history_to_json([(env_steps, metrics)])[0]
        self.history.append(entry)
        if not self.write:
            return entry
        self._write_files()
        for i, writer in enumerate(self._writers):
            for name, value in entry[1].items():
                v = seed_value(value, i)
                if v is not None:
                    writer.add_scalar(name, v, global_step=entry[0])
            writer.flush()
        return entry

    def _write_files(self) -> None:
        for i in range(self.num_seeds):
            rows = seed_rows(self.history, i)
            base = os.path.join(self.workdir, "metrics", f"seed_{i}")
            write_text_atomic(base + ".csv", _csv_text(rows))
            write_text_atomic(base + ".jsonl", "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))

    def close(self, check: bool = True) -> None:
        """Flush and close the TensorBoard writers, every one even if one fails (a full disk); the first
        failure is raised when ``check`` (pass False while another error is already ending the run: it
        names the file that failed first)."""
        failure = None
        for writer in self._writers:
            try:
                writer.close()
            except OSError as err:
                failure = failure or err
        self._writers = []
        if failure is not None and check:
            raise failure


# ---------------------------------------------------------------------------- per-layer densities


# ---------------------------------------------------------------------------- summary
def returns_of(history: List[list], seed: int) -> tuple:
    """(env_steps, eval returns) of one seed, skipping periods without an evaluation."""
    steps, rets = [], []
    for s, m in history:
        v = seed_value(m.get(RETURN_KEY), seed)
        if v is not None:
            steps.append(s)
            rets.append(float(v))
    return np.asarray(steps, float), np.asarray(rets, float)


def area_under_curve(steps: np.ndarray, values: np.ndarray) -> Optional[float]:
    """Trapezoid area over env steps divided by the step range (= the curve's mean height)."""
    if len(values) == 0:
        return None
    if len(values) == 1 or steps[-1] == steps[0]:
        return float(values[-1])
    return float(np.trapezoid(values, steps) / (steps[-1] - steps[0]))


def _fmt(value: Optional[float], kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3f}" if kind == "fraction" else f"{value:.1f}"


def format_summary(summary: Dict[str, Any]) -> str:
    """The end-of-run table: one row per seed and the mean."""
    cols = [("final_return", "final return", "return"), ("best_return", "best return", "return"),
            ("auc", "AUC", "return"), ("sparsity_actor", "sparsity actor", "fraction"),
            ("sparsity_critic", "sparsity critic", "fraction"), ("total_size", "total size", "fraction"),
            ("train_flops", "train FLOPs", "fraction"), ("inference_flops", "infer FLOPs", "fraction")]
    widths = [max(len(title), 8) for _, title, _ in cols]
    head = f"{'seed':<6}" + "".join(f" {title:>{w}}" for (_, title, _), w in zip(cols, widths))
    lines = [head, "-" * len(head)]
    rows = [(str(r["seed"]), r) for r in summary["seeds"]] + [("mean", summary["mean"])]
    for label, row in rows:
        lines.append(f"{label:<6}" + "".join(f" {_fmt(row.get(k), kind):>{w}}"
                                            for (k, _, kind), w in zip(cols, widths)))
    lines.append("(AUC: mean eval return over the run = trapezoid area / env-step range; size and FLOPs are "
                 "fractions of the dense agent)")
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def mean_of(value: Any) -> Optional[float]:
    vals = [v for v in (value if isinstance(value, list) else [value]) if v is not None]
    return float(np.mean(vals)) if vals else None


def format_progress(entry: List[Any], total_steps: int, period: int, periods: int, steps_per_sec: Optional[float],
                    elapsed: float, remaining: Optional[float], num_seeds: int) -> str:
    """One progress line a person can follow."""
    steps, m = entry
    ret = mean_of(m.get(RETURN_KEY))
    parts = [
        f"[{period}/{periods}] env steps {steps:,}/{total_steps:,} ({100.0 * min(steps / total_steps, 1.0):.0f}%)",
        f"{steps_per_sec:,.0f} env steps/s" if steps_per_sec else "first period (incl. compilation)",
        f"elapsed {format_duration(elapsed)}",
        f"remaining {'~' + format_duration(remaining) if remaining is not None else '?'}",
        f"eval return {'n/a' if ret is None else f'{ret:.1f}'}"
        + (f" (mean of {num_seeds} seeds)" if num_seeds > 1 else ""),
        "sparsity " + " ".join(f"{k.split('/')[1]} {_fmt(mean_of(v), 'fraction')}"
                               for k, v in m.items() if k.startswith("sparsity/")),
    ]
    if "buffer/size" in m and ("buffer/policy_distance" in m or (m.get("nstep") or 1) > 1):
        parts.append(f"buffer {mean_of(m['buffer/size']):,.0f} n={m.get('nstep')}")
    return " | ".join(parts)


__all__: Sequence[str] = (
    "RunLog", "area_under_curve", "format_progress", "format_summary", "history_to_json", "read_history",
    "read_json", "returns_of", "write_json", "write_text_atomic",
)
