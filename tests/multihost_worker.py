"""Subprocess side of tests/test_distributed.py (XLA_FLAGS must be set before JAX is imported).

    python tests/multihost_worker.py reference OUT      # one process, 4 simulated CPU devices
    python tests/multihost_worker.py worker OUT ADDR N I  # process I of N (2 simulated devices each)

``reference`` trains one chunk of the same tiny config four ways and saves the final states to OUT:
single-device vmapped seeds (plain `trainer` API), the same seeds sharded over 4 devices, a data-parallel
run (2 seeds x 2 shards) on one device, and the same on a 2x2 (seed x data) mesh; it also records the
errors for bad layouts. ``worker`` runs the data-parallel layout with `runner.train` (full host loop:
evaluation, metrics, progress and checkpoints) on a 2x2 mesh whose data axis spans the two processes, so
the gradient all-reduce crosses processes through JAX's CPU collectives (gloo).
"""
import json
import os
import sys

MODE = sys.argv[1]
# every run compared here uses the same flags; LLVM optimisation off halves the compile time of these
# tiny programs (which run for a fraction of a second)
os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=" + ("4" if MODE == "reference" else "2")
                           + " --xla_backend_optimization_level=0")
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from sparse_rl_jax import distributed as dist  # noqa: E402

if MODE == "worker":  # before any JAX computation
    dist.initialize_from_flags(sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))

import jax  # noqa: E402

from sparse_rl_jax import trainer  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402

# one chunk: 32 warm-up + 48 training iterations, 192 updates, topology updates every 10, n-step and
# dynamic-buffer checks on; a single evaluation period
CONFIG = tiny_config("rlx2+importance", "td3", total_env_steps=320, eval_every=320)
DP_SEEDS, DP_SHARDS = 2, 2


def flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def replicas_identical(agent) -> bool:
    """Every device holding a copy of a seed's agent holds the same bits."""
    for x in jax.tree.leaves(agent):
        by_index = {}
        for shard in x.addressable_shards:
            by_index.setdefault(str(shard.index), []).append(np.asarray(shard.data))
        for copies in by_index.values():
            if any(not np.array_equal(c, copies[0]) for c in copies[1:]):
                return False
    return True


def seed0_copy(x):
    """This process's copy of seed 0's block of a seed-sharded, data-replicated array."""
    return next(s.data for s in x.addressable_shards if s.index[0].start in (0, None))


def run_chunk(tr, mesh, keys):
    states = dist.init_states(tr, mesh, keys)
    states, _ = dist.make_chunk_fn(tr, mesh)(states, np.int32(0))
    return states


def reference(out):
    devices = jax.devices()
    results = {"devices": len(devices)}
    # seeds: plain single-device vmapped run vs. sharded over 4 devices
    tr = trainer.Trainer(CONFIG)
    keys = trainer.seed_keys(CONFIG.seed, 4)
    ref, _ = trainer.make_chunk_fn(tr)(trainer.init_states(tr, keys), np.int32(0))
    np.savez(os.path.join(out, "seeds_single.npz"), **flat(ref))
    sharded = run_chunk(tr, dist.make_mesh(1), keys)
    results["seed_shards_per_leaf"] = len(sharded.agent.critic.params["params"]["q1"]["dense_0"]["kernel"]
                                         .addressable_shards)
    np.savez(os.path.join(out, "seeds_sharded.npz"), **flat(dist.to_host(sharded)))
    # data-parallel: 2 seeds x 2 shards on one device vs. a 2x2 mesh
    dtr = dist.DataParallelTrainer(CONFIG, DP_SHARDS)
    dkeys = trainer.seed_keys(CONFIG.seed, DP_SEEDS)
    one = run_chunk(dtr, dist.make_mesh(1, devices[:1]), dkeys)
    np.savez(os.path.join(out, "dp_single.npz"), **flat(dist.to_host(one)))
    mesh = dist.make_mesh(2)
    four = run_chunk(dtr, mesh, dkeys)
    results["dp_mesh"] = dict(mesh.shape)
    results["dp_replicas_identical"] = replicas_identical(four.agent)
    np.savez(os.path.join(out, "dp_mesh.npz"), **flat(dist.to_host(four)))
    # layouts that cannot be mapped: one clear line each
    errors = {}
    for name, fn in {
        "seeds": lambda: dist.init_states(tr, dist.make_mesh(1), trainer.seed_keys(0, 3)),
        "shards": lambda: dist.check_layout(dist.make_mesh(4), 1, 2),
        "num_envs": lambda: dist.shard_config(CONFIG, 3),
    }.items():
        try:
            fn()
            errors[name] = None
        except dist.ScaleError as err:
            errors[name] = str(err)
    results["errors"] = errors
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(results, f)


def worker(out):
    from sparse_rl_jax import checkpoint, runner

    pid = jax.process_index()
    local = jax.local_devices()
    # data axis across processes: each seed's two shards live on different processes
    grid = [[d for d in jax.devices() if d.process_index == p][i] for i in range(len(local))
            for p in range(jax.process_count())]
    mesh = dist.make_mesh(2, grid)
    log = os.path.join(out, f"progress_{pid}.jsonl")

    def progress(steps, metrics):
        with open(log, "a") as f:
            f.write(json.dumps({"env_steps": steps, "return": np.asarray(metrics["eval/episode_reward"]).tolist(),
                                "critic_loss": np.asarray(metrics["training/critic_loss"]).tolist()}) + "\n")

    def save(period):
        chunks, states, history = period.period, period.states, period.history
        host = dist.to_host(states)  # collective: every process takes part
        if dist.is_primary():
            np.savez(os.path.join(out, "dp_multihost.npz"), **flat(host))
        # orbax is itself multi-process aware: every process calls save (it synchronises them), and host
        # (numpy) values are written by the primary process only
        checkpoint.save(os.path.join(out, "run"), chunks, host, history, CONFIG, DP_SEEDS)

    result = runner.train(CONFIG, DP_SEEDS, data_shards=DP_SHARDS, mesh=mesh, progress_fn=progress,
                          callbacks=[save])
    info = {"process": pid, "processes": jax.process_count(), "global_devices": len(jax.devices()),
            "replicas_identical": replicas_identical(result.states.agent),
            "data_group_processes": sorted({d.process_index for d in mesh.devices[0]}),
            "env_steps": result.history[-1][0]}
    # this process's copies of the agent, to compare bits across processes
    np.savez(os.path.join(out, f"agent_local_{pid}.npz"),
             **{f"{i}": np.asarray(seed0_copy(x)) for i, x in enumerate(jax.tree.leaves(result.states.agent))})
    with open(os.path.join(out, f"worker_{pid}.json"), "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    (reference if MODE == "reference" else worker)(sys.argv[2])
