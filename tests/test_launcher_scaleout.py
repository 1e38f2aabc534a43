"""`experiments.train` over several devices and processes, end to end through the CLI.

Runs (started together, tiny budget, two evaluation periods each):

* ``single``: 2 seeds on one CPU device (the plain vmapped program, the reference);
* ``seeds``: the same 2 seeds sharded over 2 simulated devices;
* ``data``: 1 seed data-parallel with ``--data_shards 2`` on 2 simulated devices;
* ``hosts``: the same data-parallel run as two processes (1 device each) joined by ``jax.distributed`` on
  localhost: the gradient all-reduce crosses processes (CPU collectives), and after every period the
  launcher checks that both processes hold the same agent bit for bit (`distributed.replica_mismatch`).

Then the ``data`` run is resumed from its first checkpoint. Every run is checked against its reference:
seed sharding against one device (rtol 1e-4: the batch shapes differ, so float sums reassociate), the
two-process run against the one-process run of the same shards, the resumed run bit for bit.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from sparse_rl_jax import checkpoint
from sparse_rl_jax import runs as saved_runs
from tests.conftest import CONFIGS, ROOT, TIMING, tiny_args

TINY = tiny_args()  # two evaluation periods
ARGS = [f"--config={CONFIGS}/preset.py:rlx2,td3", *TINY]
TIMEOUT = 1200


def _env(devices: int, cache=None):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    env["JAX_PLATFORMS"] = "cpu"
    if cache:  # the resumed run reuses the programs its original compiled
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    # LLVM optimisation off halves the compile time of these tiny programs; the same for every run
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(devices, *args, cache=None):
    return subprocess.Popen([sys.executable, "-m", "experiments.train", *args], env=_env(devices, cache), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs):
    deadline = time.time() + TIMEOUT
    out = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=max(deadline - time.time(), 1))
            out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = {n: r for n, r in out.items() if r.returncode != 0}
    assert not failed, "\n".join(f"--- {n} (exit {r.returncode})\n{r.stderr[-3000:]}" for n, r in failed.items())
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaleout_cli")
    dirs = {name: str(root / name) for name in ("single", "seeds", "data", "hosts", "resumed")}
    cache = root / "jax_cache"
    address = f"127.0.0.1:{_free_port()}"
    procs = {
        "single": _start(1, *ARGS, "--seeds=2", f"--workdir={dirs['single']}"),
        "seeds": _start(2, *ARGS, "--seeds=2", f"--workdir={dirs['seeds']}"),
        "data": _start(2, *ARGS, "--data_shards=2", f"--workdir={dirs['data']}", cache=cache),
    }
    dirs["hosts_cache"] = str(root / "hosts_cache")  # the killed-process test reuses these programs
    for i in range(2):
        procs[f"host{i}"] = _start(1, *ARGS, "--data_shards=2", f"--workdir={dirs['hosts']}",
                                   f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}",
                                   cache=dirs["hosts_cache"])
    results = _finish(procs)
    # resume the data-parallel run from its first checkpoint (as if killed during the second period)
    shutil.copytree(dirs["data"], dirs["resumed"])
    shutil.rmtree(os.path.join(checkpoint.checkpoint_dir(dirs["resumed"]), "2"))
    results.update(_finish({"resumed": _start(2, f"--workdir={dirs['resumed']}", "--resume", cache=cache)}))
    return dirs, results


def _leaves(workdir):
    restored = saved_runs.restore(workdir)
    return restored, jax.tree_util.tree_leaves_with_path(restored.states)


def _assert_close(workdir, reference, rtol):
    (a, la), (b, lb) = _leaves(workdir), _leaves(reference)
    assert (a.period, a.num_seeds, a.data_shards) == (b.period, b.num_seeds, b.data_shards)
    for (path, x), (_, y) in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype.kind == "f" and rtol:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-5, err_msg=jax.tree_util.keystr(path))
        else:  # masks, counters, keys (and everything when rtol=0): exact
            np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def _assert_rows_close(actual, desired):
    assert [sorted(r) for r in actual] == [sorted(r) for r in desired]
    for a, d in zip(actual, desired):
        for key, value in d.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
            else:
                assert a[key] == value, key


def _rows(workdir, seed=0):
    with open(os.path.join(workdir, "metrics", f"seed_{seed}.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


@pytest.mark.slow
def test_seeds_sharded_over_two_devices_equal_one_device(runs):
    dirs, results = runs
    assert "layout: seeds sharded over 2 cpu device(s)" in results["seeds"].stdout
    assert "layout: one program on 1 cpu device(s)" in results["single"].stdout
    _assert_close(dirs["seeds"], dirs["single"], rtol=1e-4)
    summary = json.load(open(os.path.join(dirs["seeds"], "summary.json")))
    assert summary["num_seeds"] == 2 and summary["env_steps"] == 640
    for seed in (0, 1):
        assert len(_rows(dirs["seeds"], seed)) == 2
    assert os.path.isfile(os.path.join(dirs["seeds"], "plots", "learning_curve.png"))


@pytest.mark.slow
def test_data_parallel_run_checkpoints_its_layout_and_resumes_bit_for_bit(runs):
    dirs, results = runs
    assert "layout: data-parallel, 2 shards per seed over 2 cpu device(s)" in results["data"].stdout
    assert "data-parallel replicas: bit-identical on all 2 device(s) in 1 process(es)" in results["data"].stdout
    restored = saved_runs.restore(dirs["data"])
    assert restored.data_shards == 2 and restored.num_seeds == 1
    obs = np.asarray(restored.states.replay.data.obs)
    assert obs.shape[:2] == (1, 2)  # [seeds, shards, ...]: each shard keeps its own replay
    assert "resuming after period 1/2" in results["resumed"].stdout
    _assert_close(dirs["resumed"], dirs["data"], rtol=0)
    assert _rows(dirs["resumed"]) == _rows(dirs["data"])
    # the policy of a data-parallel run loads like any other
    policy = saved_runs.load_policy(dirs["data"])
    assert np.asarray(policy(np.zeros(policy.agent.obs_dim, np.float32))).shape == (policy.agent.action_dim,)


@pytest.mark.slow
def test_two_processes_equal_one_process_and_only_process_0_writes(runs):
    dirs, results = runs
    lead, other = results["host0"], results["host1"]
    assert "layout: data-parallel, 2 shards per seed over 2 cpu device(s) in 2 processes" in lead.stdout
    assert "[2/2] env steps 640/640" in lead.stdout and "summary:" in lead.stdout
    assert "env steps" not in other.stdout and "summary" not in other.stdout
    # every period, each process hashed its device's copy of the agent and the digests were compared
    assert "data-parallel replicas: bit-identical on all 2 device(s) in 2 process(es)" in lead.stdout
    _assert_close(dirs["hosts"], dirs["data"], rtol=1e-4)
    _assert_rows_close(_rows(dirs["hosts"]), _rows(dirs["data"]))
    assert sorted(os.listdir(os.path.join(dirs["hosts"], "metrics"))) == ["seed_0.csv", "seed_0.jsonl"]
    assert checkpoint.all_periods(dirs["hosts"]) == [1, 2]


# ---------------------------------------------------------------------------- bad input (no compile)
def _main(argv, capsys):
    from experiments import train

    status = train.main(["train", *argv])
    return status, capsys.readouterr().err.strip()


@pytest.mark.parametrize("extra,message", [
    (["--data_shards=3"], "invalid --config.env.num_envs=4: must be a multiple of --data_shards=3"),
    (["--data_shards=-1"], "invalid --data_shards=-1: must be an integer >= 0"),
    (["--num_processes=2"], "invalid --num_processes=2: needs --coordinator_address"),
    (["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=2"],
     "invalid --process_id=2: must be in [0, 2)"),
    (["--coordinator_address=127.0.0.1:1"], "--coordinator_address needs --num_processes and --process_id"),
    (["--workdir=gs://bucket/run"], "invalid --workdir='gs://bucket/run': must be a file-system path"),
])
def test_bad_scale_flags_exit_2_with_one_line(extra, message, tmp_path, capsys):
    workdir = tmp_path / "w"
    status, err = _main([*ARGS, f"--workdir={workdir}", *extra], capsys)
    assert status == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not workdir.exists()


@pytest.mark.slow
def test_resume_with_other_data_shards_is_rejected(runs, capsys):
    dirs, _ = runs
    status, err = _main([f"--workdir={dirs['data']}", "--resume", "--data_shards=4"], capsys)
    assert status == 2 and len(err.splitlines()) == 1
    assert "--data_shards=4" in err and "data_shards=2" in err, err


@pytest.mark.parametrize("extra,expected", [
    ([], ("invalid --seeds=3:", "multiple of 2", "--seeds 4", "--data_shards 2")),
    # a levels run shards seeds x levels entries: 3 x 3 = 9 over 2 devices needs 2 x 3
    (["--sparsity_levels=0.8,0.9,0.95"], ("invalid --seeds=3: with 3 --sparsity_levels the program's 9 entries",
                                          "multiple of 2", "(use --seeds 4)")),
])
def test_entries_not_a_multiple_of_the_devices_exit_2(extra, expected, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.train", *ARGS, "--seeds=3", *extra,
                           f"--workdir={tmp_path / 'w'}"], env=_env(2), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train: error: ") and all(part in last for part in expected), last
    assert "run:" not in proc.stdout and not (tmp_path / "w").exists()


def test_a_levels_run_is_laid_out_by_its_entries(tmp_path):
    """1 seed x 2 levels is 2 entries: it divides over 2 devices though 1 seed does not."""
    code = ("from sparse_rl_jax import launch, presets; config = presets.make_config('rlx2', 'td3'); "
            f"plan = launch.plan_run(launch.Request(workdir={str(tmp_path / 'w')!r}, config=config, seeds=1, "
            "sparsity_levels=(0.8, 0.9))); plan.lock.release(); print(plan.num_seeds, plan.sharded)")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(2), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["2", "True"]


@pytest.mark.slow
def test_a_killed_process_stops_the_others_at_once_with_one_line(runs, tmp_path):
    """Process 1 of a two-process run is killed after the second period: process 0 stops within seconds
    (not after the heartbeat timeout), exit 75, one line naming the failure and the last good checkpoint,
    which restores; a half-written checkpoint is never listed."""
    dirs, _ = runs
    workdir = str(tmp_path / "killed")
    address = f"127.0.0.1:{_free_port()}"
    # ten times longer, its schedules laid out as before: the same programs, from the cache
    args = [*ARGS, "--config.total_env_steps=6400", "--config.topology.schedule_env_steps=640", "--data_shards=2",
            f"--workdir={workdir}",
            f"--coordinator_address={address}", "--num_processes=2", "--noplots"]
    lead = _start(1, *args, "--process_id=0", cache=dirs["hosts_cache"])
    other = _start(1, *args, "--process_id=1", cache=dirs["hosts_cache"])
    try:
        for line in lead.stdout:
            if line.startswith("[2/"):
                break
        other.kill()
        killed = time.time()
        _, stderr = lead.communicate(timeout=120)
        took = time.time() - killed
    finally:
        for proc in (lead, other):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    lines = [x for x in stderr.strip().splitlines() if not x[:1] in ("W", "I") or not x[1:5].isdigit()]
    assert lead.returncode == 75, stderr[-3000:]
    assert took < 20, f"process 0 took {took:.0f} s to stop"
    assert len(lines) == 1 and lines[0].startswith("train: stopped: another process of the distributed run")
    good = checkpoint.checkpoint_dir(workdir)
    assert f"the last good checkpoint is {good}/" in lines[0] and "--resume" in lines[0]
    step = int(lines[0].split(f"{good}/")[1].split(";")[0])
    assert step >= 1 and saved_runs.restore(workdir, period=step).period == step
