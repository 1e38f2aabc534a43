"""Benchmark: action latency and file size of exported sparse actors vs the dense JAX and NumPy actors.

    python -m experiments.bench.export_latency [--sparsities 0,0.5,0.9,0.95,0.98] [--rounds 15]

Setup: TD3 DeterministicActor with HalfCheetah dimensions (obs 17, act 6, hidden 2x256), every kernel
masked with a random exact-count mask at the same sparsity (kept weights scaled by 1/sqrt(density),
random non-zero biases), no observation normaliser; plus one SAC GaussianActor at ``--sac_sparsity``.

Timed, per sparsity and batch size (1 and ``--batch``), all in one process, interleaved round-robin
(every round times ~``--round_seconds`` of individually timed calls of each program; the reported
number is the median call latency over all rounds, after warm-up) so background load hits all
programs alike. BLAS and XLA run single-threaded unless ``OPENBLAS_NUM_THREADS``/``XLA_FLAGS`` are
set by the caller:

* ``JAX dense``: ``jax.jit(actor.apply)(params, obs)`` with a NumPy obs and ``np.asarray`` of the
  result, i.e. host->device transfer, dispatch and device->host copy, what a deployer pays;
* ``NumPy dense``: plain ``x @ W + b`` / ``np.maximum`` / ``np.tanh`` over the dense float32 kernels;
* ``NumPy sparse``: ``load_policy(path)`` (SciPy's compiled CSR kernel at batch 1, ``csr @ H`` batched);
* ``NumPy sparse, public scipy``: ``load_policy(path, kernel='scipy')``, the public ``csr_array @ x``;
* ``NumPy hand CSR``: a pure-NumPy CSR mat-vec (gather, multiply, ``np.bincount``), batch 1 only;
* ``JAX sparse``: ``load_jax_policy(path)`` (gather kernel on the 256x256 layer, the 17- and 6-wide
  layers as small dense matmuls), with transfer and ``np.asarray``;
* ``JAX gather, all layers``: ``load_jax_policy(path, min_sparse_width=0)``, every layer a gather;
* ``JAX BCOO``: ``load_jax_policy(path, kernel='bcoo')``.

Sizes: the exported file (deflate, as written by default; also without deflate and with float16
values) against the *dense checkpoint of the actor*: ``np.savez`` (uncompressed) of the dense float32
kernel and bias arrays as trained (SAC: including the log-std half of the output layer); its
``np.savez_compressed`` size is printed too.

Every program's actions are checked against the JAX dense actor (max |diff| <= 1e-5) before timing.
"""
from __future__ import annotations

import os

# Single-threaded BLAS and XLA unless the caller says otherwise (set before NumPy/JAX load them):
# batch-1 latency is what a deployment on a small CPU sees, and multi-threaded kernels turn into
# spin-waiting noise on a shared machine. Override by exporting these variables.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from sparse_rl_jax import cli, networks
from sparse_rl_jax.export import (dense_checkpoint_bytes, dense_numpy_actor, export_actor,
                                  load_jax_policy, load_policy, read_policy)

OBS_DIM, ACT_DIM, HIDDEN = 17, 6, (256, 256)
TOL = 1e-5


