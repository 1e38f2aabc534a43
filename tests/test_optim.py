"""Tests for sparse_rl_jax.sparsity.optim: masked optax wrapper, skipped steps, moment reset."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from sparse_rl_jax.sparsity import optim


def _params_and_masks(key):
    """A tiny two-layer param tree with sparse kernels (None masks at biases), weights zero off-mask."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = {"params": {
        "dense_0": {"kernel": jax.random.normal(k1, (5, 4)), "bias": jnp.zeros(4)},
        "dense_1": {"kernel": jax.random.normal(k2, (4, 3)), "bias": jnp.zeros(3)},
    }}
    masks = {"params": {
        "dense_0": {"kernel": jax.random.bernoulli(k3, 0.5, (5, 4)), "bias": None},
        "dense_1": {"kernel": jax.random.bernoulli(k4, 0.5, (4, 3)), "bias": None},
    }}
    return optim.mask_tree(params, masks), masks


def _loss(params, x):
    h = jax.nn.relu(x @ params["params"]["dense_0"]["kernel"] + params["params"]["dense_0"]["bias"])
    return jnp.sum((h @ params["params"]["dense_1"]["kernel"] + params["params"]["dense_1"]["bias"]) ** 2)


def _kernel_leaves(tree):
    return [tree["params"][n]["kernel"] for n in ("dense_0", "dense_1")]


def test_masked_adam_keeps_inactive_weights_exactly_zero():
    params, masks = _params_and_masks(jax.random.key(0))
    opt = optim.masked_optimizer(optax.adam(1e-2))
    state = opt.init(params)

    @jax.jit
    def step(params, state, x):
        grads = jax.grad(_loss)(params, x)
        updates, state = opt.update(grads, state, params, masks=masks)
        return optax.apply_updates(params, updates), state

    x = jax.random.normal(jax.random.key(1), (8, 5))
    start = params
    for _ in range(5):
        params, state = step(params, state, x)
    for w, w0, m in zip(_kernel_leaves(params), _kernel_leaves(start), _kernel_leaves(masks)):
        assert np.all(np.asarray(w)[~np.asarray(m)] == 0.0)
        assert np.any(np.asarray(w)[np.asarray(m)] != np.asarray(w0)[np.asarray(m)])
    # Adam's moments never saw the dense gradient at inactive positions.
    for mu, m in zip(_kernel_leaves(state[0].mu), _kernel_leaves(masks)):
        assert np.all(np.asarray(mu)[~np.asarray(m)] == 0.0)


def test_skip_returns_zero_updates_and_identical_state():
    params, masks = _params_and_masks(jax.random.key(2))
    opt = optim.masked_optimizer(optax.adam(1e-2))
    grads = jax.grad(_loss)(params, jnp.ones((2, 5)))
    state = opt.update(grads, opt.init(params), params, masks=masks)[1]  # non-trivial state

    update = jax.jit(lambda g, s, skip: opt.update(g, s, params, masks=masks, skip=skip))
    updates, new_state = update(grads, state, jnp.array(True))
    assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), new_state, state)
    assert all(jax.tree.leaves(same))

    updates, new_state = update(grads, state, jnp.array(False))
    assert any(np.any(np.asarray(u) != 0) for u in jax.tree.leaves(updates))
    assert int(new_state[0].count) == int(state[0].count) + 1


def test_skip_is_vmappable_per_seed():
    params, masks = _params_and_masks(jax.random.key(3))
    opt = optim.masked_optimizer(optax.adam(1e-2))
    grads = jax.grad(_loss)(params, jnp.ones((2, 5)))
    state = opt.init(params)
    skip = jnp.array([True, False])
    batched = jax.vmap(lambda s: opt.update(grads, state, params, masks=masks, skip=s))
    updates, new_state = batched(skip)
    assert np.asarray(new_state[0].count).tolist() == [0, 1]
    assert np.all(np.asarray(updates["params"]["dense_0"]["bias"][0]) == 0)


def _adam_state_with_nonzero_moments(params):
    opt = optax.adam(1e-2)
    ones = jax.tree.map(jnp.ones_like, params)
    return opt, opt.update(ones, opt.init(params), params)[1]


def test_reset_grown_moments_zeroes_exactly_grown_positions():
    params, masks = _params_and_masks(jax.random.key(4))
    opt, state = _adam_state_with_nonzero_moments(params)
    grown = jax.tree.map(lambda m: None if m is None else jnp.logical_not(m), masks,
                         is_leaf=lambda x: x is None)
    for reset in (optim.reset_grown_moments(state, grown, opt), optim.reset_grown_moments(state, grown)):
        for tree_name in ("mu", "nu"):
            new, old = getattr(reset[0], tree_name), getattr(state[0], tree_name)
            for a, b, g in zip(_kernel_leaves(new), _kernel_leaves(old), _kernel_leaves(grown)):
                g = np.asarray(g)
                assert np.all(np.asarray(a)[g] == 0) and np.array_equal(np.asarray(a)[~g], np.asarray(b)[~g])
            bias_new = new["params"]["dense_0"]["bias"]
            assert np.array_equal(bias_new, old["params"]["dense_0"]["bias"])
        assert int(reset[0].count) == int(state[0].count)


