"""Checkpoints: exact round trip of a full TrainState, keep-last-k, atomic saves, clear errors."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_rl_jax import checkpoint, run_logging, runs
from sparse_rl_jax import config as cfg_lib
from tests.conftest import filled, leaves_equal, tiny_config



def test_history_json_form_survives_round_trip():
    history = [(160, {"eval/episode_reward": np.array([1.5, np.nan], np.float32), "nstep": 3,
                      "buffer/size": np.array([160, 160], np.int32), "x": np.float32(np.inf)})]
    form = run_logging.history_to_json(history)
    assert form == [[160, {"eval/episode_reward": [1.5, None], "nstep": 3, "buffer/size": [160, 160], "x": None}]]
    import json
    assert json.loads(json.dumps(form)) == form


@pytest.mark.parametrize("method,algo", [("rlx2+importance", "sac"), ("dense", "td3")])
def test_full_train_state_round_trip_is_exact(tmp_path, method, algo):
    config = tiny_config(method, algo)
    template = runs.template(config, num_seeds=2)
    states = filled(template)
    history = [(160, {"eval/episode_reward": np.array([3.0, 4.0], np.float32)})]
    checkpoint.save(str(tmp_path), 1, states, history, config, keep=2)
    restored = runs.restore(str(tmp_path))
    assert restored.period == 1 and restored.num_seeds == 2
    assert restored.config == cfg_lib.to_dict(config) or cfg_lib.from_dict(restored.config) == config
    assert restored.history == run_logging.history_to_json(history)
    # Same structure including None leaves (dense masks, no actor target for SAC) and Brax's env state.
    assert jax.tree.structure(restored.states) == jax.tree.structure(states)
    leaves_equal(states, restored.states)
    # Restored arrays behave like fresh ones under jit (no second compile of the training chunk).
    assert not any(x._committed for x in jax.tree.leaves(restored.states))
    config_dict, same = runs.restore_latest(str(tmp_path))
    assert config_dict["method"] == method
    leaves_equal(states, same)


@pytest.mark.parametrize("without", [("target_floor",), ("target_floor", "obs_stats")])
def test_checkpoint_of_an_older_format_restores_with_the_added_fields_filled(tmp_path, without):
    """A checkpoint written before `checkpoint.ADDED_FIELDS` existed (format 1: no network carries
    ``target_floor``; older still: no ``obs_stats``) resumes: every other leaf exactly, the floors zero."""
    config = tiny_config("ds", "td3")
    states = filled(runs.template(config, num_seeds=2))
    fill = {name: rule for name, rule in checkpoint.ADDED_FIELDS if name in without}
    older = checkpoint._strip(states, fill)  # on disk, a dataclass is a dict of its fields' names
    assert "target_floor" not in older["agent"]["critic"]
    checkpoint.save(str(tmp_path), 1, older, [], config, num_seeds=2)
    restored = runs.restore(str(tmp_path)).states
    assert jax.tree.structure(restored) == jax.tree.structure(states)
    for net, written in ((restored.agent.actor, states.agent.actor), (restored.agent.critic, states.agent.critic)):
        assert net.target_floor.shape == written.target_floor.shape and not np.asarray(net.target_floor).any()
    leaves_equal(states.replace(agent=states.agent.replace(
        actor=states.agent.actor.replace(target_floor=restored.agent.actor.target_floor),
        critic=states.agent.critic.replace(target_floor=restored.agent.critic.target_floor))), restored)


def test_checkpoint_that_normalised_observations_is_never_given_invented_statistics(tmp_path):
    config = tiny_config("ds", "td3", **{"env.normalize_observations": True})
    states = filled(runs.template(config, num_seeds=2))
    older = checkpoint._strip(states, {"target_floor": "zeros"})
    del older["obs_stats"]
    checkpoint.save(str(tmp_path), 1, older, [], config, num_seeds=2)
    with pytest.raises(checkpoint.CheckpointError, match="corrupted or unreadable"):
        runs.restore(str(tmp_path))


def test_keeps_last_k_and_restores_newest(tmp_path):
    states = {"w": jnp.arange(6.0).reshape(2, 3), "mask": None, "key": jnp.zeros((2, 2), jnp.uint32)}
    saved = {}
    for step in range(1, 5):
        states = {**states, "w": states["w"] + step}
        saved[step] = np.asarray(states["w"])
        checkpoint.save(str(tmp_path), step, states, [[step, {"x": step}]], cfg_lib.Config(), num_seeds=2,
                        keep=2)
    assert checkpoint.all_periods(str(tmp_path)) == [3, 4]
    template = lambda config, n, shards: jax.eval_shape(lambda: states)  # noqa: E731
    newest = checkpoint.restore(str(tmp_path), template)
    assert newest.period == 4 and newest.history == [[4, {"x": 4}]] and newest.states["mask"] is None
    np.testing.assert_array_equal(newest.states["w"], saved[4])
    np.testing.assert_array_equal(checkpoint.restore(str(tmp_path), template, period=3).states["w"], saved[3])
    with pytest.raises(checkpoint.CheckpointError, match="available: \\[3, 4\\]"):
        checkpoint.restore(str(tmp_path), template, period=1)  # evicted


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint in"):
        runs.restore(str(tmp_path))
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint in"):
        runs.restore_latest(str(tmp_path / "absent"))


def _corrupt_files(folder):
    """Overwrite every data file below `folder` with garbage (metadata files included)."""
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\x00garbage")


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    config = tiny_config("dense", "td3")
    states = filled(runs.template(config, num_seeds=1))
    checkpoint.save(str(tmp_path), 1, states, [], config)
    step_dir = os.path.join(checkpoint.checkpoint_dir(str(tmp_path)), "1")
    _corrupt_files(os.path.join(step_dir, "state"))
    with pytest.raises(checkpoint.CheckpointError, match="corrupted") as err:
        runs.restore(str(tmp_path))
    assert step_dir in str(err.value) and "\n" not in str(err.value)
    _corrupt_files(os.path.join(step_dir, "meta"))
    with pytest.raises(checkpoint.CheckpointError, match="corrupted"):
        checkpoint.read_meta(str(tmp_path))


_SAVER = textwrap.dedent("""
    import sys
    import numpy as np, jax.numpy as jnp
    from sparse_rl_jax import checkpoint, config
    workdir = sys.argv[1]
    small = {"w": jnp.ones((2, 8)), "mask": None}
    checkpoint.save(workdir, 1, small, [], config.Config(), num_seeds=2)
    print("saved 1", flush=True)
    big = {"w": jnp.asarray(np.random.default_rng(0).random((2, 30_000_000), np.float32)), "mask": None}
    checkpoint.save(workdir, 2, big, [], config.Config(), num_seeds=2)
    print("saved 2", flush=True)
""")


def test_process_killed_during_save_leaves_previous_checkpoint_usable(tmp_path):
    workdir = str(tmp_path / "run")
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    proc = subprocess.Popen([sys.executable, str(script), workdir], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    tmp_dir = os.path.join(checkpoint.checkpoint_dir(workdir), "2.orbax-checkpoint-tmp")
    try:
        assert proc.stdout.readline().strip() == "saved 1"
        deadline = time.time() + 120
        while not os.path.exists(tmp_dir) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        assert os.path.exists(tmp_dir), "the second save never started writing"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert os.path.isdir(tmp_dir), "killed mid-save: the unfinished tmp directory is left behind"
    assert checkpoint.all_periods(workdir) == [1]
    meta = checkpoint.read_meta(workdir)
    assert meta["period"] == 1
    # The next save of the same step replaces the stale tmp directory and succeeds.
    checkpoint.save(workdir, 2, {"w": jnp.zeros((2, 8)), "mask": None}, [], cfg_lib.Config(), num_seeds=2)
    assert checkpoint.all_periods(workdir) == [1, 2]