def _define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_list("sparsities", ["0", "0.5", "0.9", "0.95", "0.98"], "TD3 actor sparsities.",
                      flag_values=fv)
    flags.DEFINE_float("sac_sparsity", 0.95, "Sparsity of the one SAC actor (negative: skip).",
                       flag_values=fv)
    flags.DEFINE_integer("batch", 256, "Large batch size.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("rounds", 15, "Interleaved timing rounds.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("round_seconds", 0.02, "Target wall time of one program in one round.",
                       flag_values=fv)
    return fv


# ------------------------------------------------------------------------------------ actors
def masked_actor(algo: str, sparsity: float, seed: int = 0):
    """(module, masked params, masks): random exact-count masks on every kernel, built with NumPy."""
    module = (networks.DeterministicActor if algo == "td3" else networks.GaussianActor)(ACT_DIM, HIDDEN)
    params = module.init(jax.random.key(seed), jnp.zeros((1, OBS_DIM)))["params"]
    rng = np.random.default_rng(seed)
    density = 1.0 - sparsity
    out_params, out_masks = {}, {}
    for name, layer in params.items():
        kernel = np.asarray(layer["kernel"])
        flat = np.zeros(kernel.size, bool)
        flat[rng.choice(kernel.size, int(round(density * kernel.size)), replace=False)] = True
        mask = flat.reshape(kernel.shape)
        out_masks[name] = {"kernel": mask, "bias": None}
        out_params[name] = {
            "kernel": np.where(mask, kernel / np.sqrt(max(density, 1e-3)), 0).astype(np.float32),
            "bias": (0.1 * rng.standard_normal(kernel.shape[1])).astype(np.float32)}
    return module, {"params": out_params}, {"params": out_masks}


def jax_dense_actor(module, algo: str, params) -> Callable:
    """The trained actor as a deployer would run it: jitted apply, NumPy in, NumPy out."""
    if algo == "td3":
        apply = jax.jit(module.apply)
    else:
        apply = jax.jit(lambda p, o: jnp.tanh(module.apply(p, o)[0]))
    params = jax.device_put(params)
    return lambda obs: np.asarray(apply(params, obs))


def hand_csr_actor(path: str) -> Callable:
    """Pure-NumPy CSR forward (gather, multiply, bincount per layer) for one observation."""
    layers = []
    for layer in read_policy(path).layers:
        rows = np.repeat(np.arange(layer.shape[0]), np.diff(layer.indptr.astype(np.int64)))
        layers.append((rows, layer.indices.astype(np.intp), layer.values, layer.bias, layer.shape[0],
                       layer.activation == "relu"))

    def act(obs: np.ndarray) -> np.ndarray:
        h = np.asarray(obs, np.float32)
        for rows, cols, vals, bias, out_dim, relu in layers:
            h = np.bincount(rows, weights=vals * h[cols], minlength=out_dim).astype(np.float32) + bias
            if relu:
                np.maximum(h, 0, out=h)
        return np.tanh(h)

    return act


# ------------------------------------------------------------------------------------ timing
def _calls_per_round(fn: Callable, x: np.ndarray, seconds: float) -> int:
    start = time.perf_counter()
    for _ in range(5):
        fn(x)
    per_call = (time.perf_counter() - start) / 5
    return max(3, int(seconds / max(per_call, 1e-7)))


def time_interleaved(programs: Dict[str, Callable], x: np.ndarray, rounds: int,
                     seconds: float) -> Dict[str, float]:
    """Median latency of individually timed calls; programs alternate round-robin every round.

    Timing each call (not the mean of a block) keeps the median meaningful on a shared machine: a
    call that was preempted is one slow sample, not a slow block.
    """
    for fn in programs.values():  # warm-up: compile, caches, allocator
        for _ in range(20):
            fn(x)
    calls = {name: _calls_per_round(fn, x, seconds) for name, fn in programs.items()}
    samples: Dict[str, List[float]] = {name: [] for name in programs}
    clock = time.perf_counter
    for _ in range(rounds):
        for name, fn in programs.items():
            record = samples[name].append
            for _ in range(calls[name]):
                start = clock()
                fn(x)
                record(clock() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


# ------------------------------------------------------------------------------------ one level
def _programs(module, algo, params, path, batch: int) -> Dict[str, Callable]:
    np_sparse, np_public = load_policy(path), load_policy(path, kernel="scipy")
    jax_sparse, jax_bcoo = load_jax_policy(path), load_jax_policy(path, kernel="bcoo")
    jax_all = load_jax_policy(path, min_sparse_width=0)
    programs = {
        "JAX dense": jax_dense_actor(module, algo, params),
        "NumPy dense": dense_numpy_actor(read_policy(path)),
        "NumPy sparse": np_sparse,
        "NumPy sparse, public scipy": np_public,
        "JAX sparse (gather)": lambda o: np.asarray(jax_sparse(o)),
        "JAX gather, all layers": lambda o: np.asarray(jax_all(o)),
        "JAX BCOO": lambda o: np.asarray(jax_bcoo(o)),
    }
    if batch == 1:
        programs["NumPy hand CSR"] = hand_csr_actor(path)
    return programs


def check_equal(programs: Dict[str, Callable], x: np.ndarray) -> None:
    ref = programs["JAX dense"](x)
    for name, fn in programs.items():
        err = float(np.abs(np.asarray(fn(x)) - ref).max())
        if err > TOL:
            raise AssertionError(f"{name}: max |action - JAX dense| = {err:.2e} > {TOL}")


def sizes(params, masks, algo: str, tmp: str, tag: str) -> Dict[str, int]:
    path = os.path.join(tmp, f"{tag}.npz")
    out = {"export": export_actor(params, masks, algo, path),
           "export_stored": export_actor(params, masks, algo, os.path.join(tmp, f"{tag}_s.npz"),
                                         compress=False),
           "export_fp16": export_actor(params, masks, algo, os.path.join(tmp, f"{tag}_16.npz"),
                                       values_dtype="float16"),
           "dense": dense_checkpoint_bytes(params, os.path.join(tmp, f"{tag}_dense.npz"))}
    kernels = {f"{k}.{leaf}": v[leaf] for k, v in params["params"].items() for leaf in ("kernel", "bias")}
    dz = os.path.join(tmp, f"{tag}_densez.npz")
    with open(dz, "wb") as f:
        np.savez_compressed(f, **kernels)
    out["dense_deflate"] = os.path.getsize(dz)
    out["nnz"] = sum(int(m["kernel"].sum()) for m in masks["params"].values())
    return out


def run_level(algo: str, sparsity: float, batch: int, rounds: int, seconds: float,
              tmp: str) -> Tuple[Dict[int, Dict[str, float]], Dict[str, int]]:
    module, params, masks = masked_actor(algo, sparsity)
    tag = f"{algo}_{sparsity}"
    size = sizes(params, masks, algo, tmp, tag)
    path = os.path.join(tmp, f"{tag}.npz")
    rng = np.random.default_rng(1)
    times = {}
    for b in (1, batch):
        x = rng.standard_normal(OBS_DIM if b == 1 else (b, OBS_DIM)).astype(np.float32)
        programs = _programs(module, algo, params, path, b)
        check_equal(programs, x)
        times[b] = time_interleaved(programs, x, rounds, seconds)
    return times, size


# ------------------------------------------------------------------------------------ tables
LATENCY_COLUMNS = ("JAX dense", "NumPy dense", "NumPy sparse", "NumPy sparse, public scipy",
                   "NumPy hand CSR", "JAX sparse (gather)", "JAX gather, all layers", "JAX BCOO")


def latency_table(results, b: int) -> str:
    head = ["actor"] + [f"{c} us" for c in LATENCY_COLUMNS] + [
        "NumPy dense / NumPy sparse", "JAX dense / NumPy sparse", "JAX dense / JAX sparse"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, (times, _) in results:
        t = times[b]
        cells = [f"{t[c] * 1e6:.1f}" if c in t else "-" for c in LATENCY_COLUMNS]
        ratios = [t["NumPy dense"] / t["NumPy sparse"], t["JAX dense"] / t["NumPy sparse"],
                  t["JAX dense"] / t["JAX sparse (gather)"]]
        lines.append("| " + " | ".join([label] + cells + [f"{r:.2f}x" for r in ratios]) + " |")
    return "\n".join(lines)


def size_table(results) -> str:
    head = ["actor", "stored weights", "export (deflate) B", "export (no deflate) B", "export fp16 B",
            "dense ckpt (np.savez) B", "dense ckpt (savez_compressed) B", "dense / export",
            "dense / export fp16"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, (_, s) in results:
        lines.append("| " + " | ".join([
            label, str(s["nnz"]), str(s["export"]), str(s["export_stored"]), str(s["export_fp16"]),
            str(s["dense"]), str(s["dense_deflate"]), f"{s['dense'] / s['export']:.1f}x",
            f"{s['dense'] / s['export_fp16']:.1f}x"]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    fv = _define_flags()
    try:
        fv(list(argv))
        levels = [("td3", float(s)) for s in fv["sparsities"].value]
    except (flags.Error, ValueError) as err:
        print(f"export_latency: error: {err}", file=sys.stderr)
        return 2
    if fv["sac_sparsity"].value >= 0:
        levels.append(("sac", fv["sac_sparsity"].value))
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for algo, sparsity in levels:
            res = run_level(algo, sparsity, fv["batch"].value, fv["rounds"].value,
                            fv["round_seconds"].value, tmp)
            results.append((f"{algo} {sparsity:.0%}", res))
            print(f"done {algo} {sparsity}", file=sys.stderr, flush=True)
    print(f"obs {OBS_DIM}, act {ACT_DIM}, hidden {HIDDEN}; backend {jax.default_backend()}, "
          f"{os.cpu_count()} CPUs; load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} "
          f"after; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}; median of individually timed calls over "
          f"{fv['rounds'].value} interleaved rounds\n")
    print("Batch 1 (median per-call latency; ratios > 1 mean the sparse export is faster)\n")
    print(latency_table(results, 1))
    print(f"\nBatch {fv['batch'].value}\n")
    print(latency_table(results, fv["batch"].value))
    print("\nFile size (bytes)\n")
    print(size_table(results))
    return 0


if __name__ == "__main__":
    cli.run(main)
