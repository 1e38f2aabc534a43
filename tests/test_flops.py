"""Tests for sparse_rl_jax.sparsity.flops: weight counts, pass model, RLx2 total size."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_rl_jax import agents, networks
from sparse_rl_jax.sparsity import flops

TD3, SAC, DDPG = (agents.get(a).flop_model for a in ("td3", "sac", "ddpg"))


def _shapes(obs_dim, act_dim, hidden):
    """Param shapes only (no allocation), as the report CLI uses them."""
    obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
    actor = jax.eval_shape(networks.DeterministicActor(act_dim, hidden).init, jax.random.key(0), obs)
    critic = jax.eval_shape(networks.TwinCritic(hidden).init, jax.random.key(0), obs, act)
    return actor, critic


def test_dense_td3_halfcheetah_weight_count():
    actor, critic = _shapes(17, 6, (256, 256))
    total = flops.network_count(actor).dense + flops.network_count(critic).dense
    assert total == 214_784
    assert flops.network_count(actor) == flops.Count(71_424, 71_424)


def test_layer_stats_skip_biases_and_use_exact_counts():
    actor, _ = _shapes(2, 1, (3,))
    densities = {"params": {"dense_0": {"kernel": 0.5, "bias": None}, "dense_1": {"kernel": None, "bias": None}}}
    stats = flops.layer_stats(actor, densities=densities)
    assert [s.path for s in stats] == ["dense_0/kernel", "dense_1/kernel"]
    assert [(s.shape, s.dense, s.active) for s in stats] == [((2, 3), 6, 3), ((3, 1), 3, 3)]
    assert stats[0].density == 0.5


def test_layer_stats_from_real_masks():
    params = {"a": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    masks = {"a": {"kernel": jnp.array([[True, False], [False, False]]), "bias": None}}
    assert flops.network_count(params, masks=masks) == flops.Count(1, 4)
    with pytest.raises(ValueError):
        flops.layer_stats(params, masks=masks, densities=masks)


# Tiny hand-computed case: actor 2 -> 3 -> 1 (9 weights), twin critic (2+1) -> 3 -> 1 per Q (12 each, 24).
ACTOR = flops.Count(5, 9)
CRITIC = flops.Count(16, 24)


def test_tiny_network_counts():
    actor, critic = _shapes(2, 1, (3,))
    assert flops.network_count(actor).dense == ACTOR.dense
    assert flops.network_count(critic).dense == CRITIC.dense


def test_td3_train_flops_hand_computed():
    # target actor 5 + target critic 16 + critic fwd/bwd 3*16 + actor update (3*5 + 3*Q1) / 2, where
    # TD3's actor loss runs Q1 only (default: half the twin critic; 6 of the 16 here, 12 of 24 dense)
    q1 = flops.Count(6, 12)
    out = flops.train_flops(TD3, ACTOR, CRITIC, critic_q1=q1, batch_size=2)
    assert out.sparse == 2 * (5 + 16 + 48 + (15 + 3 * 6) / 2)
    assert out.dense == 2 * (9 + 24 + 72 + (27 + 36) / 2)
    assert 0 < out.fraction < 1
    assert flops.train_flops(TD3, ACTOR, CRITIC).sparse == 5 + 16 + 48 + (15 + 24) / 2


NETS = {"actor": ACTOR, "actor_target": ACTOR, "critic": CRITIC, "critic_target": CRITIC,
        "critic_q1": flops.Count(6, 12)}


def test_period_flops_count_each_pass_by_hand():
    # 10 critic updates, 5 actor updates (TD3), batch 1
    out = flops.period_flops(TD3, NETS, critic_updates=10, actor_updates=5)
    assert out.sparse == 10 * (5 + 16 + 3 * 16) + 5 * (3 * 5 + 3 * 6)
    assert out.dense == 10 * (9 + 24 + 3 * 24) + 5 * (3 * 9 + 3 * 12)
    # importance: the weight gradient is dense at every update of each network: + (f_D - f_S) each
    imp = flops.period_flops(TD3, NETS, critic_updates=10, actor_updates=5,
                             dense_grad_updates={"critic": 10, "actor": 5})
    assert imp.sparse == out.sparse + 10 * (24 - 16) + 5 * (9 - 5) and imp.dense == out.dense
    # RigL: only on event steps (2 critic events, 1 actor event here)
    rigl = flops.period_flops(TD3, NETS, critic_updates=10, actor_updates=5,
                              dense_grad_updates={"critic": 2, "actor": 1})
    assert rigl.sparse == out.sparse + 2 * 8 + 1 * 4


def test_period_flops_sac_counts_the_nstep_actor_pass_only_while_on():
    base = flops.period_flops(SAC, NETS, critic_updates=10, actor_updates=10)
    # SAC: next action (online actor) + target Q + critic 3x, actor update 3*actor + 3*both Qs
    assert base.sparse == 10 * (5 + 16 + 48) + 10 * (15 + 48)
    on = flops.period_flops(SAC, NETS, critic_updates=10, actor_updates=10, nstep_updates=4, nstep=3)
    assert on.sparse == base.sparse + 4 * (3 - 1) * 5  # n - 1 intermediate states, actor forward
    assert on.dense == base.dense  # the dense baseline uses 1-step targets


def test_period_flops_of_a_dense_phase_equal_dense():
    """GMP's first 20%: masks full, so its training costs exactly the dense agent's."""
    full = {k: flops.Count(v.dense, v.dense) for k, v in NETS.items()}
    out = flops.period_flops(TD3, full, critic_updates=10, actor_updates=5)
    assert out.sparse == out.dense


def test_sac_train_flops_hand_computed():
    # online actor fwd on next obs 5 + target critic 16 + critic 3*16 + actor update every step 3*5 + 3*16
    out = flops.train_flops(SAC, ACTOR, CRITIC)
    assert out == flops.Count(5 + 16 + 48 + 15 + 48, 9 + 24 + 72 + 27 + 72)


def test_topology_update_amortised_dense_gradient():
    base = flops.train_flops(TD3, ACTOR, CRITIC)
    out = flops.train_flops(TD3, ACTOR, CRITIC, topology_period=10)
    # critic every 10 iterations, actor every 10 actor updates = 20 iterations
    assert out.sparse == pytest.approx(base.sparse + (24 - 16) / 10 + (9 - 5) / 20)
    assert out.dense == base.dense


def test_dense_fraction_is_one_and_inference_is_actor_density():
    assert flops.train_flops(TD3, flops.Count(9, 9), flops.Count(24, 24)).fraction == 1.0
    assert flops.inference_flops(ACTOR).fraction == 5 / 9


def test_total_size_hand_computed():
    assert flops.total_size(TD3, ACTOR, CRITIC) == flops.Count(2 * 5 + 2 * 16, 2 * 9 + 2 * 24)
    assert flops.total_size(SAC, ACTOR, CRITIC) == flops.Count(5 + 2 * 16, 9 + 2 * 24)
    pruned_target = flops.Count(14, 24)
    assert flops.total_size(SAC, ACTOR, CRITIC, critic_target=pruned_target).sparse == 5 + 16 + 14


def test_pass_model_rejects_bad_input():
    with pytest.raises(ValueError):
        flops.train_passes(TD3, policy_delay=0)
    assert np.isclose(sum(p.units for p in flops.train_passes(TD3) if p.network == "actor"), 1.5)


def test_ddpg_pass_model_is_td3_with_one_q_and_no_delay():
    """DDPG: every critic update also updates the actor; its single critic is the whole critic."""
    single = flops.Count(8, 12)  # a one-Q critic
    out = flops.train_flops(DDPG, ACTOR, single)
    # actor target fwd + critic target fwd + critic fwd/bwd + actor update (actor 3, critic 3) each update
    assert out.sparse == 5 + 8 + 3 * 8 + 3 * 5 + 3 * 8
    assert flops.total_size(DDPG, ACTOR, single) == flops.Count(2 * 5 + 2 * 8, 2 * 9 + 2 * 12)
    assert all(p.network != "critic_q1" for p in DDPG.passes)
