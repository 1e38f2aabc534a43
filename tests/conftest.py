"""Shared fixtures: tiny configs that compile fast on a 2-core CPU."""
import os
import subprocess

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _one_core_per_worker() -> None:
    """Under pytest-xdist with exactly one core per worker, pin each worker to its own core, before JAX
    starts. Why: XLA:CPU splits long loops over a thread pool sized by the cores it may run on; with two
    workers on two cores every such split waits on a core the other worker holds.

    The processes a test starts (launcher runs, localhost clusters: tiny programs without such loops) get
    every core back: pinned too, five of them would share one core while the other may idle.
    """
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not (worker and count and hasattr(os, "sched_setaffinity")) or os.environ.get("SRJ_TEST_PIN") == "0":
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) != int(count):
        return
    own = {cpus[int(worker.lstrip("gw")) % len(cpus)]}
    os.sched_setaffinity(0, own)

    class Unpinned(subprocess.Popen):
        """A child inherits the affinity of the thread that starts it: widen this thread's for the start
        only (threads started before, XLA's pool among them, keep theirs)."""

        def __init__(self, *args, **kwargs):
            os.sched_setaffinity(0, cpus)
            try:
                super().__init__(*args, **kwargs)
            finally:
                os.sched_setaffinity(0, own)

    subprocess.Popen = Unpinned  # subprocess.run and check_output start through it too


_one_core_per_worker()

import pytest  # noqa: E402

import sparse_rl_jax as srj  # noqa: E402

TINY = {
    "total_env_steps": 640, "warmup_env_steps": 128, "eval_every": 320,
    "env.name": "inverted_pendulum", "env.backend": "positional", "env.num_envs": 4,
    "env.episode_length": 50, "env.eval_episodes": 2,
    "agent.hidden": (16, 16), "agent.batch_size": 32,
    "replay.capacity": 2000, "replay.min_size": 400, "replay.check_every": 80, "replay.oldest": 64,
    "topology.period": 10, "replay.nstep_delay": 20,
}


def tiny_config(method="rlx2", algo="td3", **overrides):
    return srj.make_config(method, algo, **{**TINY, **overrides})


@pytest.fixture
def tiny():
    return tiny_config
