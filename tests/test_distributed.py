"""Scale-out in the library: both mesh axes at once on 4 simulated CPU devices, and the layout errors.

The 4-device run happens in a subprocess (XLA_FLAGS must be set before JAX is imported;
tests/mesh_worker.py): a data-parallel run of 2 seeds x 2 shards on one device and on a 2x2
(seed x data) mesh, compared with rtol 1e-4 (different batch shapes and reduction orders reassociate
float sums). Seed sharding alone, data parallelism alone, two processes joined by `jax.distributed` and
resume run end to end through the launcher in tests/test_launcher_scaleout.py, through the same library
code, so they are not repeated here.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sparse_rl_jax import config as cfg_lib
from sparse_rl_jax import distributed as dist
from tests.conftest import tiny_config

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mesh_worker.py")
ROOT = os.path.dirname(os.path.dirname(WORKER))
TIMEOUT = 1200


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("scaleout"))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, WORKER, out], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"the 4-device run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}"
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
def test_data_parallel_four_devices_equals_single_device(runs):
    ref = json.load(open(os.path.join(runs, "reference.json")))
    assert ref["devices"] == 4
    assert ref["dp_mesh"] == {"seed": 2, "data": 2}
    assert ref["dp_replicas_identical"], "devices of one data group must hold bit-identical agents"
    assert ref["dp_changed_copy_found"] == "['b']"  # the check itself can fail
    single = _load(runs, "dp_single.npz")
    assert_states_close(_load(runs, "dp_mesh.npz"), single)
    # agent once per seed, every other field per (seed, shard); shards really differ
    assert single[".agent.critic.params['params']['q1']['dense_0']['kernel']"].shape[0] == 2
    obs = single[".replay.data.obs"]
    assert obs.shape[:2] == (2, 2) and obs.shape[3] == 2  # 2 seeds x 2 shards, 2 of the 4 envs each
    assert not np.allclose(obs[:, 0], obs[:, 1])


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
