"""Mask structure, tree helpers, counting, exact-count initial masks and the top-k primitive."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sparse_rl_jax.networks import DeterministicActor, TwinCritic
from sparse_rl_jax.sparsity import masks as mask_lib

FAST = settings(max_examples=25, deadline=None)


@functools.lru_cache(maxsize=None)
def _td3_shapes(obs=17, act=6):
    """Real network param trees as shapes only (``eval_shape``: no compilation, fast)."""
    key = jax.random.key(0)
    actor = jax.eval_shape(DeterministicActor(act).init, key, jnp.zeros((1, obs)))
    critic = jax.eval_shape(TwinCritic().init, key, jnp.zeros((1, obs)), jnp.zeros((1, act)))
    return actor, critic


def _mlp(sizes, seed=0):
    """Actor-layout params with real (random) weights and small layers."""
    rng = np.random.default_rng(seed)
    layers = {f"dense_{i}": {"kernel": jnp.asarray(rng.normal(size=(a, b)), jnp.float32),
                             "bias": jnp.zeros(b)} for i, (a, b) in enumerate(zip(sizes, sizes[1:]))}
    return {"params": layers}


def _kernels(structure):
    return {path: v for path, v in _flat(structure).items() if path.endswith("kernel")}


def _flat(tree):
    return {mask_lib.path_string(p): v
            for p, v in jax.tree_util.tree_flatten_with_path(tree, is_leaf=mask_lib.is_none)[0]}


def test_dense_td3_weight_count_halfcheetah():
    actor, critic = _td3_shapes()
    total = sum(mask_lib.sparse_weight_count(p, mask_lib.sparse_structure(p)) for p in (actor, critic))
    assert total == 214_784


def test_sparse_structure_defaults_and_options():
    actor, critic = _td3_shapes()
    s = _flat(mask_lib.sparse_structure(critic))
    assert all(v for k, v in s.items() if k.endswith("kernel"))
    assert not any(v for k, v in s.items() if k.endswith("bias"))
    out = _kernels(mask_lib.sparse_structure(critic, dense_output=True))
    assert {k for k, v in out.items() if not v} == {"q1/dense_2/kernel", "q2/dense_2/kernel"}
    inp = _kernels(mask_lib.sparse_structure(actor, dense_input=True))
    assert {k for k, v in inp.items() if not v} == {"dense_0/kernel"}
    one = _kernels(mask_lib.sparse_structure(critic, dense_layers=("q1/dense_2",)))
    assert {k for k, v in one.items() if not v} == {"q1/dense_2/kernel"}
    both = _kernels(mask_lib.sparse_structure(critic, dense_layers="dense_1"))
    assert {k for k, v in both.items() if not v} == {"q1/dense_1/kernel", "q2/dense_1/kernel"}
    custom = _flat(mask_lib.sparse_structure(actor, predicate=lambda path, leaf: path == "dense_1/kernel"))
    assert [k for k, v in custom.items() if v] == ["dense_1/kernel"]


def test_output_layer_is_per_parent_mlp():
    k = jnp.zeros((3, 3))
    params = {"params": {"q1": {f"dense_{i}": {"kernel": k} for i in range(3)},
                         "q2": {f"dense_{i}": {"kernel": k} for i in range(4)}}}
    s = _flat(mask_lib.sparse_structure(params, dense_output=True, dense_input=True))
    assert {p for p, v in s.items() if v} == {"q1/dense_1/kernel", "q2/dense_1/kernel",
                                               "q2/dense_2/kernel"}


def test_map_sparse_dense_leaves():
    masks = {"a": jnp.array([True, False]), "b": None}
    params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
    mask_shaped = mask_lib.map_sparse(lambda m, p: p * 2, masks, params)
    assert mask_shaped["b"] is None
    params_shaped = mask_lib.map_sparse(lambda m, p: p * 2, masks, params, keep_dense=True)
    np.testing.assert_array_equal(params_shaped["b"], [3.0])
    np.testing.assert_array_equal(params_shaped["a"], [2.0, 4.0])
    counts = mask_lib.active_counts(masks)
    assert int(counts["a"]) == 1 and counts["b"] is None


@FAST
@given(seed=st.integers(0, 2**31 - 1), density=st.floats(0.0, 1.0))
def test_apply_masks_zeroes_exactly(seed, density):
    rng = np.random.default_rng(seed)
    params = {"k": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32), "b": jnp.ones(5)}
    masks = {"k": jnp.asarray(rng.random((4, 5)) < density), "b": None}
    out = mask_lib.apply_masks(params, masks)
    m = np.asarray(masks["k"])
    assert (np.asarray(out["k"])[~m] == 0).all()
    np.testing.assert_array_equal(np.asarray(out["k"])[m], np.asarray(params["k"])[m])
    np.testing.assert_array_equal(out["b"], params["b"])


def _densities(params, d):
    return jax.tree.map(lambda s: d if s else None, mask_lib.sparse_structure(params))


@pytest.mark.parametrize("method", ["random", "magnitude"])
def test_init_masks_exact_counts(method):
    actor = _mlp((5, 32, 32, 3))
    for d in (0.0, 0.1, 0.37, 1.0):
        masks = mask_lib.init_masks(jax.random.key(3), actor, _densities(actor, d), method)
        for path, m in _flat(masks).items():
            size = np.prod(_flat(actor)[path].shape)
            if m is None:
                assert path.endswith("bias")
            else:
                assert m.dtype == jnp.bool_ and int(m.sum()) == round(np.float32(d) * size)


def test_init_masks_magnitude_keeps_largest_and_traced_density():
    actor = _mlp((5, 32, 32, 3))

    @jax.jit
    def masks_for(d):
        return mask_lib.init_masks(jax.random.key(0), actor, _densities(actor, d), "magnitude")

    w = np.abs(np.asarray(actor["params"]["dense_1"]["kernel"]))
    for d in (0.1, 0.5):
        m = np.asarray(masks_for(jnp.float32(d))["params"]["dense_1"]["kernel"])
        assert m.sum() == round(d * w.size)
        assert w[m].min() >= w[~m].max()


def test_init_masks_vmapped_keys_differ():
    actor = _mlp((5, 32, 32, 3))
    dens = _densities(actor, 0.2)
    keys = jax.random.split(jax.random.key(1), 4)
    masks = jax.vmap(lambda k: mask_lib.init_masks(k, actor, dens))(keys)
    m = np.asarray(masks["params"]["dense_1"]["kernel"])
    assert (m.sum(axis=(1, 2)) == round(0.2 * 32 * 32)).all()
    assert len({x.tobytes() for x in m}) == 4
    # different layers of one seed get different keys too
    keys_tree = mask_lib.leaf_keys(jax.random.key(0), masks)
    leaves = [jax.random.key_data(k).tobytes() for k in jax.tree.leaves(keys_tree)]
    assert len(set(leaves)) == len(leaves) == 3


@FAST
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(-2, 30), levels=st.sampled_from([0, 1, 4, 1000]),
       lowest=st.booleans())
def test_top_k_bisect_matches_sort(seed, k, levels, lowest):
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=24) * levels) / max(levels, 1)
    x[rng.random(24) < 0.15] = np.inf
    x[rng.random(24) < 0.15] = -np.inf
    x[rng.random(24) < 0.1] = np.nan
    x[rng.random(24) < 0.1] = -0.0
    valid = rng.random(24) < 0.7
    x, valid = jnp.asarray(x, jnp.float32), jnp.asarray(valid)
    a = mask_lib.top_k_mask(x, k, valid, lowest=lowest)
    b = mask_lib.top_k_mask(x, k, valid, lowest=lowest, method="sort")
    np.testing.assert_array_equal(a, b)
    assert int(a.sum()) == min(max(k, 0), int(valid.sum()))
    assert not np.asarray(a & ~valid).any()


@FAST
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(-2, 30), levels=st.sampled_from([0, 1, 4, 1000]),
       lowest=st.booleans(), guess=st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                                             st.sampled_from([0.0, -0.0, 1e-38, -1e-38])))
def test_top_k_with_any_guess_matches_sort(seed, k, levels, lowest, guess):
    """The guessed-threshold search (a gallop from the guess) selects exactly what the sort does, for
    every guess: ties, infinities, NaN scores, k beyond the valid count, and guesses of every kind."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=24) * levels) / max(levels, 1)
    x[rng.random(24) < 0.15] = np.inf
    x[rng.random(24) < 0.15] = -np.inf
    x[rng.random(24) < 0.1] = np.nan
    valid = rng.random(24) < 0.7
    x, valid = jnp.asarray(x, jnp.float32), jnp.asarray(valid)
    a = mask_lib.top_k_mask(x, k, valid, lowest=lowest, guess=guess)
    b = mask_lib.top_k_mask(x, k, valid, lowest=lowest, method="sort")
    np.testing.assert_array_equal(a, b)


