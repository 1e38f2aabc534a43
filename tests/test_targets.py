"""Target-network mask policies: RLx2 re-masking and DS top-k pruning to the online count."""
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_prune_target_under_vmap_equals_each_seed_alone():
    """Seed 0's target holds more non-zeros than its online count, seed 1's fewer: vmapped, each seed
    equals its own unvmapped prune bit for bit (the searches' while loops run per seed)."""
    online = {"k": jnp.array([[True, True, False, False, False, False]] * 2)}
    target = {"k": jnp.array([[0.5, -2.0, 0.1, 3.0, 0.0, 0.0],  # 4 non-zeros > k = 2: prune
                              [0.0, 0.7, 0.0, 0.0, 0.0, 0.0]])}  # 1 non-zero <= k: keep
    guesses = {"k": jnp.array([0.05, 0.7])}
    for g in (None, guesses):
        vmapped = jax.jit(jax.vmap(lambda t, m, g: targets.prune_target(t, m, guesses=g)))(target, online, g)
        for i in range(2):
            alone = targets.prune_target({"k": target["k"][i]}, {"k": online["k"][i]})
            np.testing.assert_array_equal(vmapped["k"][i], alone["k"])
        np.testing.assert_array_equal(vmapped["k"][0], [0.0, -2.0, 0.0, 3.0, 0.0, 0.0])
        np.testing.assert_array_equal(vmapped["k"][1], target["k"][1])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), excess=st.integers(0, 40), guess_scale=st.sampled_from(
    [0.0, 1e-6, 0.3, 1.0, 1.001, 3.0, 1e6, np.inf, np.nan]))
def test_prune_target_with_counts_and_any_guess_equals_the_plain_prune(seed, excess, guess_scale):
    """DS's fast path (active counts handed in, a guessed threshold) gives the plain prune's params bit
    for bit whatever the guess: the guess may only change how many passes the search takes."""
    rng = np.random.default_rng(seed)
    n = 300
    mask = rng.random(n) < 0.4
    pre = np.where(mask, rng.normal(0, 0.05, n), 0).astype(np.float32)  # previous target: support = mask
    drop = rng.choice(np.flatnonzero(mask), min(excess, int(mask.sum())), replace=False)
    grow = rng.choice(np.flatnonzero(~mask), len(drop), replace=False)
    online_mask = mask.copy()
    online_mask[drop], online_mask[grow] = False, True  # an event moved len(drop) connections
    online = np.where(online_mask, rng.normal(0, 0.05, n), 0).astype(np.float32)
    online[rng.random(n) < 0.05] = 0.0  # some grown connections still at 0
    tau = 0.005
    post = jnp.asarray((1 - tau) * pre + tau * online, jnp.float32)
    masks = {"k": jnp.asarray(online_mask), "b": None}
    params = {"k": post, "b": jnp.ones(3)}
    floor = np.abs(pre[pre != 0]).min() if (pre != 0).any() else 0.0  # the previous prune's last kept
    guesses = targets.floor_guesses({"k": jnp.float32(floor), "b": None}, tau)
    guesses = {"k": guesses["k"] * guess_scale, "b": None}
    counts = {"k": jnp.sum(masks["k"], dtype=jnp.int32), "b": None}
    plain = targets.prune_target(params, masks)
    fast = jax.jit(targets.prune_target)(params, masks, counts, guesses)
    np.testing.assert_array_equal(fast["k"], plain["k"])
    np.testing.assert_array_equal(fast["b"], params["b"])
    kept = np.asarray(plain["k"]) != 0
    assert kept.sum() == min(int(online_mask.sum()), int((np.asarray(post) != 0).sum()))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), excess=st.integers(0, 40))
def test_prune_floor_separates_kept_from_dropped_and_guesses_the_next_prune(seed, excess):
    """The floor DS keeps as state (`prune_target_with_floors`) lies between every dropped and every kept
    |w|, and the guess from it gives the plain prune's result on the next soft update."""
    rng = np.random.default_rng(seed)
    n, tau = 300, 0.005
    mask = rng.random(n) < 0.4
    target = np.where(mask, rng.normal(0, 0.05, n), 0) + (rng.random(n) < excess / n) * rng.normal(0, 1e-3, n)
    masks, counts = {"k": jnp.asarray(mask)}, {"k": jnp.sum(jnp.asarray(mask), dtype=jnp.int32)}
    pruned, floors = jax.jit(targets.prune_target_with_floors)({"k": jnp.asarray(target, jnp.float32)}, masks,
                                                               counts)
    w, before, floor = np.asarray(pruned["k"]), np.abs(np.asarray(target, np.float32)), float(floors["k"])
    kept, dropped = w != 0, (before != 0) & (w == 0)
    assert kept.sum() == min(int(mask.sum()), int((before != 0).sum()))
    assert (before[kept] >= floor).all() and (before[dropped] <= floor).all()
    online = np.where(mask, rng.normal(0, 0.05, n), 0).astype(np.float32)
    post = {"k": jnp.asarray((1 - tau) * w + tau * online, jnp.float32)}
    guessed = targets.prune_target(post, masks, counts, targets.floor_guesses(floors, tau))
    np.testing.assert_array_equal(guessed["k"], targets.prune_target(post, masks)["k"])