def test_grown_mask_is_new_and_not_old():
    old = {"w": jnp.array([True, False, False]), "b": None}
    new = {"w": jnp.array([False, True, False]), "b": None}
    out = optim.grown_mask(old, new)
    assert out["b"] is None and np.asarray(out["w"]).tolist() == [False, True, False]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), p=st.floats(0.0, 1.0))
def test_property_reset_zeroes_moments_at_grown(seed, p):
    params, masks = _params_and_masks(jax.random.key(seed % 1000))
    opt = optim.masked_optimizer(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)))
    ones = jax.tree.map(jnp.ones_like, params)
    state = opt.update(ones, opt.init(params), params, masks=None)[1]
    rng = np.random.default_rng(seed)
    grown = jax.tree.map(lambda m: None if m is None else jnp.asarray(rng.random(m.shape) < p), masks,
                         is_leaf=lambda x: x is None)
    reset = optim.reset_grown_moments(state, grown, opt)
    adam = reset[1][0]
    for tree in (adam.mu, adam.nu):
        for leaf, g in zip(_kernel_leaves(tree), _kernel_leaves(grown)):
            assert np.all(np.asarray(leaf)[np.asarray(g)] == 0)
            assert np.all(np.asarray(leaf)[~np.asarray(g)] != 0)


def test_coupled_weight_decay_is_l2_on_the_gradient_and_decoupled_is_adamw():
    """DS's torch Adam(weight_decay): Adam of (g + wd * w); AdamW: Adam of g, then - lr * wd * w."""
    from sparse_rl_jax.agents import common

    w = {"k": jnp.array([[1.0, -2.0], [0.5, 0.0]])}
    g = {"k": jnp.array([[0.1, 0.2], [-0.3, 0.4]])}
    lr, wd = 1e-2, 0.1
    for mode, reference in (
            ("coupled", optax.adam(lr).update({"k": g["k"] + wd * w["k"]}, optax.adam(lr).init(w), w)[0]),
            ("decoupled", optax.adamw(lr, weight_decay=wd).update(g, optax.adamw(lr, weight_decay=wd).init(w), w)[0])):
        opt = common.make_optimizer(wd, mode)
        updates, _ = opt.update(g, opt.init(w), w, masks=None, learning_rate=lr)
        np.testing.assert_allclose(updates["k"], reference["k"], rtol=1e-6)
    steps = {mode: common.make_optimizer(wd, mode) for mode in ("coupled", "decoupled")}
    coupled, decoupled = (opt.update(g, opt.init(w), w, masks=None, learning_rate=lr)[0] for opt in steps.values())
    assert not np.allclose(coupled["k"], decoupled["k"])


def test_unmasked_gradients_reach_the_moments_of_absent_connections():
    """DS's code: Adam sees the dense gradient (moments of absent weights grow); updates stay masked."""
    from sparse_rl_jax.agents import common

    w = {"k": jnp.array([[1.0, 0.0]])}
    g = {"k": jnp.array([[0.5, 0.7]])}
    masks = {"k": jnp.array([[True, False]])}
    for mask_gradients, absent_moment in ((True, 0.0), (False, 0.1 * 0.7)):
        opt = common.make_optimizer(mask_gradients=mask_gradients)
        updates, state = opt.update(g, opt.init(w), w, masks=masks, learning_rate=1e-2)
        assert float(updates["k"][0, 1]) == 0.0  # the absent weight never moves
        np.testing.assert_allclose(float(state[0].mu["k"][0, 1]), absent_moment, rtol=1e-6)


@pytest.mark.parametrize("weight_decay,mode", [(0.0, "decoupled"), (1e-2, "decoupled"), (2e-4, "coupled")])
def test_rate_per_update_computes_what_optax_adam_computes(weight_decay, mode):
    """The agents' optimizer takes its learning rate per update (a state leaf): same state structure and
    bit for bit the same steps as optax's own Adam / AdamW / coupled-L2 Adam built with that rate."""
    from sparse_rl_jax.agents import common

    def reference(lr):  # optax's own, built with the (traced) rate, as the agents did before
        if not weight_decay:
            inner = optax.adam(lr)
        elif mode == "coupled":
            inner = optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))
        else:
            inner = optax.adamw(lr, weight_decay=weight_decay)
        return optim.masked_optimizer(inner)

    lr = jnp.float32(3e-3)
    ours = common.make_optimizer(weight_decay, mode)
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.ones(4)}
    masks = {"w": jnp.arange(12).reshape(3, 4) % 3 != 0, "b": None}
    a, b = reference(lr).init(params), ours.init(params)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    step_a = jax.jit(lambda g, s, p, lr: reference(lr).update(g, s, p, masks=masks))
    step_b = jax.jit(lambda g, s, p, lr: ours.update(g, s, p, masks=masks, learning_rate=lr))
    pa = pb = params
    for step in range(3):
        grads = jax.tree.map(lambda x: jnp.sin(x * (step + 1)), params)
        ua, a = step_a(grads, a, pa, lr)
        ub, b = step_b(grads, b, pb, lr)
        pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
    for x, y in zip(jax.tree.leaves((pa, a)), jax.tree.leaves((pb, b))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
