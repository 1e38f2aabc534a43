"""What a wider SimBa critic costs per update, dense and sparse, beside its active-FLOP floor.

    python -m experiments.bench.width_cost [--widths 256,512,1024,2048] [--sparsity 0.9] [--rounds 5] \\
        [--json out.json]

Each width ``h`` is Ma et al.'s SAC (`presets.RECIPES['ma2025']`: actor 1 block x 128, critic 2 blocks x
``h``, one Q, batch 256) on HalfCheetah's sizes (17 observations, 6 actions), once dense and once with
static ER masks at ``--sparsity`` on both networks. The timed program is the update alone (the methods
bench's `trainer_update_chunk`: the agent's update under the seed ``vmap``, scanned over a fixed random
window, no env), so the numbers are the network's cost, not the simulator's.

Per width the dense and the sparse program run once each per round, in a random order, and the sparse
one's cost is the **median over rounds of the per-round ratio** sparse / dense (the machine's speed moves
between rounds; a round moves both alike). Beside it, the FLOP ratio: multiply-adds per update of the
sparse agent over the dense one's (`sparsity.flops`, the agent's pass model at its masks' counts), the
floor a compacted sparse matmul could reach. The masks are applied to dense matrices, so today the time
ratio stays near 1 whatever the FLOP ratio: the gap is the work dense-masked products waste.

Also timed: the plasticity diagnostics of one evaluation period (`Trainer.diagnose`: a forward of both
networks on a batch, the SVD of the features), as a fraction of the updates of a 1,000-update period.
"""
from __future__ import annotations

import json
import random
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments.bench import methods as methods_bench
from sparse_rl_jax import metrics, presets, trainer
from sparse_rl_jax.sparsity import flops

FLAGS = flags.FLAGS
flags.DEFINE_list("widths", ["256", "512", "1024", "2048"], "critic block widths h")
flags.DEFINE_float("sparsity", 0.9, "the sparse program's sparsity (both networks, ER)", lower_bound=0.0,
                   upper_bound=0.999)
flags.DEFINE_integer("rounds", 5, "timing rounds (each runs every program once, in a random order)",
                     lower_bound=1)
flags.DEFINE_float("update_budget", 2e10, "multiply-adds per timed chunk (sets the updates per chunk of each "
                   "width, at least 1)", lower_bound=1)
flags.DEFINE_string("json", None, "also write the rows here")
BATCH, PERIOD_UPDATES = 256, 1000


def config(width: int, sparsity: float):
    method = "static" if sparsity > 0 else "dense"
    return presets.make_config(method, "sac", recipe="ma2025", **{
        "env.name": "halfcheetah", "env.backend": "spring", "env.num_envs": 1, "agent.batch_size": BATCH,
        "agent.critic_hidden": (width, width), "sparsity.actor": sparsity, "sparsity.critic": sparsity,
        "warmup_env_steps": 0, "total_env_steps": 1000, "eval_every": 1000})


def update_flops(tr: trainer.Trainer, agent_states) -> flops.Count:
    """Multiply-adds of one update (steady state, batch included) at the masks' counts, and dense."""
    first = lambda tree: jax.tree.map(lambda x: np.asarray(x[0]), tree)  # noqa: E731 - the one seed
    counts = {name: flops.network_count(first(p), masks=first(m))
              for name, (p, m) in metrics.network_layers(tr, agent_states).items()}
    return flops.train_flops(tr.agent.flop_model, counts["actor"], counts["critic"], batch_size=BATCH)


def prepare(width: int, sparsity: float, updates: int):
    tr = trainer.Trainer(config(width, sparsity))
    chunk, states = methods_bench.trainer_update_chunk(tr, updates, BATCH)
    return tr, chunk, states


def main(argv):
    del argv
    rows, rng = [], random.Random(0)
    for width in map(int, FLAGS.widths):
        dense_tr = trainer.Trainer(config(width, 0.0))
        probe = methods_bench.trainer_update_chunk(dense_tr, 1, BATCH)[1]
        per_update = update_flops(dense_tr, probe).dense
        updates = max(int(FLAGS.update_budget // max(per_update, 1)), 1)
        programs = {s: prepare(width, s, updates) for s in (0.0, FLAGS.sparsity)}
        seconds = {s: [] for s in programs}
        for _ in range(FLAGS.rounds):
            order = list(programs)
            rng.shuffle(order)
            for s in order:
                tr, chunk, states = programs[s]
                t0 = time.perf_counter()
                states = chunk(states, jnp.int32(0))
                jax.block_until_ready(states)
                seconds[s].append((time.perf_counter() - t0) / updates)
                programs[s] = (tr, chunk, states)
        tr, _, states = programs[FLAGS.sparsity]
        ts = jax.jit(jax.vmap(tr.init))(trainer.seed_keys(0, 1), jnp.full((1,), FLAGS.sparsity),
                                        jnp.full((1,), FLAGS.sparsity))
        ts = ts.replace(agent=states)
        diagnose = jax.jit(jax.vmap(tr.diagnose))
        jax.block_until_ready(diagnose(ts))
        diag = statistics.median(_timed(diagnose, ts) for _ in range(FLAGS.rounds))
        sparse_flops = update_flops(tr, states)
        ratios = [a / b for a, b in zip(seconds[FLAGS.sparsity], seconds[0.0])]
        critic_params = sum(int(np.size(x)) for x in jax.tree.leaves(states.critic.params))
        rows.append({
            "critic_width": width, "critic_params": critic_params, "updates_per_chunk": updates,
            "dense_ms": 1e3 * statistics.median(seconds[0.0]),
            "sparse_ms": 1e3 * statistics.median(seconds[FLAGS.sparsity]),
            "time_ratio": statistics.median(ratios), "time_ratio_range": [min(ratios), max(ratios)],
            "flop_ratio": sparse_flops.sparse / sparse_flops.dense, "dense_gmac": sparse_flops.dense / 1e9,
            "diagnose_ms": 1e3 * diag,
            "diagnose_share": diag / (diag + PERIOD_UPDATES * statistics.median(seconds[FLAGS.sparsity])),
        })
        print(f"  width {width}: done ({updates} updates per chunk)", flush=True)
    print(f"\nSAC, Ma et al.'s SimBa bodies (actor 1x128, critic 2 blocks x h, one Q), batch {BATCH}, "
          f"sparsity {FLAGS.sparsity:g} (static ER) vs dense, {FLAGS.rounds} rounds, {jax.devices()[0].platform}")
    print("| critic h | critic params | dense ms/update | sparse ms/update | time sparse/dense (median, range) "
          "| FLOPs sparse/dense | dense G multiply-adds/update | diagnostics ms (share of a 1k-update period) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lo, hi = r["time_ratio_range"]
        print(f"| {r['critic_width']} | {r['critic_params'] / 1e6:.2f}M | {r['dense_ms']:.1f} | {r['sparse_ms']:.1f} "
              f"| {r['time_ratio']:.2f} ({lo:.2f}-{hi:.2f}) | {r['flop_ratio']:.3f} | {r['dense_gmac']:.2f} "
              f"| {r['diagnose_ms']:.1f} ({100 * r['diagnose_share']:.2f}%) |")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump({"sparsity": FLAGS.sparsity, "rounds": FLAGS.rounds, "rows": rows}, f, indent=1)


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


if __name__ == "__main__":
    app.run(main)
