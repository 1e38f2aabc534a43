"""Target-network mask policies: RLx2 re-masking and DS top-k pruning to the online count."""
import jax
import jax.numpy as jnp
import numpy as np

from sparse_rl_jax.sparsity import masks as mask_lib
from sparse_rl_jax.sparsity import targets


def _case(seed):
    rng = np.random.default_rng(seed)
    online = {"params": {"dense_0": {"kernel": jnp.asarray(rng.random((6, 8)) < 0.3),
                                     "bias": None},
                         "dense_1": {"kernel": None, "bias": None}}}
    target = {"params": {"dense_0": {"kernel": jnp.asarray(rng.normal(size=(6, 8)), jnp.float32),
                                     "bias": jnp.asarray(rng.normal(size=8), jnp.float32)},
                         "dense_1": {"kernel": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32),
                                     "bias": jnp.zeros(2)}}}
    return online, target


def test_remask_target_shares_online_masks():
    online, target = _case(0)
    out = targets.remask_target(target, online)
    m = np.asarray(online["params"]["dense_0"]["kernel"])
    w = np.asarray(out["params"]["dense_0"]["kernel"])
    assert (w[~m] == 0).all()
    np.testing.assert_array_equal(w[m], np.asarray(target["params"]["dense_0"]["kernel"])[m])
    np.testing.assert_array_equal(out["params"]["dense_1"]["kernel"], target["params"]["dense_1"]["kernel"])


def test_prune_target_keeps_top_k_of_target_jitted():
    prune = jax.jit(targets.prune_target)
    for seed in range(3):
        online, target = _case(seed)
        out = prune(target, online)
        k = int(online["params"]["dense_0"]["kernel"].sum())
        w = np.asarray(target["params"]["dense_0"]["kernel"])
        kept = np.asarray(out["params"]["dense_0"]["kernel"]) != 0
        assert kept.sum() == k
        assert np.abs(w[kept]).min() >= np.abs(w[~kept]).max()
        np.testing.assert_array_equal(np.asarray(out["params"]["dense_0"]["kernel"])[kept], w[kept])
        for layer, leaf in (("dense_0", "bias"), ("dense_1", "kernel"), ("dense_1", "bias")):
            np.testing.assert_array_equal(out["params"][layer][leaf], target["params"][layer][leaf])


def test_prune_target_ties_are_deterministic():
    online = {"k": jnp.array([True, True, False, False])}
    target = {"k": jnp.array([1.0, -2.0, 2.0, 1.0])}
    out = targets.prune_target(target, online)
    np.testing.assert_array_equal(out["k"], [0.0, -2.0, 2.0, 0.0])
    target = {"k": jnp.array([1.0, 1.0, -1.0, 1.0])}
    np.testing.assert_array_equal(targets.prune_target(target, online)["k"], [1.0, 1.0, 0.0, 0.0])
    assert mask_lib.map_sparse(lambda m: m, online)["k"] is not None


def test_prune_target_with_fewer_nonzeros_than_k_is_identity():
    online = {"k": jnp.array([True, True, True, False, False])}
    target = {"k": jnp.array([0.0, 0.3, 0.0, -0.2, 0.0])}
    np.testing.assert_array_equal(targets.prune_target(target, online)["k"], target["k"])


def test_prune_target_under_vmap_agrees_the_skip_and_equals_each_seed_alone():
    """Seed 0's target holds more non-zeros than its online count, seed 1's fewer: with the skip agreed
    over the seed axis both run the selection, and each equals its own unvmapped prune bit for bit."""
    online = {"k": jnp.array([[True, True, False, False, False, False]] * 2)}
    target = {"k": jnp.array([[0.5, -2.0, 0.1, 3.0, 0.0, 0.0],  # 4 non-zeros > k = 2: prune
                              [0.0, 0.7, 0.0, 0.0, 0.0, 0.0]])}  # 1 non-zero <= k: keep
    agreed = jax.jit(jax.vmap(lambda t, m: targets.prune_target(t, m, ("s",)), axis_name="s"))(target, online)
    for i in range(2):
        alone = targets.prune_target({"k": target["k"][i]}, {"k": online["k"][i]})
        np.testing.assert_array_equal(agreed["k"][i], alone["k"])
    np.testing.assert_array_equal(agreed["k"][0], [0.0, -2.0, 0.0, 3.0, 0.0, 0.0])
    np.testing.assert_array_equal(agreed["k"][1], target["k"][1])
