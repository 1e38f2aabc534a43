"""Observation normalisation: running stats (Chan et al.), the shard combine, the trainer wiring, checkpoints."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_rl_jax import checkpoint, normalization, runs, trainer
from sparse_rl_jax import distributed as dist
from tests.conftest import filled, leaves_equal, run_chunks, tiny_config

NORM = {"env.normalize_observations": True}


def _batches(sizes, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    scale, offset = rng.uniform(0.1, 20.0, dim), rng.uniform(-50.0, 50.0, dim)
    return [(offset + scale * rng.standard_normal((n, dim))).astype(np.float32) for n in sizes]


def _assert_stats(stats, data, rtol=1e-4):
    data = np.asarray(data, np.float64).reshape(-1, data.shape[-1])
    assert float(stats.count) == data.shape[0]
    np.testing.assert_allclose(np.asarray(stats.mean), data.mean(0), rtol=rtol, atol=1e-4)
    np.testing.assert_allclose(np.asarray(normalization.variance(stats)), data.var(0), rtol=rtol)


# ---------------------------------------------------------------------------------------- the module
def test_running_stats_equal_numpy_over_batches():
    batches = _batches([7, 1, 64, 3, 200])
    stats = normalization.init(5)
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(normalization.normalize(stats, x)), x)  # no data: identity
    update = jax.jit(normalization.update)
    for b in batches:
        stats = update(stats, b)
    data = np.concatenate(batches)
    _assert_stats(stats, data)
    # multi-dim batch axes ([time, envs, obs]) count every leading position
    two_d = update(normalization.init(5), data[:270].reshape(27, 10, 5))
    _assert_stats(two_d, data[:270])
    # normalize = (obs - mean) / std, Brax's std floor (1e-6) and no clipping of the result
    out = np.asarray(normalization.normalize(stats, data))
    np.testing.assert_allclose(out, (data - data.mean(0)) / data.std(0), rtol=1e-3, atol=1e-3)
    const = update(normalization.init(2), np.tile(np.float32([[3.0, -1.0]]), (4, 1)))
    np.testing.assert_array_equal(np.asarray(normalization.std(const)), np.float32([1e-6, 1e-6]))
    far = np.asarray(normalization.normalize(stats, data.mean(0) + 100 * data.std(0)))
    assert np.all(far > 99.0)  # not clipped to [-5, 5]
    mean, std = normalization.mean_std(stats)
    assert mean.dtype == std.dtype == np.float32
    np.testing.assert_allclose((data - mean) / std, out, rtol=1e-6, atol=1e-6)  # the exported transform


def test_shard_combine_over_named_axes_equals_concatenated_batches():
    shards = np.stack(_batches([30] * 4, seed=2))  # [4 shards, 30, 5]
    prior = normalization.update(normalization.init(5), _batches([11], seed=3)[0])
    whole = normalization.update(prior, shards.reshape(-1, 5))
    # one named vmap axis; out_axes=None: JAX rejects a result that still differs between shards
    one = jax.vmap(lambda b: normalization.update(prior, b, "shard"), axis_name="shard", out_axes=None)(shards)
    _assert_stats(one, np.concatenate([_batches([11], seed=3)[0], shards.reshape(-1, 5)]))
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(whole)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    # a tuple of axes, as the data-parallel trainer's ('data', 'shard')
    nested = jax.vmap(jax.vmap(lambda b: normalization.update(prior, b, ("data", "shard")),
                               axis_name="shard", out_axes=None), axis_name="data", out_axes=None)(
        shards.reshape(2, 2, 30, 5))
    for a, b in zip(jax.tree.leaves(nested), jax.tree.leaves(whole)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------- the trainer
@pytest.fixture(scope="module")
def run():
    """A short normalised TD3 run (2 chunks: warm-up and updates); all its observations fit the buffer."""
    config = tiny_config("dense", "td3", **NORM)
    tr, states, _, _ = run_chunks(config)
    return tr, states


def _buffer_obs(ts):
    """One seed's raw observations stored in the replay ring (no wrap-around in these short runs)."""
    rep = ts.replay
    assert int(rep.start) == 0
    return np.asarray(rep.data.obs)[:int(rep.size)]


def test_trainer_stats_count_every_collected_observation(run):
    tr, states = run
    ts = jax.tree.map(lambda x: x[0], states)
    assert float(ts.obs_stats.count) == int(ts.env_steps) == tr.config.total_env_steps
    obs = _buffer_obs(ts)
    assert obs.shape[0] * obs.shape[1] == int(ts.env_steps)
    _assert_stats(ts.obs_stats, obs)


def test_option_off_keeps_no_stats():
    tr = trainer.Trainer(tiny_config("dense", "td3"))
    ts = jax.eval_shape(lambda: tr.init(jax.random.PRNGKey(0), 0.0, 0.0))
    assert ts.obs_stats is None
    assert not tr.config.env.normalize_observations


