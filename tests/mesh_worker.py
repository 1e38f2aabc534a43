"""Subprocess side of tests/test_distributed.py (XLA_FLAGS must be set before JAX is imported).

    python tests/mesh_worker.py OUT      # one process, 4 simulated CPU devices

Trains one chunk of the same tiny config data-parallel (2 seeds x 2 shards) on one device and on a 2x2
(seed x data) mesh, so both axes are sharded at once, and saves both final states to OUT; it also records
whether the devices of one data group hold bit-identical agents and the errors for bad layouts. Seed
sharding alone, data parallelism alone and two processes joined by `jax.distributed` are run end to end
through the launcher by tests/test_launcher_scaleout.py (the same library code, so not repeated here).
"""
import json
import os
import sys

# LLVM optimisation off halves the compile time of these tiny programs (which run for a fraction of a
# second); both runs compared here use the same flags
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import jax  # noqa: E402

from sparse_rl_jax import distributed as dist  # noqa: E402
from sparse_rl_jax import trainer  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402

# one chunk: 32 warm-up + 48 training iterations, 192 updates, topology updates every 10, n-step and
# dynamic-buffer checks on; a single evaluation period
CONFIG = tiny_config("rlx2+importance", "td3", total_env_steps=320, eval_every=320)
DP_SEEDS, DP_SHARDS = 2, 2


def flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def with_one_copy_changed(leaf):
    """``leaf`` with the block on its last device changed by 1 (its replica on another device not)."""
    blocks = [np.asarray(shard.data) for shard in leaf.addressable_shards]
    blocks[-1] = blocks[-1] + 1
    return jax.make_array_from_single_device_arrays(
        leaf.shape, leaf.sharding,
        [jax.device_put(b, shard.device) for b, shard in zip(blocks, leaf.addressable_shards)])


def run_chunk(tr, mesh, keys):
    states = dist.init_states(tr, mesh, keys)
    states, _ = dist.make_chunk_fn(tr, mesh)(states, np.int32(0))
    return states


def reference(out):
    devices = jax.devices()
    results = {"devices": len(devices)}
    # data-parallel: 2 seeds x 2 shards on one device vs. a 2x2 mesh
    dtr = dist.DataParallelTrainer(CONFIG, DP_SHARDS)
    dkeys = trainer.seed_keys(CONFIG.seed, DP_SEEDS)
    one = run_chunk(dtr, dist.make_mesh(1, devices[:1]), dkeys)
    np.savez(os.path.join(out, "dp_single.npz"), **flat(dist.to_host(one)))
    mesh = dist.make_mesh(2)
    four = run_chunk(dtr, mesh, dkeys)
    results["dp_mesh"] = dict(mesh.shape)
    results["dp_replicas_identical"] = dist.replica_mismatch(four.agent) is None
    floats = [x for x in jax.tree.leaves(four.agent) if np.issubdtype(x.dtype, np.floating)]
    # one changed device copy is found and named (tree order: "a" equal copies first)
    results["dp_changed_copy_found"] = dist.replica_mismatch({"a": floats[0], "b": with_one_copy_changed(floats[0])})
    np.savez(os.path.join(out, "dp_mesh.npz"), **flat(dist.to_host(four)))
    # layouts that cannot be mapped: one clear line each
    errors = {}
    tr = trainer.Trainer(CONFIG)
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


if __name__ == "__main__":
    reference(sys.argv[1])
