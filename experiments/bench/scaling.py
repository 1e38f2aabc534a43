"""Throughput of the scale-out layouts with 1, 2, 4 simulated CPU devices and 1, 4, 16 seeds.

    python -m experiments.bench.scaling [--devices 1,2,4] [--seeds 1,4,16] [--iterations 40] [--repeats 3] \\
        [--json scaling.json]

Each device count runs in its own subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
(the flag must be set before JAX starts). Per (devices, seeds) two layouts are timed on the steady state
(compiled chunk, after warm-up, best of ``--repeats``):

* **seed-sharded**: seeds split over the devices (needs seeds to be a multiple of the devices);
* **data-parallel**: every seed split into N shards (envs, replay, batch) with gradients averaged over the
  devices by an all-reduce per update.

Reported: environment steps per second summed over seeds, and ratios to the 1-device run with the same
number of seeds. On this machine the simulated devices are threads sharing the same two CPU cores, so
the ratios measure the correctness-preserving *overhead* of sharding (partitioned programs, collectives),
not a speedup; on real multi-chip hardware the seed-sharded layout needs no communication at all.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WORKLOAD = {
    "total_env_steps": 1_000_000, "warmup_env_steps": 256, "eval_every": 160,
    "env.name": "inverted_pendulum", "env.backend": "positional", "env.num_envs": 4,
    "env.episode_length": 1000, "agent.hidden": (64, 64), "agent.batch_size": 64,
    "replay.capacity": 100_000, "replay.min_size": 10_000, "topology.period": 100,
}
METHOD, ALGO = "rlx2", "td3"


def child(num_devices: int, seeds_list, iterations: int, repeats: int) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np

    import sparse_rl_jax as srj
    from sparse_rl_jax import distributed as dist
    from sparse_rl_jax import trainer as trainer_lib

    assert len(jax.devices()) == num_devices
    config = srj.make_config(METHOD, ALGO, **{**WORKLOAD, "eval_every": iterations * WORKLOAD["env.num_envs"]})
    per_chunk = trainer_lib.chunk_iterations(config)
    warm = config.warmup_iterations
    for num_seeds in seeds_list:
        for layout in ("seed-sharded", "data-parallel"):
            if layout == "seed-sharded" and num_seeds % num_devices:
                continue
            shards = num_devices if layout == "data-parallel" else 0
            tr = dist.make_trainer(config, shards)
            mesh = dist.make_mesh(num_devices if shards else 1)
            states = dist.init_states(tr, mesh, trainer_lib.seed_keys(0, num_seeds))
            chunk = dist.make_chunk_fn(tr, mesh)
            t0 = time.perf_counter()
            states, _ = chunk(states, np.int32(0))  # compile, fill the buffer past warm-up
            jax.block_until_ready(states)
            compile_s = time.perf_counter() - t0
            best = float("inf")
            for r in range(repeats):
                t0 = time.perf_counter()
                states, _ = chunk(states, np.int32(warm + (r + 1) * per_chunk))
                jax.block_until_ready(states)
                best = min(best, time.perf_counter() - t0)
            sps = per_chunk * config.env_steps_per_iteration * num_seeds / best
            print(json.dumps({"devices": num_devices, "seeds": num_seeds, "layout": layout,
                              "env_steps_per_s": sps, "updates_per_s": sps * config.updates_per_env_step,
                              "chunk_s": best, "first_call_s": compile_s}), flush=True)


def table(results, layout: str, devices, seeds) -> str:
    by = {(r["devices"], r["seeds"]): r for r in results if r["layout"] == layout}
    head = "| seeds | " + " | ".join(f"{d} device{'s' if d > 1 else ''}" for d in devices) + " |"
    lines = [head, "|---" * (len(devices) + 1) + "|"]
    for s in seeds:
        base = by.get((1, s))
        cells = []
        for d in devices:
            r = by.get((d, s))
            if r is None:
                cells.append("n/a")
            else:
                ratio = f" ({r['env_steps_per_s'] / base['env_steps_per_s']:.2f}x)" if base else ""
                cells.append(f"{r['env_steps_per_s']:,.0f}{ratio}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", default="1,2,4")
    p.add_argument("--seeds", default="1,4,16")
    p.add_argument("--iterations", type=int, default=40, help="iterations per timed chunk")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="write the raw results here")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.child:
        child(args.child, seeds, args.iterations, args.repeats)
        return 0
    devices = [int(d) for d in args.devices.split(",")]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    results = []
    for d in devices:
        out = subprocess.run([sys.executable, "-m", "experiments.bench.scaling", "--child", str(d), "--seeds",
                              args.seeds, "--iterations", str(args.iterations), "--repeats", str(args.repeats)],
                             cwd=root, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
            return 1
        for line in out.stdout.splitlines():
            if line.startswith("{"):
                results.append(json.loads(line))
                print(line, file=sys.stderr, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"workload": {**WORKLOAD, "method": METHOD, "algo": ALGO}, "results": results}, f, indent=1)
    print(f"Workload: {METHOD} {ALGO}, {WORKLOAD['env.name']}, {WORKLOAD['env.num_envs']} envs, "
          f"hidden {WORKLOAD['agent.hidden']}, batch {WORKLOAD['agent.batch_size']}, one update per env step.\n")
    print("Seed-sharded: env steps/s summed over seeds (ratio to 1 device, same seeds)\n")
    print(table(results, "seed-sharded", devices, seeds))
    print("\nData-parallel (each seed split over all devices): env steps/s (ratio to 1 device)\n")
    print(table(results, "data-parallel", devices, seeds))
    print("\nThe simulated CPU devices share the same two cores: these ratios show correctness-preserving "
          "overhead, not speedup.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
