"""Topology schedules (grid, stop, final prune, cosine decay) and the GMP cubic ramp."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_rl_jax.sparsity.schedules import TopologySchedule, gmp_sparsity, gmp_window


def test_update_grid_start_stop_and_final_prune():
    s = TopologySchedule(period=10, start=2, stop=45, drop_fraction=0.05, final_prune_only=True)
    steps = np.arange(0, 60)
    upd = np.asarray(jax.jit(jax.vmap(s.is_update))(steps))
    assert list(steps[upd]) == [2, 12, 22, 32, 42]
    final = np.asarray(jax.jit(jax.vmap(s.is_final_prune))(steps))
    assert list(steps[final]) == [42]  # the last update before stop only drops
    assert not bool(TopologySchedule(period=10, stop=45).is_final_prune(40))
    forever = TopologySchedule(period=5)
    assert bool(forever.is_update(10**6)) and not bool(forever.is_update(3))


def test_fraction_constant_and_cosine():
    const = TopologySchedule(period=10, drop_fraction=0.3)
    assert float(const.fraction(123)) == pytest.approx(0.3)
    cos = TopologySchedule(period=10, drop_fraction=0.5, decay="cosine", end=1000)
    for t in (0, 250, 500, 1000, 5000):
        expected = 0.25 * (1 + math.cos(math.pi * min(t, 1000) / 1000))
        assert float(cos.fraction(t)) == pytest.approx(expected, abs=1e-6)
    # traced step inside jit: one compilation serves all steps
    traced = jax.jit(lambda t: (cos.fraction(t), cos.is_update(t)))
    f, u = traced(jnp.int32(500))
    assert float(f) == pytest.approx(0.25) and bool(u)


def test_schedule_is_hashable_and_validated():
    a = TopologySchedule(period=10, decay="cosine", end=100)
    assert hash(a) == hash(TopologySchedule(period=10, decay="cosine", end=100))
    with pytest.raises(ValueError):
        TopologySchedule(period=10, decay="cosine")
    with pytest.raises(ValueError):
        TopologySchedule(period=0)
    with pytest.raises(ValueError):
        TopologySchedule(period=10, final_prune_only=True)


def test_gmp_cubic_ramp():
    assert gmp_window(1000) == (200, 800)
    vals = jax.vmap(lambda t: gmp_sparsity(t, 0.9, 200, 800))(jnp.array([0, 200, 500, 800, 900]))
    np.testing.assert_allclose(vals, [0.0, 0.0, 0.9 * (1 - 0.5**3), 0.9, 0.9], rtol=1e-6)
    assert float(gmp_sparsity(500, 0.9, total_steps=1000)) == pytest.approx(0.9 * 0.875)
    assert float(gmp_sparsity(200, 0.9, 200, 800, initial_sparsity=0.5)) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        gmp_sparsity(0, 0.9)
