"""Shared fixtures: tiny configs that compile fast on a 2-core CPU."""
import os
import subprocess

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite compiles with LLVM's optimisation off (XLA's backend codegen level; the HLO and its
# optimisations are the same): about a third less compile time on the many small programs, with the same
# checks. It rounds some floats differently, so the learning tests (tests/test_learning.py), which check
# what a user's run learns from one seed, train in a subprocess at the user's level (SRJ_USER_XLA_FLAGS:
# the XLA_FLAGS the suite started with).
os.environ.setdefault("SRJ_USER_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()


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


# ---------------------------------------------------------------------------- shared by several test files
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "experiments", "configs")
TIMING = ("training/sps", "training/walltime")  # the only metrics that are not a function of the run


def tiny_args(**overrides):
    """`TINY` as launcher flags (``--config.<field>=<value>``), with ``overrides`` (dotted keys)."""
    def text(value):
        return f"({','.join(map(str, value))})" if isinstance(value, tuple) else str(value)

    return [f"--config.{k}={text(v)}" for k, v in {**TINY, **overrides}.items()]


def filled(template, seed=0):
    """Concrete states with random contents in the exact structure of `template` (no compilation)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)

    def leaf(s):
        if s.dtype == jnp.bool_:
            return jnp.asarray(rng.random(s.shape) < 0.5)
        if jnp.issubdtype(s.dtype, jnp.integer):
            return jnp.asarray(rng.integers(0, 2**31 - 1, s.shape).astype(s.dtype))
        return jnp.asarray(rng.standard_normal(s.shape).astype(s.dtype))

    return jax.tree.map(leaf, template)


def leaves_equal(a, b):
    """Every leaf of ``a`` and ``b``: same dtype, shape and values, bit for bit."""
    import jax
    import numpy as np

    la, lb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)
    assert len(la) == len(lb)
    for (path, x), y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
        assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)


def run_chunks(config, num_seeds=1, chunks=2, seed_offset=0, max_traces=None):
    """``chunks`` training periods of ``config`` through the runner's chunk program: ``(trainer, states,
    last info, chunk)``, or with ``max_traces`` (chex fails if the chunk is traced more often) every
    period's info."""
    import chex
    import jax.numpy as jnp

    from sparse_rl_jax import runner, trainer

    run = runner.Runner(config, num_seeds=num_seeds)  # the one path: a one-device mesh here
    tr = run.trainer
    if max_traces is not None:  # the chunk program traces the trainer's chunk when it compiles
        tr.chunk = chex.assert_max_traces(tr.chunk, n=max_traces)
    states = run.init(trainer.seed_keys(config.seed + seed_offset, num_seeds))
    chunk = run.chunk_fn
    per = trainer.chunk_iterations(config)
    infos = []
    for c in range(chunks):
        states, info = chunk(states, jnp.int32(c * per))
        infos.append(info)
    return (tr, states, infos, chunk) if max_traces else (tr, states, info, chunk)


@pytest.fixture
def tiny():
    return tiny_config
