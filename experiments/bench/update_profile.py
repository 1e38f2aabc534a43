"""Where one method's update spends its time: a `jax.profiler` trace of the update alone, per compiled op.

    python -m experiments.bench.update_profile --method ds+importance --algo sac [--iterations 200]

The program is the methods bench's update alone (`methods.update_chunk`: the agent's `update` under the
seed ``vmap``, scanned over ``--iterations`` updates on a fixed random window of the env's sizes, no env).
It runs ``--warmup`` chunks (past the first topology event at the default period of 1000), then traces
``--chunks`` more with ``create_perfetto_trace`` and prints, per op of the compiled program, its **self
time** (its own duration less that of the ops it runs, so a while loop shows its dispatch and selects
and its body's ops show apart) in microseconds per update, with what JAX called it (the last two parts
of the op's ``op_name`` in the compiled HLO). A second table sums the self time by the outermost jitted
function an op belongs to (``top_k_floor``: the DS target prune's search; ``update_mask``: topology
events; ``_normal``: a PRNG draw), else by those two name parts. YNNPACK matrix products carry no name;
they are grouped as "matmul (YNNPACK)". The profiler keeps a bounded number of events, so the updates
are counted from the trace itself (the most common call count of an op) and the tables are per update.

Self times are summed over the machine's threads, so they can exceed the wall time; compare ops within
one trace, or one op's share across traces, not absolute numbers across days (docs/benchmarks.md).
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp
from absl import app, flags

from experiments.bench import methods as bench

FLAGS = flags.FLAGS
flags.DEFINE_string("method", "ds+importance", "method preset to profile")
flags.DEFINE_string("algo", "sac", "algorithm")
flags.DEFINE_integer("warmup", 5, "untraced chunks first (5 x 200 updates reach the first event)", lower_bound=0)
flags.DEFINE_integer("chunks", 5, "traced chunks", lower_bound=1)
flags.DEFINE_integer("top", 30, "ops to print", lower_bound=1)
flags.DEFINE_string("trace_dir", "", "where the trace goes (default: a temporary folder)")
FLAGS.set_default("iterations", 200)  # the methods bench's flag: updates per chunk here

_DEF = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = ")
_NAME = re.compile(r'op_name="([^"]*)"')


_JIT = re.compile(r"(?:jvp\(|transpose\(|vmap\()*jit\(([^)]*)\)")


def op_names(hlo_text: str) -> Dict[str, str]:
    """Compiled-HLO instruction name -> the ``op_name`` JAX gave it."""
    names = {}
    for line in hlo_text.splitlines():
        d, n = _DEF.match(line), _NAME.search(line)
        if d and n:
            names[d.group(1)] = n.group(1)
    return names


def short(op_name: str) -> str:
    """The last two parts of an ``op_name`` path."""
    return "/".join(op_name.split("/")[-2:])


def function_of(op_name: str) -> str:
    """The outermost jitted function inside the traced program (``jit(run)``), else `short`."""
    for part in op_name.split("/")[1:]:
        m = _JIT.match(part)
        if m:
            return m.group(1)
    return short(op_name)


def self_times(events: List[dict]) -> Tuple[collections.Counter, collections.Counter]:
    """(self time in us, calls) per event name, over complete events nested per thread."""
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and "dur" in e and not e["name"].startswith("end:"):
            by_thread[(e["pid"], e["tid"])].append(dict(e))
    own, calls = collections.Counter(), collections.Counter()
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: List[dict] = []
        for e in evs:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                stack.pop()
            if stack:
                stack[-1]["children"] = stack[-1].get("children", 0.0) + e["dur"]
            stack.append(e)
        for e in evs:
            own[e["name"]] += e["dur"] - e.get("children", 0.0)
            calls[e["name"]] += 1
    return own, calls


def is_runtime(name: str) -> bool:
    """The runtime's own spans (executor, waits), not ops of the program."""
    return name.startswith(("ThunkExecutor", "SlinkyThreadPool", "$", "PjitFunction")) or "::" in name


def main(argv):
    del argv
    it = FLAGS.iterations
    chunk, states = bench.update_chunk(it, FLAGS.warmup + FLAGS.chunks, FLAGS.method, FLAGS.algo)
    first = 1
    for _ in range(FLAGS.warmup):
        states = chunk(states, jnp.int32(first * it))
        first += 1
    jax.block_until_ready(states)
    trace_dir = FLAGS.trace_dir or tempfile.mkdtemp(prefix="update_profile_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(FLAGS.chunks):
            states = chunk(states, jnp.int32(first * it))
            first += 1
        jax.block_until_ready(states)
    files = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    trace = json.load(gzip.open(max(files, key=os.path.getmtime)))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = op_names(chunk.lower(states, jnp.int32(0)).compile().as_text())
    own, calls = self_times(events)
    program = {n: c for n, c in calls.items() if not is_runtime(n)}
    updates = collections.Counter(program.values()).most_common(1)[0][0]  # most ops run once per update
    rows, functions = collections.Counter(), collections.Counter()
    for name, t in own.items():
        if is_runtime(name):
            continue
        if name not in names and name.startswith(("ynn_fusion", "dot.")):
            rows[("matmul (YNNPACK)", "")] += t
            functions["matmul (YNNPACK)"] += t
            continue
        rows[(name, short(names.get(name, "")))] += t
        functions[function_of(names.get(name, name))] += t
    total = sum(rows.values())
    print(f"\n{FLAGS.algo} {FLAGS.method}: update alone ({FLAGS.env} sizes), events of {updates} of the "
          f"{FLAGS.chunks * it} traced updates recorded; self time summed over threads: "
          f"{total / updates:.0f} us per update\n")
    print("| op | JAX op_name | calls per update | us per update | share |\n|---|---|---:|---:|---:|")
    for (name, what), t in rows.most_common(FLAGS.top):
        per = f"{calls[name] / updates:.2f}" if name in calls else "-"
        print(f"| {name} | {what} | {per} | {t / updates:.1f} | {100 * t / total:.1f}% |")
    print("\n| function | us per update | share |\n|---|---:|---:|")
    for name, t in functions.most_common(FLAGS.top):
        print(f"| {name} | {t / updates:.1f} | {100 * t / total:.1f}% |")
    print(f"\ntrace: {trace_dir}")


if __name__ == "__main__":
    app.run(main)