def _affine(ts, a, b):
    """The same state in other observation units (raw obs -> a * obs + b) with stats to match."""
    data = ts.replay.data
    data = data._replace(obs=a * data.obs + b, next_obs=a * data.next_obs + b)
    s = ts.obs_stats
    stats = s.replace(mean=a * s.mean + b, m2=a * a * s.m2)
    env_state = ts.env_state.replace(obs=a * ts.env_state.obs + b)
    return ts.replace(replay=ts.replay.replace(data=data), obs_stats=stats, env_state=env_state)


def test_agent_sees_only_normalised_observations(run):
    """Normalisation is affine-invariant: in other observation units, with stats in those units, the agent
    (exploration, updates on replayed windows including next_obs, RLx2's buffer check, the evaluated
    policy) must act and learn the same. Any path that feeds raw observations breaks it."""
    tr, states = run
    a = jnp.asarray(np.linspace(3.0, 40.0, tr.obs_dim), jnp.float32)
    b = jnp.asarray(np.linspace(-20.0, 25.0, tr.obs_dim), jnp.float32)
    key = jax.random.PRNGKey(7)
    it = tr.warmup_iterations + 1

    def pieces(ts):
        action, clean = tr._act(ts, False, key)
        learned, _ = tr._learn(ts, it, key)
        _, distance = tr._check_buffer(ts)
        evaluated = trainer.make_policy_fn(tr)(trainer.policy_params(ts), ts.env_state.obs)
        return action, clean, jax.tree.leaves(learned.agent), distance, evaluated

    run_all = jax.jit(jax.vmap(pieces, axis_name=trainer.SEED_BATCH))
    ref = run_all(states)
    moved = run_all(jax.vmap(lambda t: _affine(t, a, b))(states))
    for x, y in zip(jax.tree.leaves(ref), jax.tree.leaves(moved)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-3, atol=2e-4)
    # ...and the check can tell: without matching stats the agent does see a difference
    raw = states.replace(replay=jax.vmap(lambda t: _affine(t, a, b).replay)(states))
    changed = run_all(raw)
    assert any(not np.allclose(np.asarray(x), np.asarray(y), rtol=2e-3, atol=2e-4)
               for x, y in zip(ref[2], changed[2]))


class _CollectOnly(dist.DataParallelTrainer):
    """The data-parallel trainer without gradient updates (the stats do not depend on them; compiling
    the updates would triple this test's time). Layout, init, chunk and collection are the real ones."""

    def _learn(self, ts, iteration, key):
        return ts, {}


@pytest.mark.slow  # ~35 s: compiles the data-parallel chunk (its env step) once more
def test_data_parallel_stats_identical_over_shards_and_pooled():
    """Two shards on one device: stats held once per seed (out_axes=None over the shard vmap: JAX would
    reject stats that differ between shards) and equal to those of both shards' observations."""
    config = tiny_config("dense", "td3", **{**NORM, "total_env_steps": 320, "eval_every": 160})
    mesh = dist.make_mesh(1)
    tr = _CollectOnly(config, 2)
    states = dist.init_states(tr, mesh, trainer.seed_keys(0, 1))
    assert states.obs_stats.count.shape == (1,)  # per seed, no shard axis (like the agent)
    chunk = dist.make_chunk_fn(tr, mesh)
    states, _ = chunk(states, np.int32(0))
    host = dist.to_host(states)
    stats = jax.tree.map(lambda x: x[0], host.obs_stats)
    rep = host.replay
    obs = np.concatenate([np.asarray(rep.data.obs)[0, d, :int(rep.size[0, d])] for d in range(2)], axis=1)
    assert float(stats.count) == config.env.num_envs * trainer.chunk_iterations(config)
    _assert_stats(stats, obs)


# ---------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_restores_stats(tmp_path):
    config = tiny_config("dense", "td3", **NORM)
    tmpl = runs.template(config, num_seeds=2)
    assert isinstance(tmpl.obs_stats, normalization.RunningStats)
    states = filled(tmpl)
    checkpoint.save(str(tmp_path), 1, states, [], config)
    restored = runs.restore(str(tmp_path)).states
    assert isinstance(restored.obs_stats, normalization.RunningStats)
    leaves_equal(states.obs_stats, restored.obs_stats)
    leaves_equal(states, restored)
    policy = runs.load_policy(str(tmp_path), seed=1)
    leaves_equal(jax.tree.map(lambda x: x[1], states.obs_stats), policy.obs_stats)


def test_checkpoint_without_stats_entry_restores_when_off(tmp_path):
    """Checkpoints written before ``obs_stats`` existed (no such entry on disk) still restore."""
    config = tiny_config("dense", "td3")
    states = filled(runs.template(config, num_seeds=1))
    old = {f.name: getattr(states, f.name) for f in dataclasses.fields(states) if f.name != "obs_stats"}
    checkpoint.save(str(tmp_path), 1, old, [], config)
    restored = runs.restore(str(tmp_path)).states
    assert restored.obs_stats is None
    leaves_equal(states, restored)
