"""Topology schedules (grid, stop, final prune, cosine decay) and the GMP cubic ramp."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_rl_jax.sparsity.schedules import (DROP_GROW, NO_EVENT, PRUNE, TopologySchedule, gmp_sparsity,
                                              gmp_window)


def _events(s, updates):
    return np.asarray(jax.jit(jax.vmap(s.event))(jnp.asarray(updates)))


def test_events_grid_start_stop_and_final_prune():
    """DS's code: events at 2, 12, ... while <= stop, then one prune-only event (the first after stop)."""
    s = TopologySchedule(period=10, start=2, stop=45, drop_fraction=0.05, final_prune_only=True)
    updates = np.arange(1, 80)
    ev = _events(s, updates)
    assert list(updates[ev == DROP_GROW]) == [2, 12, 22, 32, 42]
    assert list(updates[ev == PRUNE]) == [52]
    assert s.num_events == 6 and int(s.events_upto(79)) == 6
    plain = TopologySchedule(period=10, start=2, stop=45)
    assert list(updates[_events(plain, updates) != NO_EVENT]) == [2, 12, 22, 32, 42]
    forever = TopologySchedule(period=5)
    assert int(forever.event(10**6 + 1)) == DROP_GROW and int(forever.event(3)) == NO_EVENT


@pytest.mark.parametrize("scale", [2, 3, 7])
def test_events_on_a_slower_network_never_skip_a_boundary(scale):
    """A network updating once every `scale` clock ticks (TD3's actor on the critic's clock) fires once
    per grid point, on its first update at or after it, whatever the phase of the grid."""
    s = TopologySchedule(period=10, start=2, stop=95, scale=scale)
    updates = np.arange(1, 200 // scale)
    fired = updates[_events(s, updates) == DROP_GROW]
    grid = np.arange(2, 96, 10)
    assert len(fired) == len(grid)
    np.testing.assert_array_equal(fired, -(-grid // scale))  # first update u with u * scale >= point


def test_prune_only_schedule():
    s = TopologySchedule(period=10, start=20, stop=80, prune_only=True)
    updates = np.arange(1, 120)
    ev = _events(s, updates)
    assert list(updates[ev == PRUNE]) == list(range(20, 81, 10)) and not np.any(ev == DROP_GROW)


def test_fraction_constant_and_cosine():
    const = TopologySchedule(period=10, drop_fraction=0.3)
    assert float(const.fraction(123)) == pytest.approx(0.3)
    cos = TopologySchedule(period=10, start=10, drop_fraction=0.5, decay="cosine", end=1000)
    for t in (0, 250, 500, 1000, 5000):
        expected = 0.25 * (1 + math.cos(math.pi * min(t, 1000) / 1000))
        assert float(cos.fraction(t)) == pytest.approx(expected, abs=1e-6)
    # traced step inside jit: one compilation serves all steps
    traced = jax.jit(lambda t: (cos.fraction(t), cos.event(t)))
    f, u = traced(jnp.int32(500))
    assert float(f) == pytest.approx(0.25, abs=1e-6) and int(u) == DROP_GROW  # grid: 10, 20, ...


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
