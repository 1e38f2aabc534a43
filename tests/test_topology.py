"""Exact-count drop/grow, magnitude pruning and the top-k selection under them."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

from sparse_rl_jax.sparsity import masks as mask_lib
from sparse_rl_jax.sparsity import topology

SHAPES = [(7,), (2, 3, 4)]
FAST = settings(max_examples=25, deadline=None)


def _case(seed, shape, density, levels):
    """Random mask of the given density and scores quantised to ``levels`` values (many ties)."""
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < density
    drop = np.round(rng.normal(size=shape) * levels) / max(levels, 1)
    grow = np.round(rng.normal(size=shape) * levels) / max(levels, 1)
    return jnp.asarray(mask), jnp.asarray(drop, jnp.float32), jnp.asarray(grow, jnp.float32)


@functools.partial(jax.jit, static_argnames="regrow_dropped")
def _update(mask, drop, grow, fraction, regrow_dropped):
    return topology.update_mask(mask, drop, grow, fraction, regrow_dropped)


def _reference_update(old, drop, grow, fraction, regrow):
    """Numpy reference: sort-based drop (score asc, index asc) and grow (score desc, index asc)."""
    old, d, g = old.ravel(), drop.ravel(), grow.ravel()
    n = int(old.sum())
    k = min(int(np.round(np.float32(fraction) * np.float32(n))), n)
    if not regrow:
        k = min(k, old.size - n)
    active = np.flatnonzero(old)
    kept = old.copy()
    kept[active[np.lexsort((active, d[active]))][:k]] = False
    cand = np.flatnonzero(~kept if regrow else ~old)
    new = kept.copy()
    new[cand[np.lexsort((cand, -g[cand]))][:k]] = True
    return new


@FAST
@given(seed=st.integers(0, 2**31 - 1), shape=st.sampled_from(SHAPES), density=st.floats(0.0, 1.0),
       fraction=st.floats(0.0, 1.0), levels=st.sampled_from([0, 1, 3, 1000]), regrow=st.booleans())
def test_update_mask_properties(seed, shape, density, fraction, levels, regrow):
    mask, drop, grow = _case(seed, shape, density, levels)
    new = np.asarray(_update(mask, drop, grow, jnp.float32(fraction), regrow))
    old = np.asarray(mask)
    assert new.shape == old.shape and new.dtype == np.bool_
    assert new.sum() == old.sum()  # exact count
    dropped, grown = old & ~new, new & ~old
    assert not (dropped & ~old).any()  # dropped set within old active
    assert not (grown & old).any()  # grown set within old inactive
    expected = _reference_update(old, np.asarray(drop), np.asarray(grow), fraction, regrow)
    np.testing.assert_array_equal(new.ravel(), expected)  # lowest dropped, highest grown, index ties
    if not regrow:  # nothing just dropped came back: all k drops are visible
        k = min(int(np.round(np.float32(fraction) * np.float32(old.sum()))), old.size - old.sum())
        assert dropped.sum() == k


def test_update_mask_golden_with_ties():
    mask = jnp.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    drop = jnp.array([0.5, 0.1, 0.1, 0.9, 0, 0, 0, 0], jnp.float32)
    grow = jnp.array([0, 0, 0, 0, 0.3, 0.7, 0.7, 0.1], jnp.float32)
    # k = round(0.5 * 4) = 2: drop the two 0.1s (indices 1, 2); grow the two 0.7s (indices 5, 6).
    new = topology.update_mask(mask, drop, grow, 0.5)
    np.testing.assert_array_equal(new, [1, 0, 0, 1, 0, 1, 1, 0])
    # Ties across the boundary: drop one of three equal scores -> the lowest flat index goes.
    mask = jnp.array([1, 1, 1, 0, 0, 0], bool)
    drop = jnp.array([0.2, 0.2, 0.2, 0, 0, 0], jnp.float32)
    grow = jnp.array([0, 0, 0, 1.0, 1.0, 1.0], jnp.float32)
    np.testing.assert_array_equal(topology.update_mask(mask, drop, grow, 1 / 3), [0, 1, 1, 1, 0, 0])
    # regrow_dropped: a dropped entry with the best grow score comes straight back.
    grow = jnp.array([5.0, 0, 0, 1.0, 1.0, 1.0], jnp.float32)
    np.testing.assert_array_equal(topology.update_mask(mask, drop, grow, 1 / 3, True), [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(topology.update_mask(mask, drop, grow, 1 / 3, False), [0, 1, 1, 1, 0, 0])


def test_infinite_scores_do_not_collide_with_invalid_entries():
    mask = jnp.array([1, 1, 0, 0, 0], bool)
    drop = jnp.array([-jnp.inf, jnp.inf, -jnp.inf, -jnp.inf, -jnp.inf])
    grow = jnp.array([jnp.inf, jnp.inf, -jnp.inf, -jnp.inf, jnp.nan])
    new = topology.update_mask(mask, drop, grow, 0.5, regrow_dropped=False)
    np.testing.assert_array_equal(new, [0, 1, 1, 0, 0])  # -inf grow score still beats "invalid"


def test_regrow_false_caps_k_to_inactive_count():
    mask = jnp.array([1, 1, 1, 1, 1, 0], bool)
    new = topology.update_mask(mask, jnp.arange(6.0), jnp.ones(6), 1.0, regrow_dropped=False)
    np.testing.assert_array_equal(new, [0, 1, 1, 1, 1, 1])


def test_prune_only_update_drops_without_growth():
    mask = jnp.array([1, 1, 1, 1, 0, 0], bool)
    new = topology.update_mask(mask, jnp.array([4.0, 3, 2, 1, 0, 0]), jnp.ones(6), 0.5, grow=False)
    np.testing.assert_array_equal(new, [1, 1, 0, 0, 0, 0])


def test_traced_fraction_compiles_once_and_vmaps():
    traces = []

    @jax.jit
    def step(mask, drop, grow, fraction):
        traces.append(1)
        return topology.update_mask(mask, drop, grow, fraction)

    mask, drop, grow = _case(0, (16, 8), 0.3, 1000)
    for f in [0.0, 0.1, 0.25, 0.5, 1.0]:
        assert int(step(mask, drop, grow, jnp.float32(f)).sum()) == int(mask.sum())
    assert len(traces) == 1
    # vmap over 4 seeds' random grow scores and over traced drop fractions at once
    keys = jax.random.split(jax.random.key(0), 4)
    grows = jax.vmap(lambda k: jax.random.uniform(k, mask.shape))(keys)
    fractions = jnp.array([0.3, 0.3, 0.5, 0.5], jnp.float32)
    batched = np.asarray(jax.jit(jax.vmap(topology.update_mask, in_axes=(None, None, 0, 0)))(
        mask, drop, grows, fractions))
    np.testing.assert_array_equal(batched.sum(axis=(1, 2)), np.full(4, int(mask.sum())))
    for i in range(4):
        np.testing.assert_array_equal(batched[i], step(mask, drop, grows[i], fractions[i]))
    grown = [(b & ~np.asarray(mask)).tobytes() for b in batched]
    assert len(set(grown)) == 4  # different keys grow different sets
    assert len(traces) == 1


@FAST
@given(seed=st.integers(0, 2**31 - 1), shape=st.sampled_from(SHAPES), density=st.floats(0.0, 1.0),
       frac=st.floats(0.0, 1.2), levels=st.sampled_from([0, 2, 1000]))
def test_prune_to_count_exact_and_matches_sort(seed, shape, density, frac, levels):
    mask, w, _ = _case(seed, shape, density, levels)
    count = int(frac * int(np.prod(shape)))
    keep = np.asarray(topology.prune_to_count(w, mask, count))
    assert keep.sum() == min(count, int(mask.sum()))
    assert not (keep & ~np.asarray(mask)).any()
    ref = mask_lib.top_k_mask(jnp.abs(w), count, mask, method="sort")
    np.testing.assert_array_equal(keep, ref)


def test_prune_to_count_ties_go_to_lower_index():
    w = jnp.array([[0.5, -1.0, 1.0], [1.0, 0.2, -0.5]])
    np.testing.assert_array_equal(topology.prune_to_count(w, None, 2), [[0, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(topology.prune_to_count(w, None, 3), [[0, 1, 1], [1, 0, 0]])
    active = jnp.array([[1, 1, 0], [1, 1, 1]], bool)  # among the active entries only
    np.testing.assert_array_equal(topology.prune_to_count(w, active, 2), [[0, 1, 0], [1, 0, 0]])


def test_tree_update_drops_and_grows_by_score():
    old = jnp.array([1, 1, 0, 0], bool)
    new = jnp.array([1, 0, 1, 0], bool)
    masks = {"a": {"kernel": old, "bias": None}}
    scores = {"a": {"kernel": jnp.array([2.0, 1.0, 3.0, 0.0]), "bias": None}}
    out = topology.update_masks(masks, scores, scores, 0.5)
    assert out["a"]["bias"] is None
    np.testing.assert_array_equal(out["a"]["kernel"], new)
