"""Scorers, the signed-magnitude (SET/DS) drop rule, importance moving averages and score trees."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sparse_rl_jax.sparsity import scores
from sparse_rl_jax.sparsity import topology

FAST = settings(max_examples=25, deadline=None)
_signed = jax.jit(lambda w, m: scores.signed_magnitude(scores.LeafInputs(w, m)))


def test_signed_magnitude_golden():
    w = jnp.array([0.5, -0.1, 0.2, -0.3, 0.0, 0.9, -0.05, 0.7])
    m = jnp.array([1, 1, 1, 1, 1, 1, 1, 0], bool)
    s = _signed(w, m)
    np.testing.assert_allclose(s, [1 / 3, 1 / 3, 0, 2 / 3, -1, 2 / 3, 0, -1], rtol=1e-6)
    # dropping 3: the exact zero first, then the smallest positive and the smallest-|w| negative
    new = topology.update_mask(m, s, jnp.zeros(8), 3 / 7, grow=False)
    np.testing.assert_array_equal(new, [1, 1, 0, 1, 0, 1, 0, 0])


@FAST
@given(seed=st.integers(0, 2**31 - 1), frac=st.floats(0.0, 1.0), pos_share=st.floats(0.05, 0.95))
def test_signed_magnitude_drops_from_both_signs(seed, frac, pos_share):
    rng = np.random.default_rng(seed)
    mag = rng.random(60) + 0.01
    w = np.where(rng.random(60) < pos_share, mag, -mag).astype(np.float32)
    m = rng.random(60) < 0.7
    s = np.asarray(_signed(jnp.asarray(w), jnp.asarray(m)))
    n = int(m.sum())
    k = int(np.round(np.float32(frac) * np.float32(n)))
    active = np.flatnonzero(m)
    dropped = active[np.lexsort((active, s[active]))][:k]
    n_pos = int((m & (w > 0)).sum())
    d_pos = int((w[dropped] > 0).sum())
    assert abs(d_pos - k * n_pos / max(n, 1)) <= 1.0 + 1e-9  # proportional to each sign's count
    for sign in (1, -1):  # within a sign: the entries closest to zero go
        group = active[np.sign(w[active]) == sign]
        gone = np.intersect1d(group, dropped)
        kept = np.setdiff1d(group, dropped)
        if gone.size and kept.size:
            assert np.abs(w[gone]).max() <= np.abs(w[kept]).min()


def test_simple_scorers():
    x = scores.LeafInputs(weight=jnp.array([-2.0, 1.0]), mask=jnp.array([True, False]),
                          grad=jnp.array([0.5, -3.0]), saliency=jnp.array([1.0, 0.0]),
                          grad_ema=jnp.array([0.2, 0.4]), key=jax.random.key(0))
    np.testing.assert_array_equal(scores.magnitude(x), [2.0, 1.0])
    np.testing.assert_array_equal(scores.gradient(x), [0.5, 3.0])
    np.testing.assert_array_equal(scores.importance_drop(x), [1.0, 0.0])
    np.testing.assert_allclose(scores.importance_grow(x), [0.2, 0.4], rtol=1e-6)
    r = np.asarray(scores.random(x))
    assert r.shape == (2,) and ((r >= 0) & (r < 1)).all()


def test_importance_moving_averages():
    params = {"k": jnp.array([2.0, 0.0]), "b": jnp.array([1.0])}
    grads = {"k": jnp.array([3.0, -1.0]), "b": jnp.array([5.0])}
    masks = {"k": jnp.array([True, False]), "b": None}
    state = scores.init_importance(params, masks)
    assert state.saliency["b"] is None and state.grad_ema["b"] is None
    state = scores.update_importance(state, params, grads, masks, 0.5)
    np.testing.assert_allclose(state.saliency["k"], [3.0, 0.0])
    np.testing.assert_allclose(state.grad_ema["k"], [1.5, 0.5])
    state = jax.jit(scores.update_importance)(state, params, grads, masks, 0.5)
    np.testing.assert_allclose(state.saliency["k"], [4.5, 0.0])
    np.testing.assert_allclose(state.grad_ema["k"], [2.25, 0.75])


def test_score_tree_keys_dense_leaves_and_custom_scorer():
    params = {"a": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
              "b": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)}}
    masks = {"a": {"kernel": jnp.ones((3, 4), bool), "bias": None},
             "b": {"kernel": jnp.zeros((3, 4), bool), "bias": None}}
    r = scores.score_tree(scores.random, params, masks, key=jax.random.key(0))
    assert r["a"]["bias"] is None and r["b"]["bias"] is None
    assert not np.array_equal(r["a"]["kernel"], r["b"]["kernel"])  # one key per leaf
    r2 = scores.score_tree(scores.random, params, masks, key=jax.random.key(1))
    assert not np.array_equal(r["a"]["kernel"], r2["a"]["kernel"])

    def custom(x: scores.LeafInputs):  # a user scorer: anything LeafInputs -> array
        return jnp.where(x.mask, x.weight * x.grad, -1.0)

    grads = jax.tree.map(lambda p: 2.0 * p, params)
    c = scores.score_tree(custom, params, masks, grads)
    np.testing.assert_array_equal(c["a"]["kernel"], np.full((3, 4), 2.0))
    np.testing.assert_array_equal(c["b"]["kernel"], np.full((3, 4), -1.0))
    state = scores.init_importance(params, masks)
    imp = scores.score_tree(scores.importance_drop, params, masks, grads, state)
    np.testing.assert_array_equal(imp["a"]["kernel"], np.zeros((3, 4)))
    with pytest.raises(Exception):
        scores.score_tree(scores.gradient, params, masks)  # gradient scorer without grads
