"""What each paper promises of each network, checked through a real agent's updates (TD3 and SAC).

For every method with a topology, on both backbones (MLP and SimBa's residual blocks): both the actor and
the critic change topology, as many times as the
method's schedule implies for that network (counted here independently, from the grid and the network's
own update count), with masks that really changed; GMP's networks end at their target sparsity. These
are the checks that would have caught the TD3 actor that never evolved (its events were on a clock it
never matched). The agent is driven directly (random replay windows, no environment) so each case costs
one small compile.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_rl_jax import agents, dst, replay, trainer
from sparse_rl_jax.sparsity import masks as mask_lib
from sparse_rl_jax.sparsity import schedules
from tests.conftest import tiny_config

OBS, ACT, BATCH, SEEDS = 5, 2, 16, 2
TOTAL = 120  # critic updates of the run (one env, one update per env step, no warm-up)
SCHEDULE = {"topology.period": 20, "topology.stop": 0.8, "replay.nstep_delay": 60}


SIMBA = {"agent.actor_backbone": "simba", "agent.critic_backbone": "simba", "agent.hidden": (16,)}


def _config(method, algo, backbone="mlp", **extra):
    if backbone == "simba":  # one residual block of width 16: kernels 16, 64, 16 and the head
        extra = {**SIMBA, **extra}
    if method.startswith("ds"):  # DS's lambdas are for 256-wide layers; at width 16 they mean ~50% too
        extra = {"sparsity.er_lambdas": (1.5, 4.0) if backbone == "mlp" else (1.5, 4.0, 4.0), **extra}
    return tiny_config(method, algo, **{
        "env.num_envs": 1, "total_env_steps": TOTAL, "warmup_env_steps": 0, "eval_every": TOTAL,
        "agent.batch_size": BATCH, **SCHEDULE, **extra})


def _windows(key, steps, n):
    k = jax.random.split(key, 3)
    return replay.Window(
        obs=jax.random.normal(k[0], (steps, BATCH, OBS)),
        action=jax.random.uniform(k[1], (steps, BATCH, ACT), minval=-1, maxval=1),
        rewards=jax.random.normal(k[2], (steps, BATCH, n)),
        terminals=jnp.zeros((steps, BATCH, n), bool), truncated=jnp.zeros((steps, BATCH, n), bool),
        next_obs=jax.random.normal(k[0], (steps, BATCH, n, OBS)) + 0.1,
        valid=jnp.ones((steps, BATCH, n), bool))


def run_agent(config, steps=TOTAL, per_step=False):
    """``steps`` updates of 2 vmapped seeds; returns (agent, initial states, final states, info summed
    over the updates, or stacked per update with ``per_step``)."""
    agent = trainer.make_agent(config, OBS, ACT, batch_axes=(trainer.SEED_BATCH,))
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    init = jax.jit(jax.vmap(lambda k: agent.init(k, config.sparsity.actor, config.sparsity.critic)))(keys)
    n = max(config.replay.nstep, 1)
    windows = _windows(jax.random.PRNGKey(1), steps, n)
    rc = config.replay

    @jax.jit
    def run(states):
        def body(states, x):
            step, window = x
            n_active = jnp.where(step >= rc.nstep_delay, rc.nstep, 1)
            update = jax.vmap(lambda s, k: agent.update(s, window, step, n_active, k),
                              axis_name=trainer.SEED_BATCH)
            keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(2), step * 7 + i))(jnp.arange(SEEDS))
            return update(states, keys)

        states, infos = jax.lax.scan(body, states, (jnp.arange(steps), windows))
        return states, infos if per_step else jax.tree.map(lambda x: jnp.sum(x, 0), infos)

    final, info = run(init)
    return agent, init, final, info


def expected_events(period, start, stop, final_prune, scale, own_updates):
    """Grid points ``start + j * period <= stop`` (plus the first after it when DS's final prune is on)
    that the network's updates ``u * scale`` have reached, written out without the schedule's code."""
    points = list(range(start, stop + 1, period))
    if final_prune:
        points.append(points[-1] + period if points else start)
    reached = own_updates * scale
    return sum(1 for p in points if p <= reached)


DYNAMIC = ["ds", "rigl", "rlx2", "ds+importance", "rigl+importance", "rlx2+importance"]


# SimBa bodies: every dynamic method once, the algorithms in turn (the agents' updates do not depend on the
# body; the methods see its kernels)
SIMBA_CASES = [(m, a, "simba") for m, a in zip(DYNAMIC, ["td3", "sac", "ddpg", "sac", "ddpg", "td3"])]


@pytest.mark.parametrize("method,algo,backbone",
                         [(m, a, "mlp") for m in DYNAMIC for a in agents.names()] + SIMBA_CASES)
def test_both_networks_evolve_as_scheduled(method, algo, backbone):
    config = _config(method, algo, backbone)
    agent, init, final, info = run_agent(config)
    t = config.topology
    delay = agent.actor_interval
    assert delay == {"td3": 2, "sac": 1, "ddpg": 1}[algo]
    own = {"critic": TOTAL, "actor": TOTAL // delay}
    for name, scale in (("critic", 1), ("actor", delay if t.actor_clock == "critic_updates" else 1)):
        assert int(np.asarray(getattr(final, name).updates)[0]) == own[name], name
        clock_total = own[name] * scale
        stop = min(int(t.stop * clock_total), clock_total - t.stop_margin)
        want = expected_events(t.period, t.start or t.period, stop, t.final_prune_only, scale, own[name])
        got = np.asarray(info[f"{name}_topology_events"])
        assert want >= 2, "the case must be long enough to schedule several events"
        assert np.all(got == want), f"{method}/{algo} {name}: {got} events, schedule implies {want}"
        changed = [np.any(np.asarray(a) != np.asarray(b)) for a, b in
                   zip(jax.tree.leaves(getattr(init, name).masks), jax.tree.leaves(getattr(final, name).masks))]
        # every hidden layer moves (a 1-unit output layer with a handful of weights may keep its set)
        assert changed and sum(changed) >= len(changed) - 2 and changed[0], f"{method}/{algo} {name}: {changed}"
        # the reported change (grown / active, summed over events) is positive and never above the
        # scheduled drop fractions of the drop/grow events (a regrown just-dropped connection is no change)
        method_obj = getattr(agent, f"{name}_method")
        every = jnp.arange(1, own[name] + 1)
        grow_events = np.asarray(method_obj.schedule.event(every)) == schedules.DROP_GROW
        bound = float(np.sum(np.broadcast_to(np.asarray(method_obj.schedule.fraction(every)), every.shape)
                             [grow_events]))
        # ... plus what rounding each layer's count to a whole connection adds: k = round(fraction * active)
        # is at most half a connection above, so one event reports at most fraction + layers / (2 active)
        final_masks = [np.asarray(m)[0] for m in jax.tree.leaves(getattr(final, name).masks)]
        slack = int(np.sum(grow_events)) * len(final_masks) / (2 * sum(int(m.sum()) for m in final_masks))
        reported = float(np.asarray(info[f"{name}_mask_change"])[0])
        assert 0 < reported <= bound + slack + 1e-5, f"{method}/{algo} {name}: {reported} of at most {bound}"
        check_exact(jax.tree.map(lambda x: x[0], getattr(final, name)), t, own[name], getattr(agent, f"{name}_method"))


def check_exact(net, topo, own_updates, method):
    """Exact counts after every event (DS's final prune: one drop of the scheduled fraction), weights
    exactly 0 outside the masks, targets per the method's policy (shared masks or at most k non-zeros)."""
    pruned = topo.final_prune_only and int(method.schedule.events_upto(own_updates)) == method.schedule.num_events
    targets = jax.tree.leaves(net.target) if net.target is not None else [None] * len(jax.tree.leaves(net.params))
    floors = iter(np.asarray(net.target_floor))
    if method.target_masks == "share" or net.target is None:
        assert not np.asarray(net.target_floor).any()  # only DS's prune keeps a floor
    elif any(m is not None for m in jax.tree.leaves(net.masks, is_leaf=lambda x: x is None)):
        assert (np.asarray(net.target_floor) > 0).any()  # the prunes ran and handed on their floors
    for mask, density, w, tgt in zip(jax.tree.leaves(net.masks, is_leaf=lambda x: x is None),
                                     jax.tree.leaves(net.densities, is_leaf=lambda x: x is None),
                                     jax.tree.leaves(net.params), targets):
        if mask is None:
            continue
        mask, w = np.asarray(mask), np.asarray(w)
        budget = int(np.round(np.float32(density) * np.float32(mask.size)))
        if pruned:
            budget -= int(np.round(np.float32(topo.drop_fraction) * np.float32(budget)))
        assert mask.sum() == budget
        assert np.all(w[~mask] == 0.0)
        if tgt is not None:
            tgt = np.asarray(tgt)
            if method.target_masks == "share":
                assert np.all(tgt[~mask] == 0.0)
            else:  # the last prune's floor is at or below every weight it kept
                assert np.all(np.abs(tgt[tgt != 0]) >= next(floors))
            assert np.count_nonzero(tgt) <= mask.sum()


def test_ds_td3_actor_follows_the_critic_clock():
    """DS's code: one schedule on the iteration counter; the actor fires on its first update at or
    after each event of the critic (iterations 2, 22, ...), i.e. at half as many of its own updates."""
    config = _config("ds", "td3")
    agent = trainer.make_agent(config, OBS, ACT)
    a, c = agent.actor_method.schedule, agent.critic_method.schedule
    critic_events = [u for u in range(1, TOTAL + 1) if int(c.event(u)) != 0]
    actor_events = [u for u in range(1, TOTAL // 2 + 1) if int(a.event(u)) != 0]
    assert critic_events[:2] == [2, 22]
    assert [2 * u for u in actor_events] == [-(-x // 2) * 2 for x in critic_events]


@pytest.mark.parametrize("algo,backbone", [(a, "mlp") for a in agents.names()] + [("sac", "simba")])
def test_gmp_networks_reach_their_target_sparsity(algo, backbone):
    config = _config("gmp", algo, backbone, **{"topology.period": 10, "topology.gmp_begin": 0.2,
                                               "topology.gmp_end": 0.8})
    _, init, final, info = run_agent(config)
    for name in ("actor", "critic"):
        assert float(jax.vmap(dst.kernel_sparsity)(getattr(init, name))[0]) == 0.0, "GMP starts dense"
        net = jax.tree.map(lambda x: x[0], getattr(final, name))
        for mask, density in zip(jax.tree.leaves(net.masks), jax.tree.leaves(net.densities)):
            assert int(np.asarray(mask).sum()) == int(np.round(float(density) * mask.size)), name
        target = getattr(config.sparsity, name)
        assert abs(float(dst.kernel_sparsity(net)) - target) < 0.03, name
        assert int(np.asarray(info[f"{name}_topology_events"])[0]) >= 4


def test_static_masks_never_change():
    config = _config("static", "td3")
    _, init, final, info = run_agent(config, steps=40)
    for name in ("actor", "critic"):
        assert int(np.asarray(info[f"{name}_topology_events"]).sum()) == 0
        for a, b in zip(jax.tree.leaves(getattr(init, name).masks), jax.tree.leaves(getattr(final, name).masks)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_td3_actor_updates_after_every_policy_delay_critic_updates():
    """Fujimoto's code: the actor and both targets update when the 1-based update count is a multiple
    of policy_delay (updates 3, 6 for delay 3); the critic at every update."""
    config = _config("dense", "td3", **{"agent.policy_delay": 3})
    agent, init, final, info = run_agent(config, steps=7, per_step=True)
    assert int(np.asarray(final.actor.updates)[0]) == 2 and int(np.asarray(final.critic.updates)[0]) == 7
    np.testing.assert_array_equal(np.asarray(info["actor_updates"])[:, 0], [0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(np.asarray(info["critic_updates"])[:, 0], [1] * 7)
    assert np.all(np.asarray(info["actor_loss"])[[0, 1, 3, 4, 6]] == 0)
    assert np.all(np.asarray(info["actor_loss"])[[2, 5]] != 0)


def test_rlx2_critic_grows_where_the_dense_critic_gradient_is_largest():
    """Inside a real TD3 update on an event step: the grown critic connections are the inactive ones
    with the largest |dense gradient of the critic loss| (computed here by hand with jax.grad)."""
    config = _config("rlx2", "td3", **{"topology.period": 3, "replay.nstep": 1})
    agent = trainer.make_agent(config, OBS, ACT)
    state = jax.jit(lambda k: agent.init(k, config.sparsity.actor, config.sparsity.critic))(jax.random.PRNGKey(0))
    window = jax.tree.map(lambda x: x[0], _windows(jax.random.PRNGKey(1), 1, 1))
    state = state.replace(critic=state.critic.replace(updates=jnp.int32(2)))  # the next update is #3
    key = jax.random.PRNGKey(5)
    grads, _ = jax.grad(agent.critic_loss, has_aux=True)(state.critic.params, state, window, 1, key)
    new, info = jax.jit(lambda s: agent.update(s, window, jnp.int32(2), jnp.int32(1), key))(state)
    assert int(info["critic_topology_events"]) == 1
    fraction = float(agent.critic_method.schedule.fraction(3))

    def check(old, m_new, g):
        old, m_new, g = np.asarray(old), np.asarray(m_new), np.abs(np.asarray(g))
        k = int(np.round(fraction * old.sum()))
        grown = m_new & ~old
        assert grown.sum() > 0
        # every grown entry scores at least as high as every inactive entry left out
        left_out = ~m_new & ~old
        if left_out.any():
            assert g[grown].min() >= g[left_out].max() - 1e-7
        assert m_new.sum() == old.sum() and grown.sum() <= k

    mask_lib.map_sparse(check, state.critic.masks, new.critic.masks, grads)


def test_sac_intermediate_entropy_pass_runs_only_with_nstep_targets():
    """RLx2-SAC's actor pass over the n-1 intermediate states is a real branch on n_active > 1 (under
    the seed vmap too): with 1-step targets it is skipped and the target is the plain soft target."""
    config = _config("rlx2", "sac", **{"replay.nstep": 3})
    agent = trainer.make_agent(config, OBS, ACT, batch_axes=(trainer.SEED_BATCH,))
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    states = jax.vmap(lambda k: agent.init(k, 0.9, 0.8))(keys)
    window = jax.tree.map(lambda x: x[0], _windows(jax.random.PRNGKey(1), 1, 3))
    key = jax.random.PRNGKey(3)

    def target(s, n_active):
        return agent.soft_target(s, window, n_active, key)

    jaxpr = str(jax.make_jaxpr(jax.vmap(target, in_axes=(0, None)))(states, jnp.int32(1)))
    assert jaxpr.count("cond[") == 1, "the bonus must be a branch, not computed and selected"
    one = jax.jit(jax.vmap(target, in_axes=(0, None)))(states, jnp.int32(1))
    three = jax.jit(jax.vmap(target, in_axes=(0, None)))(states, jnp.int32(3))
    # 1-step: r_0 + gamma * (min Q' - alpha log pi) at next_obs[0], no intermediate bonus
    s0 = jax.tree.map(lambda x: x[0], states)
    parts_boot = window.next_obs[:, 0]
    boot_key, _ = jax.random.split(key)
    a, logp = agent.sample(s0.actor.params, parts_boot, boot_key)
    q = jnp.minimum(*agent.critic_module.apply(s0.critic.target, parts_boot, a))
    ref = window.rewards[:, 0] + config.agent.gamma * (q - jnp.exp(s0.log_alpha) * logp)
    np.testing.assert_allclose(np.asarray(one[0]), np.asarray(ref), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(one), np.asarray(three))
