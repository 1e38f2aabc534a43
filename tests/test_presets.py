"""Paper presets against ALGORITHMS.md's numbers, and DS's ER densities from the lambda formula."""
import jax
import numpy as np
import pytest

import sparse_rl_jax as srj
from sparse_rl_jax import methods, presets, trainer, validation

# ALGORITHMS.md: RLx2 Table 2 (actor, critic) and DS's (lambda1, lambda2).
RLX2 = {"td3": {"halfcheetah": (0.90, 0.85), "hopper": (0.98, 0.95), "walker2d": (0.97, 0.95), "ant": (0.96, 0.88)},
        "sac": {"halfcheetah": (0.90, 0.80), "hopper": (0.98, 0.95), "walker2d": (0.90, 0.90), "ant": (0.90, 0.75)}}
DS = {"td3": {"halfcheetah": (7, 64), "hopper": (7, 64), "walker2d": (7, 64), "ant": (40, 64)},
      "sac": {"halfcheetah": (12, 80), "walker2d": (12, 80), "hopper": (7, 20), "ant": (30, 64)}}


@pytest.mark.parametrize("algo", ["td3", "sac"])
@pytest.mark.parametrize("task", presets.TASKS)
def test_rlx2_paper_preset(task, algo):
    c = srj.make_config("rlx2", algo, task)
    assert (c.sparsity.actor, c.sparsity.critic) == RLX2[algo][task]
    assert c.env.name == task and c.total_env_steps == 3_000_000
    assert c.sparsity.distribution == "erk" and not c.sparsity.dense_output and c.sparsity.mask_init == "magnitude"
    t, r = c.topology, c.replay
    assert (t.period, t.drop_fraction, t.decay, t.stop, t.skip_optimizer_step, t.target_masks) == (
        10_000, 0.5, "cosine", 1.0, True, "share")
    assert t.actor_clock == "actor_updates"
    assert (r.nstep, r.nstep_delay, r.dynamic, r.check_every, r.distance_threshold, r.shrink_fraction) == (
        3, 300_000, True, 10_000, 0.2, 0.1)
    assert c.oldest_transitions == 8 * c.agent.batch_size == 2048
    assert (r.min_size, r.capacity) == ((100_000, 1_000_000) if algo == "td3" else (200_000, 3_000_000))
    assert c.warmup_env_steps == (25_000 if algo == "td3" else 5_000)
    assert (c.agent.batch_size, c.agent.actor_lr, c.agent.critic_lr, c.agent.gamma, c.agent.tau) == (
        256, 3e-4, 3e-4, 0.99, 0.005)
    assert c.env.eval_episodes == 10 and c.eval_every == 5_000
    validation.check_ranges(c)


@pytest.mark.parametrize("algo", ["td3", "sac"])
@pytest.mark.parametrize("task", presets.TASKS)
def test_ds_paper_preset(task, algo):
    c = srj.make_config("ds", algo, task)
    assert c.sparsity.er_lambdas == DS[algo][task] and c.sparsity.distribution == "er"
    assert c.sparsity.dense_output and (c.sparsity.actor, c.sparsity.critic) == (0.0, 0.0)
    t = c.topology
    assert (t.period, t.start, t.stop_margin, t.final_prune_only, t.decay, t.target_masks) == (
        1000, 2, 50_000, True, "constant", "prune")
    assert t.drop_fraction == (0.05 if algo == "td3" else 0.1)
    assert t.actor_clock == "critic_updates"  # one schedule on the iteration counter (DS_TD3.py)
    assert c.total_env_steps == 1_000_000
    assert c.agent.weight_decay_mode == "coupled" and not c.agent.mask_gradients
    if algo == "td3":  # DS's runs: Adam 1e-3, weight decay 2e-4, batch 100, 25k warm-up
        assert (c.agent.actor_lr, c.agent.critic_lr, c.agent.weight_decay, c.agent.batch_size) == (
            1e-3, 1e-3, 2e-4, 100)
        assert c.warmup_env_steps == 25_000


def test_td3_paper_settings_and_other_methods():
    for method in ("dense", "static", "rigl", "gmp"):
        c = srj.make_config(method, "td3", "hopper")
        assert c.warmup_env_steps == 25_000
        a = c.agent
        assert (a.policy_delay, a.policy_noise, a.noise_clip, a.exploration_noise) == (2, 0.2, 0.5, 0.1)
        if method != "dense":
            assert (c.sparsity.actor, c.sparsity.critic) == RLX2["td3"]["hopper"]
    g = srj.make_config("gmp", "sac")
    assert (g.topology.gmp_begin, g.topology.gmp_end, g.topology.period) == (0.2, 0.8, 1000)


