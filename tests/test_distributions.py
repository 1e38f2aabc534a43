"""Per-layer densities: hand-computed uniform / ER / ERK cases, shared allocations, traced densities."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_rl_jax.sparsity import distributions as dist
from sparse_rl_jax.sparsity import masks as mask_lib


def _net(*shapes, parent=None):
    layers = {f"dense_{i}": {"kernel": jax.ShapeDtypeStruct(s, jnp.float32),
                             "bias": jax.ShapeDtypeStruct(s[-1:], jnp.float32)}
              for i, s in enumerate(shapes)}
    return {"params": layers if parent is None else {parent: layers}}


def _kernel_densities(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=mask_lib.is_none)[0]
    out = {mask_lib.layer_string(p): v for p, v in flat if mask_lib.path_string(p).endswith("kernel")}
    assert all(v is None for p, v in flat if mask_lib.path_string(p).endswith("bias"))
    return {k: (None if v is None else float(v)) for k, v in out.items()}


def _erk(params, density, **kw):
    return _kernel_densities(dist.erk_densities(params, mask_lib.sparse_structure(params), density, **kw))


def test_erk_by_hand_without_and_with_overflow():
    # raw scores: A (10x10) 20/100 = 0.2 over 100 weights, B (10x2) 12/20 = 0.6 over 20 weights.
    net = _net((10, 10), (10, 2))
    # density 0.2: budget 24 = eps (0.2*100 + 0.6*20) -> eps 0.75 -> A 0.15, B 0.45
    assert _erk(net, 0.2) == pytest.approx({"dense_0": 0.15, "dense_1": 0.45})
    # density 0.5: eps 60/32 -> B would get 1.125 > 1, so B is dense and A gets (60 - 20) / 100 = 0.4
    assert _erk(net, 0.5) == pytest.approx({"dense_0": 0.4, "dense_1": 1.0})


def test_erk_overflow_chain_needs_several_passes():
    # A 100x100 (raw .02, 10000), B 20x20 (raw .1, 400), C 4x4 (raw .5, 16); budget 2448 non-zeros.
    # eps0 = 2448/248 = 9.87: only C overflows. eps1 = (2448-16)/240 = 10.13: now B overflows too.
    # eps2 = (2448-416)/200 = 10.16 -> A = 0.2032.
    net = _net((100, 100), (20, 20), (4, 4))
    got = _erk(net, 2448 / 10416)
    assert got == pytest.approx({"dense_0": 0.2032, "dense_1": 1.0, "dense_2": 1.0}, rel=1e-5)


def test_erk_shared_allocation_over_twin_critic_and_tree_lists():
    q = _net((10, 10), (10, 2), parent="q1")
    q["params"]["q2"] = _net((10, 10), (10, 2))["params"]
    # twice the same layers: same epsilon as a single net
    assert _erk(q, 0.2) == pytest.approx({"q1/dense_0": 0.15, "q1/dense_1": 0.45,
                                          "q2/dense_0": 0.15, "q2/dense_1": 0.45})
    a, b = _net((10, 10)), _net((10, 2))
    da, db = dist.erk_densities([a, b], [mask_lib.sparse_structure(a), mask_lib.sparse_structure(b)], 0.2)
    assert _kernel_densities(da) == pytest.approx({"dense_0": 0.15})
    assert _kernel_densities(db) == pytest.approx({"dense_0": 0.45})


def test_erk_traced_density_jit_and_vmap_keeps_budget():
    net = _net((17, 64), (64, 64), (64, 6))
    structure = mask_lib.sparse_structure(net)
    sizes = np.array([17 * 64, 64 * 64, 64 * 6])

    def flat(d):
        tree = dist.erk_densities(net, structure, d)
        return jnp.stack([tree["params"][f"dense_{i}"]["kernel"] for i in range(3)])

    levels = jnp.array([0.05, 0.2, 0.5, 0.9, 1.0])
    out = np.asarray(jax.jit(jax.vmap(flat))(levels))
    for d, row in zip(np.asarray(levels), out):
        assert (row <= 1.0).all() and (row >= 0.0).all()
        assert (row * sizes).sum() == pytest.approx(d * sizes.sum(), rel=1e-5)
        np.testing.assert_allclose(row, np.asarray(flat(float(d))), rtol=1e-6)


def test_erk_overrides_leave_the_allocation():
    net = _net((10, 10), (10, 2), (10, 10))
    got = _erk(net, 0.2, overrides={"dense_2": 1.0})
    assert got == pytest.approx({"dense_0": 0.15, "dense_1": 0.45, "dense_2": 1.0})


def test_er_by_hand():
    net = _net((17, 256), (256, 256), (256, 6))
    structure = mask_lib.sparse_structure(net, dense_output=True)
    got = _kernel_densities(dist.er_densities(net, structure, {"dense_0": 7, "dense_1": 64}))
    assert got == pytest.approx({"dense_0": 7 * 273 / 4352, "dense_1": 0.5, "dense_2": None})
    clipped = _kernel_densities(dist.er_densities(net, structure, 1000.0))
    assert clipped == pytest.approx({"dense_0": 1.0, "dense_1": 1.0, "dense_2": None})
    with pytest.raises(ValueError):
        dist.er_densities(net, structure, {"dense_0": 7})


def test_uniform_and_densities_for():
    net = _net((10, 10), (10, 2))
    structure = mask_lib.sparse_structure(net)
    assert _kernel_densities(dist.densities_for(net, structure, 0.9, "uniform")) == pytest.approx(
        {"dense_0": 0.1, "dense_1": 0.1})
    over = dist.uniform_densities(structure, 0.3, overrides={"dense_1": 0.7})
    assert _kernel_densities(over) == pytest.approx({"dense_0": 0.3, "dense_1": 0.7})
    assert _kernel_densities(dist.densities_for(net, structure, 0.5)) == pytest.approx(
        {"dense_0": 0.4, "dense_1": 1.0})
    er = dist.densities_for(net, structure, 0.0, "er", lambdas=2.0)
    assert _kernel_densities(er) == pytest.approx({"dense_0": 0.4, "dense_1": 1.0})
    solved = dist.densities_for(net, structure, 0.8, "er")  # one lambda solved for the target = ERK
    assert _kernel_densities(solved) == pytest.approx({"dense_0": 0.15, "dense_1": 0.45})
    with pytest.raises(ValueError):
        dist.densities_for(net, structure, 0.5, "nope")
