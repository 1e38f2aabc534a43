"""Engine invariants: one compile, vmapped seeds, buffer-check and n-step cadence, auto-reset branch
(exact sparsity after topology events: tests/test_methods_evolve.py)."""
import jax
import jax.numpy as jnp
import numpy as np

from sparse_rl_jax import runner, trainer
from tests.conftest import run_chunks, tiny_config


def test_one_compile_and_vmapped_seeds_match_single_runs():
    config = tiny_config("rlx2", "td3")
    tr, batched, infos, chunk = run_chunks(config, num_seeds=3, chunks=3, max_traces=1)
    assert chunk._cache_size() == 1, "chunks must reuse one compiled program"
    # RLx2's buffer check every check_every env steps (80 = 20 iterations of 4 envs) after warm-up
    # (32 iterations), and the n-step switch after nstep_delay (20) critic updates
    per, warm, upi = trainer.chunk_iterations(config), config.warmup_iterations, config.updates_per_iteration
    every = config.replay.check_every // config.env_steps_per_iteration
    for c, info in enumerate(infos):
        its = range(c * per, (c + 1) * per)
        assert list(np.asarray(info["buffer_checks"])) == [sum(i >= warm and (i + 1) % every == 0 for i in its)] * 3
        steps = [(i - warm) * upi + j for i in its if i >= warm for j in range(upi)]
        assert list(np.asarray(info["nstep_updates"])) == [sum(s >= config.replay.nstep_delay for s in steps)] * 3
    assert [int(np.asarray(i["buffer_checks"])[0]) for i in infos] == [3, 4, 4]
    assert int(np.asarray(infos[0]["nstep_updates"])[0]) == 48 * 4 - 20
    finals = [np.asarray(jax.tree.leaves(batched.agent.actor.params)[1][i]) for i in range(3)]
    assert not np.allclose(finals[0], finals[1]) and not np.allclose(finals[1], finals[2])
    _, single, _, _ = run_chunks(config, num_seeds=1, chunks=3, seed_offset=2)
    np.testing.assert_allclose(
        np.asarray(jax.tree.leaves(single.agent.actor.params)[1][0]), finals[2], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(
        np.asarray(jax.tree.leaves(single.agent.critic.masks)[0][0]),
        np.asarray(jax.tree.leaves(batched.agent.critic.masks)[0][2]))


def test_dense_method_has_no_masks():
    config = tiny_config("dense", "sac")
    states = runner.Runner(config, num_seeds=1).init(trainer.seed_keys(0, 1))
    assert all(m is None for m in jax.tree.leaves(states.agent.actor.masks, is_leaf=lambda x: x is None))


def test_auto_reset_branch_under_the_seed_vmap_equals_resetting_every_step():
    """The env resets under one `lax.cond` for all vmapped seeds (a psum over the seed axis keeps it a
    branch); seeds without a finished env must come out exactly as if the reset ran every step and
    selected per env (what a reset under vmap without the agreed predicate computes)."""
    config = tiny_config("static", "td3", total_env_steps=320, eval_every=320)
    keys = trainer.seed_keys(0, 3)
    finals = []
    for conditional in (True, False):
        run = runner.Runner(config, num_seeds=3)
        run.trainer.env.conditional_reset = conditional
        states, _ = run.chunk_fn(run.init(keys), np.int32(0))
        finals.append(states)
    assert int(np.asarray(finals[0].finished_count).sum()) > 0  # episodes did end (50-step limit)
    for a, b in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # without the agreed predicate, vmap turns the reset's cond into a select (one cond fewer)
    conds = {}
    for axes in ((trainer.SEED_BATCH,), ()):
        tr = trainer.Trainer(config, batch_axes=axes)
        conds[axes] = str(jax.make_jaxpr(lambda s: tr.chunk(s, jnp.int32(0), 2))(finals[0])).count(" cond[")
    assert conds[(trainer.SEED_BATCH,)] == conds[()] + 1, conds
