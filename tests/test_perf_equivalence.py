"""The optimised per-step paths train bit-for-bit the same states as the straightforward ones.

The reference functions below are copies of the previous implementations: the mask change summed
over every mask at every step and the DS target pruned by an exact top-k at every soft update. The
masked optimizer (RLx2's skipped step as ``jnp.where`` selects) and the moment reset are unchanged;
their copies pin them, because moving either into a ``lax.cond`` changed XLA's fusion of the Adam
update and the trained weights by about one ulp. Each agent is trained a few steps under both
(vmapped over two seeds, a short topology period so drop/grow, prune and skip steps all happen) and
every leaf of the state and of the metrics must be equal down to the bit pattern (so -0.0 vs 0.0
would fail).
"""
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparse_rl_jax import dst, methods, replay, trainer
from sparse_rl_jax.sparsity import masks as mask_lib
from sparse_rl_jax.sparsity import optim as optim_lib
from sparse_rl_jax.sparsity import scores as score_lib
from sparse_rl_jax.sparsity import targets as target_lib
from sparse_rl_jax.sparsity import topology

OBS, ACT, BATCH, STEPS = 5, 2, 16, 14


# ----------------------------------------------------------------------- previous implementations
def ref_prune_target(target_params, online_masks):
    def leaf(m, w):
        keep = topology.prune_to_count(w, w != 0, jnp.sum(m, dtype=jnp.int32))
        return jnp.where(keep, w, jnp.zeros((), w.dtype))

    return mask_lib.map_sparse(leaf, online_masks, target_params, keep_dense=True)


def ref_masked_optimizer(inner):
    inner = optax.with_extra_args_support(inner)

    def select(pred, a, b):
        return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)

    def update_fn(grads, state, params=None, *, masks, skip=False, **extra_args):
        updates, new_state = inner.update(optim_lib.mask_tree(grads, masks), state, params,
                                          **extra_args)
        updates = optim_lib.mask_tree(updates, masks)
        if skip is False:
            return updates, new_state
        skip = jnp.asarray(skip, dtype=bool)
        zeros = jax.tree.map(jnp.zeros_like, updates)
        return select(skip, zeros, updates), select(skip, state, new_state)

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def ref_apply_gradients(net, grads, clock, rules, optimizer):
    key, topo_key = jax.random.split(net.key)
    importance = net.importance
    if rules.uses_importance:
        importance = score_lib.update_importance(importance, net.params, grads, net.masks,
                                                 rules.importance_decay)
    net = net.replace(importance=importance, key=key)
    if rules.kind == "none":
        masks, branch = net.masks, jnp.int32(dst.NO_UPDATE)
    else:
        branch = rules.branch(clock)
        fraction = rules.schedule.fraction(clock)
        masks = jax.lax.switch(branch, [
            lambda: net.masks,
            lambda: dst._drop_grow(net, grads, fraction, rules, topo_key),
            lambda: dst._prune(net, clock, rules),
        ])
    skip = (branch == dst.DROP_GROW) if rules.skip_optimizer_step else False
    updates, opt_state = optimizer.update(grads, net.opt_state, net.params, masks=masks, skip=skip)
    params = mask_lib.apply_masks(optax.apply_updates(net.params, updates), masks)
    if rules.reset_moments:
        grown = mask_lib.map_sparse(lambda new, old: new & ~old, masks, net.masks)
        opt_state = optim_lib.reset_grown_moments(opt_state, grown)
    metrics = {"mask_change": dst.topology_change(net.masks, masks),
               "topology_updates": (branch != dst.NO_UPDATE).astype(jnp.int32)}
    return net.replace(params=params, opt_state=opt_state, masks=masks), metrics


@contextlib.contextmanager
def reference_paths():
    """Swap the previous implementations in (the agents look these up at trace time)."""
    swaps = [(dst, "apply_gradients", ref_apply_gradients),
             (target_lib, "prune_target", ref_prune_target),
             (optim_lib, "masked_optimizer", ref_masked_optimizer)]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in swaps]
    for mod, name, fn in swaps:
        setattr(mod, name, fn)
    try:
        yield
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)


# ----------------------------------------------------------------------------------- harness
def _window(key):
    k = jax.random.split(key, 4)
    return replay.Window(
        obs=jax.random.normal(k[0], (BATCH, OBS)),
        action=jax.random.uniform(k[1], (BATCH, ACT), minval=-1.0, maxval=1.0),
        rewards=jax.random.normal(k[2], (BATCH, 1)), terminals=jnp.zeros((BATCH, 1), bool),
        truncated=jnp.zeros((BATCH, 1), bool), next_obs=jax.random.normal(k[3], (BATCH, 1, OBS)),
        valid=jnp.ones((BATCH, 1), bool))


