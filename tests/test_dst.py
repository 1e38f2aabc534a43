"""One network under each method, without an environment: events from its own counter, final prune by
the method's drop score, GMP, skipped optimizer step, importance updated at every step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_rl_jax import dst, methods, networks
from sparse_rl_jax.agents import common
from sparse_rl_jax.config import SparsityConfig, TopologyConfig
from sparse_rl_jax.sparsity import masks as mask_lib
from sparse_rl_jax.sparsity import scores as score_lib


LR = 1e-2
_apply = jax.jit(lambda net, grads, method, opt: dst.apply_gradients(net, grads, method, opt, learning_rate=LR),
                 static_argnums=(2, 3))


def _net(method, sparsity=0.8, mask_init="random"):
    module = networks.MLP((32, 32, 4))
    opt = common.make_optimizer()
    net = common.build_net(jax.random.PRNGKey(0), module, (jnp.zeros((1, 8)),), sparsity, True,
                           SparsityConfig(mask_init=mask_init), method, opt, with_target=True)
    return module, net, opt


def _grads(module, net, seed=1):
    x = jax.random.normal(jax.random.PRNGKey(seed), (16, 8))
    return jax.grad(lambda p: jnp.sum(module.apply(p, x) ** 2))(net.params)


def _counts(masks):
    return [int(m.sum()) for m in jax.tree.leaves(masks)]


def _at_update(net, n):
    """The network as if it had made ``n`` updates (its own counter is what every schedule reads)."""
    return net.replace(updates=jnp.int32(n))


def test_final_prune_drops_by_the_methods_drop_score_and_does_not_grow():
    """DS's last event: the first after the stop; it drops per sign (SET's score), never grows."""
    topo = TopologyConfig(period=10, start=1, stop=0.5, drop_fraction=0.2, final_prune_only=True)
    method = methods.for_network("ds", topo, total_updates=100)
    module, net, opt = _net(method)
    # events at 1, 11, ..., 41 (<= 50); the first after the stop (51) only drops
    assert int(method.event(41)) == 1 and int(method.event(51)) == 2 and int(method.event(61)) == 0
    before = _counts(net.masks)
    new, info = _apply(_at_update(net, 50), _grads(module, net), method, opt)
    assert int(info["topology_events"]) == 1 and int(new.updates) == 51
    assert _counts(new.masks) == [b - int(np.round(0.2 * b)) for b in before]
    for m_new, m_old, w in zip(jax.tree.leaves(new.masks), jax.tree.leaves(net.masks),
                               jax.tree.leaves(mask_lib.map_sparse(lambda m, p: p, net.masks, net.params))):
        m_new, m_old, w = map(np.asarray, (m_new, m_old, w))
        assert not np.any(m_new & ~m_old), "a prune-only event must not grow"
        dropped = m_old & ~m_new
        # per sign: the dropped positives are the smallest positives, the dropped negatives the
        # negatives closest to zero (a pooled |w| prune would take them from one pool)
        for sign in (1, -1):
            group = m_old & (np.sign(w) == sign)
            if dropped[group].any() and (~dropped[group]).any():
                assert np.abs(w[group & dropped]).max() <= np.abs(w[group & ~dropped]).min()
            assert abs(dropped[group].sum() - 0.2 * group.sum()) <= 1.5


def test_final_prune_of_ds_importance_uses_importance():
    topo = TopologyConfig(period=10, start=1, stop=0.5, drop_fraction=0.2, final_prune_only=True,
                          importance_horizon=10)
    method = methods.for_network("ds+importance", topo, total_updates=100)
    module, net, opt = _net(method)
    # an importance state that ranks the other way round from |w|
    saliency = mask_lib.map_sparse(lambda m, w: 1.0 / (jnp.abs(w) + 1e-3), net.masks, net.params)
    net = net.replace(method_state=score_lib.ImportanceState(saliency, net.method_state.grad_ema))
    zero = jax.tree.map(jnp.zeros_like, net.params)  # no new gradient: the EMA keeps its ranking
    new, _ = _apply(_at_update(net, 50), zero, method, opt)
    for m_new, m_old, w in zip(jax.tree.leaves(new.masks), jax.tree.leaves(net.masks),
                               jax.tree.leaves(mask_lib.map_sparse(lambda m, p: p, net.masks, net.params))):
        m_new, m_old, w = map(np.asarray, (m_new, m_old, w))
        dropped = m_old & ~m_new
        assert np.abs(w[dropped]).min() >= np.abs(w[m_new]).max() - 1e-6, "importance, not |w|, decides"


def test_drop_grow_keeps_counts_and_skips_optimizer_step():
    topo = TopologyConfig(period=10, drop_fraction=0.5, decay="cosine", skip_optimizer_step=True)
    method = methods.for_network("rigl", topo, total_updates=100)
    module, net, opt = _net(method, mask_init="magnitude")
    new, info = _apply(_at_update(net, 9), _grads(module, net), method, opt)
    assert int(info["topology_events"]) == 1
    assert _counts(new.masks) == _counts(net.masks)
    assert float(info["mask_change"]) > 0

    # skipped step: surviving weights unchanged, dropped ones zero, grown ones start at 0
    def check(m, w_new, w_old):
        np.testing.assert_array_equal(np.asarray(w_new), np.where(np.asarray(m), np.asarray(w_old), 0.0))

    mask_lib.map_sparse(check, new.masks, new.params, net.params)
    # an ordinary step moves the weights and keeps the masks
    plain, info = _apply(_at_update(net, 10), _grads(module, net), method, opt)
    assert int(info["topology_events"]) == 0
    assert _counts(plain.masks) == _counts(net.masks)


def test_gmp_prunes_to_the_target_on_its_last_event():
    topo = TopologyConfig(period=10, gmp_begin=0.2, gmp_end=0.85)
    method = methods.for_network("gmp", topo, total_updates=100)
    module, net, opt = _net(method, sparsity=0.9)
    sizes = [m.size for m in jax.tree.leaves(net.masks)]
    assert _counts(net.masks) == sizes, "GMP starts dense"
    events = [u for u in range(1, 101) if int(method.event(u)) != 0]
    assert events == list(range(20, 81, 10)), "the ramp ends on the last grid point inside [20%, 85%]"
    g = _grads(module, net)
    counts = []
    for u in events:
        net, _ = _apply(_at_update(net, u - 1), g, method, opt)
        counts.append(sum(_counts(net.masks)))
    assert counts == sorted(counts, reverse=True) and counts[0] == sum(sizes)  # ramp starts at 0
    dens = [float(d) for d in jax.tree.leaves(net.densities)]
    assert _counts(net.masks) == [int(np.round(d * s)) for d, s in zip(dens, sizes)]


def test_importance_ema_follows_every_step_and_reset_moments():
    topo = TopologyConfig(period=10, drop_fraction=0.3, reset_moments=True, importance_horizon=10)
    method = methods.for_network("rigl+importance", topo, total_updates=100)
    assert method.importance.decay == pytest.approx(0.9)
    module, net, opt = _net(method)
    decay = method.importance.decay
    expected_sal = mask_lib.map_sparse(lambda m, p: jnp.zeros_like(p), net.masks, net.params)
    expected_ema = expected_sal
    for step in range(3):  # three plain updates: the EMAs match a hand recursion at every step
        g = _grads(module, net, seed=step + 1)
        expected_sal = mask_lib.map_sparse(lambda m, s, w, gg: decay * s + (1 - decay) * jnp.abs(w * gg),
                                           net.masks, expected_sal, net.params, g)
        expected_ema = mask_lib.map_sparse(lambda m, e, gg: decay * e + (1 - decay) * jnp.abs(gg),
                                           net.masks, expected_ema, g)
        net, info = _apply(net, g, method, opt)
        assert int(info["topology_events"]) == 0
        for a, b in zip(jax.tree.leaves(net.method_state.saliency), jax.tree.leaves(expected_sal)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)
        for a, b in zip(jax.tree.leaves(net.method_state.grad_ema), jax.tree.leaves(expected_ema)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)
    before = net
    two, _ = _apply(_at_update(net, 9), _grads(module, net), method, opt)
    grown = mask_lib.map_sparse(lambda n, o: n & ~o, two.masks, before.masks)
    adam = two.opt_state[0]
    assert sum(int(g.sum()) for g in jax.tree.leaves(grown)) > 0

    def check(g, mu, nu):
        assert np.all(np.asarray(mu)[np.asarray(g)] == 0) and np.all(np.asarray(nu)[np.asarray(g)] == 0)

    mask_lib.map_sparse(check, grown, adam.mu, adam.nu)


def test_events_are_agreed_over_a_vmap_axis_and_stay_a_branch():
    """Under vmap the counter is batched; the event is agreed with pmax so the switch is not a select."""
    topo = TopologyConfig(period=5)
    method = methods.for_network("rigl", topo, total_updates=100)
    module, net, opt = _net(method)
    nets = jax.tree.map(lambda x: jnp.stack([x, x]), net)
    g = jax.tree.map(lambda x: jnp.stack([x, x]), _grads(module, net))
    step = jax.vmap(lambda n, gg: dst.apply_gradients(n, gg, method, opt, ("b",), learning_rate=LR), axis_name="b")
    text = jax.jit(step).lower(nets, g).as_text()
    assert "case" in text or "conditional" in text
    out, info = jax.jit(step)(jax.tree.map(lambda x: x, nets).replace(updates=jnp.full((2,), 4, jnp.int32)), g)
    assert list(np.asarray(info["topology_events"])) == [1, 1]
