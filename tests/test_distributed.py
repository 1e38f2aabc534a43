"""Scale-out: seed sharding and data parallelism on 4 simulated CPU devices and on 2 processes.

The multi-device runs happen in subprocesses (XLA_FLAGS must be set before JAX is imported): one process
with 4 devices (tests/multihost_worker.py reference) and, concurrently, two processes with 2 devices each
joined by `jax.distributed` over localhost (CPU collectives). Every result is compared with the
single-device run of the same seeds (rtol 1e-4: different batch shapes and reduction orders reassociate
float sums).
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from sparse_rl_jax import config as cfg_lib
from sparse_rl_jax import distributed as dist
from tests.conftest import tiny_config

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost_worker.py")
ROOT = os.path.dirname(os.path.dirname(WORKER))
TIMEOUT = 1200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("scaleout"))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    address = f"127.0.0.1:{_free_port()}"
    commands = {"reference": [sys.executable, WORKER, "reference", out]}
    for i in range(2):
        commands[f"worker{i}"] = [sys.executable, WORKER, "worker", out, address, "2", str(i)]
    procs = {name: subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for name, cmd in commands.items()}
    deadline = time.time() + TIMEOUT
    logs = {}
    try:
        for name, proc in procs.items():
            logs[name], _ = proc.communicate(timeout=max(deadline - time.time(), 1))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = {n: p.returncode for n, p in procs.items() if p.returncode != 0}
    assert not failed, f"subprocesses failed: {failed}\n" + "\n".join(
        f"--- {n}\n{logs.get(n, '')[-3000:]}" for n in failed)
    return out


def _load(out, name):
    return dict(np.load(os.path.join(out, name)))


def assert_states_close(actual, desired, rtol=1e-4, atol=1e-5):
    assert set(actual) == set(desired)
    for key in desired:
        a, d = actual[key], desired[key]
        assert a.shape == d.shape, key
        if d.dtype == bool or d.dtype.kind in "iu":
            np.testing.assert_array_equal(a, d, err_msg=key)  # masks, counters, keys: exact
        else:
            np.testing.assert_allclose(a, d, rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.slow
def test_seed_sharded_four_devices_equals_single_device(runs):
    ref = json.load(open(os.path.join(runs, "reference.json")))
    assert ref["devices"] == 4 and ref["seed_shards_per_leaf"] == 4  # one seed per device
    assert_states_close(_load(runs, "seeds_sharded.npz"), _load(runs, "seeds_single.npz"))


@pytest.mark.slow
def test_data_parallel_four_devices_equals_single_device(runs):
    ref = json.load(open(os.path.join(runs, "reference.json")))
    assert ref["dp_mesh"] == {"seed": 2, "data": 2}
    assert ref["dp_replicas_identical"], "devices of one data group must hold bit-identical agents"
    single = _load(runs, "dp_single.npz")
    assert_states_close(_load(runs, "dp_mesh.npz"), single)
    # agent once per seed, every other field per (seed, shard); shards really differ
    assert single[".agent.critic.params['params']['q1']['dense_0']['kernel']"].shape[0] == 2
    obs = single[".replay.data.obs"]
    assert obs.shape[:2] == (2, 2) and obs.shape[3] == 2  # 2 seeds x 2 shards, 2 of the 4 envs each
    assert not np.allclose(obs[:, 0], obs[:, 1])


@pytest.mark.slow
def test_two_processes_equal_single_device(runs):
    infos = [json.load(open(os.path.join(runs, f"worker_{i}.json"))) for i in range(2)]
    assert [i["processes"] for i in infos] == [2, 2] and [i["global_devices"] for i in infos] == [4, 4]
    assert all(i["replicas_identical"] for i in infos)
    assert infos[0]["data_group_processes"] == [0, 1]  # the gradient all-reduce crosses processes
    assert infos[0]["env_steps"] == 320
    assert_states_close(_load(runs, "dp_multihost.npz"), _load(runs, "dp_single.npz"))
    # the agent copies on the two processes are bit-identical
    a, b = _load(runs, "agent_local_0.npz"), _load(runs, "agent_local_1.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # only process 0 logs and writes the checkpoint
    assert os.path.isfile(os.path.join(runs, "progress_0.jsonl"))
    assert not os.path.exists(os.path.join(runs, "progress_1.jsonl"))
    assert os.listdir(os.path.join(runs, "run", "checkpoints")) == ["1"]


@pytest.mark.slow
def test_bad_layouts_raise_one_line_errors(runs):
    errors = json.load(open(os.path.join(runs, "reference.json")))["errors"]
    assert "number of seeds 3" in errors["seeds"] and "multiple of the 4 devices" in errors["seeds"]
    assert "data_shards=2" in errors["shards"]
    assert "env.num_envs=4" in errors["num_envs"] and "data_shards=3" in errors["num_envs"]
    assert all("\n" not in e for e in errors.values())


# ---------------------------------------------------------------------------- in-process, no compile
def test_shard_config_keeps_every_iteration_count():
    config = tiny_config("rlx2", "td3", **{"env.num_envs": 8, "agent.batch_size": 64})
    local = dist.shard_config(config, 4)
    assert (local.env.num_envs, local.agent.batch_size) == (2, 16)
    for name in ("warmup_iterations", "train_iterations", "updates_per_iteration", "total_updates"):
        assert getattr(local, name) == getattr(config, name)
    assert local.replay.capacity * 4 >= config.replay.capacity
    with pytest.raises(dist.ScaleError, match="agent.batch_size=65"):
        dist.shard_config(cfg_lib.replace(config, **{"env.num_envs": 12, "agent.batch_size": 65}), 3)


def test_initialize_from_flags_single_process_is_a_no_op():
    assert dist.initialize_from_flags() is False
    with pytest.raises(dist.ScaleError, match="coordinator_address"):
        dist.initialize_from_flags(num_processes=2)
    assert dist.is_primary()
