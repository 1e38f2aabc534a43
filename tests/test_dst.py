"""Per-network DST rules without an environment: final prune, GMP, skipped optimizer step, importance."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparse_rl_jax import dst, networks
from sparse_rl_jax.agents import common
from sparse_rl_jax.config import SparsityConfig, TopologyConfig
from sparse_rl_jax.sparsity import masks as mask_lib


def _net(rules, sparsity=0.8, mask_init="random"):
    module = networks.MLP((32, 32, 4))
    opt = common.make_optimizer(1e-2)
    net = common.build_net(jax.random.PRNGKey(0), module, (jnp.zeros((1, 8)),), sparsity, True,
                           SparsityConfig(mask_init=mask_init), rules, opt, with_target=True)
    return module, net, opt


def _grads(module, net):
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 8))
    return jax.grad(lambda p: jnp.sum(module.apply(p, x) ** 2))(net.params)


def _counts(masks):
    return [int(m.sum()) for m in jax.tree.leaves(masks)]


def test_final_prune_only_drops_exactly_and_does_not_grow():
    topo = TopologyConfig(kind="dst", drop="signed_magnitude", grow="random", period=10, start=1,
                          stop=0.5, drop_fraction=0.2, final_prune_only=True)
    rules = dst.rules_from_config(topo, total_clock=100)
    module, net, opt = _net(rules)
    before = _counts(net.masks)
    new, info = dst.apply_gradients(net, _grads(module, net), jnp.int32(50), rules, opt)
    assert int(info["topology_updates"]) == 1
    assert _counts(new.masks) == [b - int(np.round(0.2 * b)) for b in before]
    for m_new, m_old in zip(jax.tree.leaves(new.masks), jax.tree.leaves(net.masks)):
        assert not np.any(np.asarray(m_new & ~m_old)), "a prune-only update must not grow"


def test_drop_grow_keeps_counts_and_skips_optimizer_step():
    topo = TopologyConfig(kind="dst", period=10, start=1, drop_fraction=0.5, decay="cosine",
                          skip_optimizer_step=True)
    rules = dst.rules_from_config(topo, total_clock=100)
    module, net, opt = _net(rules, mask_init="magnitude")
    new, info = dst.apply_gradients(net, _grads(module, net), jnp.int32(10), rules, opt)
    assert _counts(new.masks) == _counts(net.masks)
    assert float(info["mask_change"]) > 0
    # skipped step: surviving weights unchanged, dropped ones zero, grown ones start at 0
    def check(m, w_new, w_old):
        np.testing.assert_array_equal(np.asarray(w_new), np.where(np.asarray(m), np.asarray(w_old), 0.0))

    mask_lib.map_sparse(check, new.masks, new.params, net.params)
    # an ordinary step moves the weights and keeps the masks
    plain, info = dst.apply_gradients(net, _grads(module, net), jnp.int32(11), rules, opt)
    assert int(info["topology_updates"]) == 0
    assert _counts(plain.masks) == _counts(net.masks)


def test_gmp_prunes_towards_schedule():
    topo = TopologyConfig(kind="gmp", period=10, gmp_begin=0.2, gmp_end=0.8)
    rules = dst.rules_from_config(topo, total_clock=100)
    module, net, opt = _net(rules, sparsity=0.9)
    sizes = [m.size for m in jax.tree.leaves(net.masks)]
    assert _counts(net.masks) == sizes, "GMP starts dense"
    end, _ = dst.apply_gradients(net, _grads(module, net), jnp.int32(80), rules, opt)
    dens = [float(d) for d in jax.tree.leaves(net.densities)]
    assert _counts(end.masks) == [int(np.round(d * s)) for d, s in zip(dens, sizes)]


def test_importance_is_updated_every_step_and_reset_moments():
    topo = TopologyConfig(kind="dst", drop="importance", grow="importance", period=10, start=1,
                          drop_fraction=0.3, reset_moments=True, importance_horizon=10)
    rules = dst.rules_from_config(topo, total_clock=100)
    module, net, opt = _net(rules)
    g = _grads(module, net)
    one, _ = dst.apply_gradients(net, g, jnp.int32(3), rules, opt)
    sal = jax.tree.leaves(one.importance.saliency)[0]
    assert float(jnp.sum(sal)) > 0
    two, _ = dst.apply_gradients(one, g, jnp.int32(10), rules, opt)
    grown = mask_lib.map_sparse(lambda n, o: n & ~o, two.masks, one.masks)
    adam = two.opt_state[0]
    assert sum(int(g.sum()) for g in jax.tree.leaves(grown)) > 0

    def check(g, mu, nu):
        assert np.all(np.asarray(mu)[np.asarray(g)] == 0) and np.all(np.asarray(nu)[np.asarray(g)] == 0)

    mask_lib.map_sparse(check, grown, adam.mu, adam.nu)