def test_without_a_task_the_demo_defaults_stay():
    c = srj.make_config("rlx2", "td3")
    assert c.env.name == "inverted_pendulum" and c.total_env_steps == 30_000
    with pytest.raises(ValueError, match="unknown task 'pong'"):
        srj.make_config("rlx2", "td3", "pong")


def test_importance_horizon_follows_each_networks_period():
    c = srj.make_config("rlx2+importance", "td3", task="halfcheetah")
    agent = trainer.make_agent(c, 17, 6)
    assert agent.critic_method.importance.horizon == 10_000  # its own period, in its own updates
    assert agent.actor_method.importance.horizon == 10_000  # RLx2's actor counts its own updates
    ds = trainer.make_agent(srj.make_config("ds+importance", "td3", task="halfcheetah"), 17, 6)
    assert ds.critic_method.importance.horizon == 1000
    assert ds.actor_method.importance.horizon == 500  # DS's actor: 1000 critic updates = 500 of its own


@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_set_is_rlx2s_baseline_on_rlx2s_schedule(algo):
    """SET as RLx2 ran it: RLx2's topology and masks with SET's scores, without RLx2's value learning."""
    sset, rlx2 = (presets.make_config(m, algo, "walker2d") for m in ("set", "rlx2"))
    assert methods.REGISTRY["set"].cls is methods.SET
    assert sset.topology == rlx2.topology and sset.sparsity == rlx2.sparsity
    assert (sset.replay.nstep, sset.replay.dynamic) == (1, False) and rlx2.replay.nstep == 3


def test_registry_names_written_once():
    assert set(methods.REGISTRY) == {"dense", "static", "ds", "set", "rigl", "rlx2", "gmp"}
    names = methods.method_names()
    assert {"ds+importance", "rigl+importance", "rlx2+importance", "gmp+importance"} <= set(names)
    assert "static+importance" not in names and "dense+importance" not in names
    for name in names:
        assert srj.make_config(name, "sac").method == name


def _er(lam, n_in, n_out):
    return min(1.0, lam * (n_in + n_out) / (n_in * n_out))


@pytest.mark.parametrize("task,obs,act", [("halfcheetah", 17, 6), ("hopper", 11, 3), ("ant", 27, 8)])
@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_ds_densities_per_layer_follow_the_er_formula(task, obs, act, algo):
    c = srj.make_config("ds", algo, task)
    l1, l2 = c.sparsity.er_lambdas
    agent = trainer.make_agent(c, obs, act)
    state = jax.jit(lambda k: agent.init(k, 0.0, 0.0))(jax.random.PRNGKey(0))
    a = state.actor.densities["params"]
    assert float(a["dense_0"]["kernel"]) == pytest.approx(_er(l1, obs, 256), rel=1e-6)
    assert float(a["dense_1"]["kernel"]) == pytest.approx(_er(l2, 256, 256), rel=1e-6)
    out = [k for k in a if k not in ("dense_0", "dense_1")]
    assert all(a[k]["kernel"] is None for k in out), "DS keeps output layers dense"
    for q in ("q1", "q2"):
        qd = state.critic.densities["params"][q]
        assert float(qd["dense_0"]["kernel"]) == pytest.approx(_er(l1, obs + act, 256), rel=1e-6)
        assert float(qd["dense_1"]["kernel"]) == pytest.approx(_er(l2, 256, 256), rel=1e-6)
        assert qd["dense_2"]["kernel"] is None
    first = float(a["dense_0"]["kernel"])
    if _er(l1, obs, 256) < 1.0:  # (Ant's lambda1 at 27 inputs is dense by the formula itself)
        assert first < 1.0, "the input layer is sparse too (ERK at 50% made it dense)"
    # exact-count masks at those densities
    mask = np.asarray(state.actor.masks["params"]["dense_0"]["kernel"])
    assert mask.sum() == int(np.round(np.float32(first) * np.float32(mask.size)))
    if task == "halfcheetah" and algo == "td3":
        assert first == pytest.approx(0.439, abs=0.001)  # the "about 44% dense"
