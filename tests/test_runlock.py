"""One writer per run directory: a second launch on a live run stops with exit 2 naming the holder, and a
holder that died leaves nothing that blocks the next launch."""
import os
import signal
import subprocess
import sys

import pytest

from sparse_rl_jax import launch, runlock
from sparse_rl_jax.cli import UsageError
from tests.conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD = ("import sys, time; from sparse_rl_jax import runlock; lock = runlock.RunLock(sys.argv[1]).acquire(); "
        "lock.announce(); print('held', flush=True); time.sleep(600)")


@pytest.fixture
def holder(tmp_path):
    """A live process holding ``tmp_path/run``'s lock (as a training run in another shell would)."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield workdir, proc
    proc.kill()
    proc.wait()


def _snapshot(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_second_writer_is_refused_naming_the_holder(holder):
    workdir, proc = holder
    before = _snapshot(workdir)
    with pytest.raises(UsageError, match=rf"being written by another process \(host .*, pid {proc.pid}, since "):
        launch.plan_run(launch.Request(str(workdir), tiny_config()))
    with pytest.raises(UsageError, match=f"pid {proc.pid}"):  # --resume too, before any checkpoint is read
        launch.plan_run(launch.Request(str(workdir), None, resume=True))
    assert _snapshot(workdir) == before == {runlock.WRITER: before[runlock.WRITER]}  # nothing was written


def test_the_launcher_exits_2_with_one_line(holder):
    workdir, proc = holder
    out = subprocess.run([sys.executable, "-m", "experiments.train", "--workdir", str(workdir),
                          "--config=experiments/configs/preset.py:rlx2,td3"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"pid {proc.pid}" in lines[0], out.stderr


def test_a_second_sweep_on_one_root_is_refused(holder):
    """A sweep takes its root's lock like a run: a second sweep (or a run) there exits 2, before any cell."""
    from experiments import sweep

    workdir, proc = holder
    before = _snapshot(workdir)
    with pytest.raises(UsageError, match=f"pid {proc.pid}"):
        sweep.plan(["sweep", f"--workdir={workdir}", "--algo=td3", "--methods=static", "--envs=inverted_pendulum",
                    "--sparsities=0.5"])
    assert _snapshot(workdir) == before


def test_a_dead_holder_leaves_no_stale_lock(holder):
    workdir, proc = holder
    proc.send_signal(signal.SIGKILL)  # a crash: nothing releases the lock but the OS
    proc.wait()
    plan = launch.plan_run(launch.Request(str(workdir), tiny_config()))
    try:
        assert plan.lock.held
        with pytest.raises(runlock.RunLocked):  # while this plan holds it, nobody else gets it
            runlock.RunLock(str(workdir)).acquire()
    finally:
        plan.lock.release()
    runlock.RunLock(str(workdir)).acquire().release()  # released: free again


def test_a_failed_plan_releases_the_lock(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with pytest.raises(UsageError) as info:  # nothing to resume
        launch.plan_run(launch.Request(str(workdir), None, resume=True))
    assert os.listdir(workdir) == []  # taking the lock creates nothing
    assert info.traceback  # the traceback (and plan_run's frame in it) is still alive here
    runlock.RunLock(str(workdir)).acquire().release()