def test_top_k_guess_on_a_large_layer_matches_sort():
    """A 256x256 layer with a guess a step away from the threshold (the gallop's doubling and the
    bisection inside its bracket both run), and guesses at both extremes."""
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(0, 0.05, (256, 256)), jnp.float32)
    k = 30_000
    ref = mask_lib.top_k_mask(jnp.abs(w), k, method="sort")
    t = float(np.sort(np.abs(np.asarray(w)).ravel())[::-1][k - 1])
    for guess in (t, t * 0.9, t * 1.1, t * 1.0001, 0.0, 1e30, np.inf):
        np.testing.assert_array_equal(mask_lib.top_k_mask(jnp.abs(w), k, guess=guess), ref)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(0, 30), levels=st.sampled_from([0, 2, 5, 1000]),
       method=st.sampled_from(["bisect", "sort"]), guess=st.sampled_from([None, 0.0, 0.5, np.inf]))
def test_top_k_floor_separates_selected_from_unselected(seed, k, levels, method, guess):
    """`top_k_floor`'s floor is at or below every selected score and at or above every unselected valid
    one (ties, infinities, k beyond the valid count), and its mask is `top_k_mask`'s."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=24) * levels) / max(levels, 1)
    x[rng.random(24) < 0.1] = np.inf
    x[rng.random(24) < 0.1] = -np.inf
    valid = rng.random(24) < 0.7
    x, valid = jnp.asarray(x, jnp.float32), jnp.asarray(valid)
    mask, floor = mask_lib.top_k_floor(x, k, valid, method=method, guess=guess)
    np.testing.assert_array_equal(mask, mask_lib.top_k_mask(x, k, valid, method="sort"))
    mask, x, valid, floor = np.asarray(mask), np.asarray(x), np.asarray(valid), float(floor)
    assert not np.isnan(floor)
    assert (x[mask] >= floor).all() and (x[valid & ~mask] <= floor).all()
    if k == 0:
        assert floor == np.inf


@pytest.mark.parametrize("method", ["bisect", "sort"])
@pytest.mark.parametrize("guess", [None, 1.0])
def test_top_k_floor_with_no_valid_entry_is_minus_inf(method, guess):
    x = jnp.arange(6, dtype=jnp.float32)
    mask, floor = mask_lib.top_k_floor(x, 3, jnp.zeros(6, bool), method=method, guess=guess)
    assert not np.asarray(mask).any() and float(floor) == -np.inf