def _train(method, algo, **overrides):
    """STEPS updates of two vmapped seeds sharing the step counter, as the trainer runs them."""
    config = methods.make_config(method, algo, **{
        "agent.hidden": (16, 16), "agent.batch_size": BATCH, "updates_per_env_step": 1.0,
        "warmup_env_steps": 0, "total_env_steps": 40, "topology.period": 3,
        "topology.gmp_begin": 0.0, "topology.gmp_end": 0.5, "replay.nstep": 1,
        "replay.dynamic": False, **overrides})
    agent = trainer.make_agent(config, OBS, ACT)
    s = config.sparsity
    states = jax.vmap(agent.init)(trainer.seed_keys(0, 2), jnp.full((2,), s.actor),
                                  jnp.full((2,), s.critic))

    def one(states, step):
        key = jax.random.fold_in(jax.random.PRNGKey(7), step)
        window = jax.tree.map(lambda x: jnp.stack([x, x[::-1]]), _window(key))
        keys = jax.random.split(key, 2)
        return jax.vmap(agent.update, in_axes=(0, 0, None, None, 0))(
            states, window, step, jnp.int32(1), keys)

    return jax.jit(lambda s: jax.lax.scan(one, s, jnp.arange(STEPS)))(states)


def _bits(x):
    x = np.asarray(x)
    if x.dtype == jax.dtypes.float0:
        return x
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = np.asarray(jax.random.key_data(x))
    return x.view(np.uint8) if x.dtype.kind == "f" else x


def _assert_bitwise_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(_bits(x), _bits(y))


# Each changed path at least once (DS target prune, mask-change summary in the switch, GMP prune,
# RLx2 skipped steps, importance), for both agents; two compiles per case keep this to a few minutes.
CASES = [("ds", "td3"), ("gmp", "td3"), ("rlx2+importance", "td3"), ("ds+importance", "sac"),
         ("rigl", "sac")]


@pytest.mark.parametrize("method,algo", CASES)
def test_optimised_step_trains_bitwise_identical_states(method, algo):
    new = _train(method, algo)
    with reference_paths():
        old = _train(method, algo)
    _assert_bitwise_equal(new, old)
    updates = np.asarray(new[1]["critic_topology_updates"]).sum()
    assert updates > 0, "the test must cross topology updates"


def test_moment_reset_path_is_bitwise_identical():
    new = _train("rigl", "td3", **{"topology.reset_moments": True})
    with reference_paths():
        old = _train("rigl", "td3", **{"topology.reset_moments": True})
    _assert_bitwise_equal(new, old)


def test_ds_target_never_holds_more_than_the_online_count():
    """Across drop/grow steps (where the polyak target briefly has more than k non-zeros)."""
    new = _train("ds", "td3")
    masks = new[0].critic.masks
    target = new[0].critic.target
    for m, w in zip(jax.tree.leaves(masks), jax.tree.leaves(mask_lib.map_sparse(
            lambda m, w: w, masks, target))):
        per_seed_nonzero = np.asarray(w != 0).reshape(2, -1).sum(axis=1)
        assert (per_seed_nonzero <= np.asarray(m).reshape(2, -1).sum(axis=1)).all()


def test_run_if_under_vmap_with_mixed_predicates():
    x = jnp.arange(6.0).reshape(3, 2)
    pred = jnp.array([True, False, True])
    out = jax.vmap(lambda p, v: mask_lib.run_if(p, lambda: v * 10.0, v))(pred, x)
    np.testing.assert_array_equal(out, jnp.where(pred[:, None], x * 10.0, x))
    none = jax.vmap(lambda p, v: mask_lib.run_if(p, lambda: v * 10.0, v))(jnp.zeros(3, bool), x)
    np.testing.assert_array_equal(none, x)


def test_prune_target_vmapped_mixed_seeds_matches_reference():
    """One seed's target needs pruning (more non-zeros than k), the other's does not; -0.0 kept."""
    online = {"k": jnp.array([[True, True, False, False, False], [True, True, True, False, False]])}
    target = {"k": jnp.array([[0.5, -2.0, 0.1, 0.0, 3.0], [0.0, -0.0, 0.7, 0.0, -0.2]])}
    new = jax.vmap(target_lib.prune_target)(target, online)
    old = jax.vmap(ref_prune_target)(target, online)
    _assert_bitwise_equal(new, old)
    np.testing.assert_array_equal(new["k"][0], [0.0, -2.0, 0.0, 0.0, 3.0])
