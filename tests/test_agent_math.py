"""Agent arithmetic against independent references: tanh-Gaussian log-density, log-std bounds, the SAC
temperature step and target entropy, TD3's clipped target policy noise. Tiny networks, no training."""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sparse_rl_jax import methods, networks, replay
from sparse_rl_jax.agents.sac import SAC
from sparse_rl_jax.agents.td3 import TD3
from sparse_rl_jax.config import AgentConfig, SparsityConfig

OBS, ACT, HIDDEN, B = 3, 2, (8, 8), 8
DOC_LOG_STD_BOUNDS = (-5.0, 2.0)  # ALGORITHMS.md: "log-std bounded to [-5, 2]"


def _agent(cls, **cfg):
    """Dense agent (fixed masks at zero sparsity) with tiny networks."""
    return cls(obs_dim=OBS, action_dim=ACT, cfg=AgentConfig(hidden=HIDDEN, **cfg), sparsity=SparsityConfig(),
               actor_method=methods.Static(), critic_method=methods.Static())


def _window(key, terminals=None):
    """One-step window ([B, 1]) with random states and rewards."""
    k_obs, k_act, k_next, k_rew = jax.random.split(key, 4)
    terminals = np.zeros((B, 1), bool) if terminals is None else np.asarray(terminals, bool).reshape(B, 1)
    return replay.Window(
        obs=jax.random.normal(k_obs, (B, OBS)), action=jax.random.uniform(k_act, (B, ACT), minval=-1, maxval=1),
        rewards=jax.random.normal(k_rew, (B, 1)), terminals=jnp.asarray(terminals),
        truncated=jnp.zeros((B, 1), bool), next_obs=jax.random.normal(k_next, (B, 1, OBS)),
        valid=jnp.ones((B, 1), bool))


# ------------------------------------------------------------------ 1. tanh-Gaussian log-probability
def _reference_logp(a, mean, std):
    """float64 change of variables: log N(atanh a; mean, std) + log |d atanh(a)/da| (central difference)."""
    a, h = np.asarray(a, np.float64), 1e-6
    jacobian = (np.arctanh(a + h) - np.arctanh(a - h)) / (2 * h)
    return stats.norm.logpdf(np.arctanh(a), loc=mean, scale=std) + np.log(jacobian)


@pytest.mark.parametrize("mean,log_std", [(0.0, 0.0), (0.7, -1.0), (-1.2, 0.5), (0.3, -3.0)])
def test_squashed_logp_1d_matches_change_of_variables(mean, log_std):
    n = 4096
    action, logp = networks.squash_gaussian_sample(
        jax.random.PRNGKey(0), jnp.full((n, 1), mean), jnp.full((n, 1), log_std))
    chex.assert_shape(action, (n, 1))
    chex.assert_shape(logp, (n,))
    a = np.asarray(action[:, 0], np.float64)
    assert np.all(np.abs(a) <= 1.0)
    # float32 actions lose atanh precision right at +-1; the tails are covered by the integral test below
    inside = np.abs(a) < 0.999
    assert inside.mean() > 0.9
    np.testing.assert_allclose(np.asarray(logp)[inside], _reference_logp(a[inside], mean, np.exp(log_std)),
                               rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("mean,log_std", [(0.0, 0.0), (0.7, -1.0), (-0.5, -0.3), (0.2, -3.0)])
def test_squashed_density_integrates_to_one(monkeypatch, mean, log_std):
    """Choose the noise so the returned actions are a fine grid of a in (-1, 1); integrate exp(logp) da."""
    grid = np.linspace(-1.0, 1.0, 40001)[1:-1]
    z = (np.arctanh(grid) - mean) / np.exp(log_std)
    monkeypatch.setattr(jax.random, "normal",
                        lambda key, shape, dtype=jnp.float32: jnp.asarray(z, dtype).reshape(shape))
    action, logp = networks.squash_gaussian_sample(
        jax.random.PRNGKey(0), jnp.full((grid.size, 1), mean), jnp.full((grid.size, 1), log_std))
    np.testing.assert_allclose(np.asarray(action[:, 0]), grid, atol=1e-5)
    density = np.exp(np.asarray(logp, np.float64))
    integral = np.sum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))
    assert abs(integral - 1.0) < 1e-3, integral
    # and pointwise, away from the float32-resolution edge
    inside = np.abs(grid) < 0.999
    np.testing.assert_allclose(np.asarray(logp)[inside], _reference_logp(grid[inside], mean, np.exp(log_std)),
                               rtol=1e-4, atol=2e-4)


def test_squashed_logp_sums_over_action_dims():
    n = 2048
    mean = np.array([0.0, 0.7, -0.4], np.float32)
    log_std = np.array([0.0, -1.0, -0.5], np.float32)
    action, logp = networks.squash_gaussian_sample(
        jax.random.PRNGKey(3), jnp.tile(mean, (n, 1)), jnp.tile(log_std, (n, 1)))
    chex.assert_shape(action, (n, 3))
    chex.assert_shape(logp, (n,))
    a = np.asarray(action, np.float64)
    inside = np.all(np.abs(a) < 0.999, axis=1)
    assert inside.mean() > 0.9
    ref = sum(_reference_logp(a[:, j], mean[j], np.exp(log_std[j])) for j in range(3))
    np.testing.assert_allclose(np.asarray(logp)[inside], ref[inside], rtol=1e-4, atol=5e-4)


# ------------------------------------------------------------------ 2. log-std bounds
def _actor_params():
    actor = networks.GaussianActor(ACT, HIDDEN)
    return actor, actor.init(jax.random.PRNGKey(0), jnp.zeros((1, OBS)))


def test_log_std_respects_bounds_for_huge_weights_and_inputs():
    lo, hi = DOC_LOG_STD_BOUNDS
    actor, params = _actor_params()
    huge = jax.tree.map(lambda x: 1e3 * x, params)
    obs = 1e3 * jax.random.normal(jax.random.PRNGKey(1), (512, OBS))
    mean, log_std = actor.apply(huge, obs)
    chex.assert_shape([mean, log_std], (512, ACT))
    log_std = np.asarray(log_std)
    assert np.all(np.isfinite(log_std))
    assert np.all((log_std >= lo) & (log_std <= hi))
    # pre-activations of order 1e9: the soft clip saturates onto both bounds exactly
    assert np.isclose(log_std.min(), lo, atol=1e-6) and np.isclose(log_std.max(), hi, atol=1e-6)
    assert np.abs(np.asarray(mean)).max() > 1e3  # only log_std is bounded, the mean is not


def test_log_std_is_a_tanh_rescale_onto_the_bounds():
    """networks.py soft-clips: log_std = lo + (hi - lo) (tanh(raw) + 1) / 2, so raw 0 maps to the midpoint."""
    lo, hi = DOC_LOG_STD_BOUNDS
    actor, params = _actor_params()
    raw = np.array([-1e4, -2.0, -0.5, 0.0, 0.5, 2.0, 1e4], np.float32)
    out = []
    for r in raw:  # zero the log-std head's kernel and put `raw` into its bias
        def leaf(path, x, r=r):
            name = jax.tree_util.keystr(path)
            if "dense_2" in name and "kernel" in name:
                return x.at[:, ACT:].set(0.0)
            if "dense_2" in name and "bias" in name:
                return x.at[ACT:].set(r)
            return x
        p = jax.tree_util.tree_map_with_path(leaf, params)
        _, log_std = actor.apply(p, jax.random.normal(jax.random.PRNGKey(2), (4, OBS)))
        out.append(np.asarray(log_std))
    out = np.stack(out)  # [len(raw), 4, ACT]
    expected = lo + (hi - lo) * (np.tanh(raw.astype(np.float64)) + 1.0) / 2.0
    np.testing.assert_allclose(out, np.broadcast_to(expected[:, None, None], out.shape), atol=1e-5)
    assert out[0].max() == lo and out[-1].min() == hi and np.allclose(out[3], (lo + hi) / 2)


# ------------------------------------------------------------------ 3. SAC temperature
def test_sac_target_entropy_default_and_configured():
    assert _agent(SAC).target_entropy == -float(ACT)
    assert _agent(SAC, target_entropy_per_action=0.5).target_entropy == -0.5 * ACT  # Ma et al.'s -|A|/2
    assert _agent(SAC, target_entropy=-0.7).target_entropy == pytest.approx(-0.7)
    assert _agent(SAC, target_entropy=0.0).target_entropy == 0.0  # 0 is a value, not "unset"
    assert _agent(SAC, target_entropy=3.0).target_entropy == 3.0


def _log_alpha_step(agent, state, window):
    new, info = agent.update(state, window, jnp.int32(0), jnp.int32(1), jax.random.PRNGKey(5))
    return float(new.log_alpha) - float(state.log_alpha), float(info["entropy"]), float(info["alpha"])


def test_sac_temperature_moves_alpha_towards_the_target_entropy():
    """Adam's first step has size ~alpha_lr with the sign of -grad: alpha rises iff entropy < target."""
    lr = 0.1
    base = _agent(SAC, alpha_lr=lr, init_log_alpha=0.3)
    state = base.init(jax.random.PRNGKey(4), 0.0, 0.0)
    window = _window(jax.random.PRNGKey(6))

    def step(target_entropy):
        agent = dataclasses.replace(base, cfg=dataclasses.replace(base.cfg, target_entropy=target_entropy))
        return _log_alpha_step(agent, state, window)

    up, entropy, alpha = step(100.0)  # entropy far below the target
    assert up == pytest.approx(lr, rel=1e-3)
    assert alpha == pytest.approx(np.exp(0.3 + lr), rel=1e-4)
    down, entropy_2, _ = step(-100.0)  # entropy far above the target
    assert down == pytest.approx(-lr, rel=1e-3)
    assert entropy_2 == entropy  # same key, same actor: the same log-probs
    # relative to the measured entropy -mean(logp) of this batch, not to 0 or to the sign of the target
    assert abs(entropy) > 0.6, entropy  # so that +-0.5 around it also separates other (wrong) rules
    assert step(entropy + 0.5)[0] == pytest.approx(lr, rel=1e-3)
    assert step(entropy - 0.5)[0] == pytest.approx(-lr, rel=1e-3)


def test_sac_single_q_learns_one_critic_and_bootstraps_from_it():
    """``agent.single_q`` (Ma et al. on DMC): one Q network under q1; its loss is that Q's squared TD error
    and the soft target reads that Q alone (no minimum over a twin)."""
    agent = _agent(SAC, single_q=True)
    state = agent.init(jax.random.PRNGKey(0), 0.0, 0.0)
    assert set(state.critic.params["params"]) == {"q1"}
    window, key = _window(jax.random.PRNGKey(1)), jax.random.PRNGKey(2)
    loss, _ = agent.critic_loss(state.critic.params, state, window, 1, key)
    target = agent.soft_target(state, window, 1, key)
    (q,) = networks.SingleCritic(HIDDEN).apply(state.critic.params, window.obs, window.action)
    np.testing.assert_allclose(loss, jnp.mean((q - target) ** 2), rtol=1e-6)
    # the target by hand: the next action from the actor, the one target Q, the entropy term
    alpha = jnp.exp(state.log_alpha)
    next_obs = window.next_obs[:, 0]
    action, logp = agent.sample(state.actor.params, next_obs, jax.random.split(key)[0])
    (next_q,) = networks.SingleCritic(HIDDEN).apply(state.critic.target, next_obs, action)
    want = window.rewards[:, 0] + agent.cfg.gamma * (next_q - alpha * logp)
    np.testing.assert_allclose(target, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ 4. TD3 target policy noise
Q_CONST, GAMMA = 5.0, 0.9
_SPY = []


class _SpyCritic:
    """TwinCritic whose apply records the actions it is given."""

    def __init__(self, module):
        self.module = module

    def init(self, *args, **kwargs):
        return self.module.init(*args, **kwargs)

    def apply(self, params, obs, action):
        _SPY.append(np.asarray(action))
        return self.module.apply(params, obs, action)


class _SpyTD3(TD3):
    @property
    def critic_module(self):
        return _SpyCritic(networks.TwinCritic(tuple(self.cfg.hidden)))


def _abs_action_critic(params):
    """Both Qs = Q_CONST - sum_j |a_j| (independent of obs): ReLU units relu(a_j), relu(-a_j) summed with -1."""
    def leaf(path, x):
        name = jax.tree_util.keystr(path)
        x = np.zeros(x.shape, np.float32)
        if "kernel" in name and "dense_0" in name:
            for j in range(ACT):  # input rows OBS.. are the action
                x[OBS + j, 2 * j], x[OBS + j, 2 * j + 1] = 1.0, -1.0
        elif "kernel" in name and "dense_1" in name:
            x[: 2 * ACT, : 2 * ACT] = np.eye(2 * ACT)
        elif "kernel" in name and "dense_2" in name:
            x[: 2 * ACT, 0] = -1.0
        elif "bias" in name and "dense_2" in name:
            x[:] = Q_CONST
        return jnp.asarray(x)
    return jax.tree_util.tree_map_with_path(leaf, params)


def _constant_actor(params, action):
    """Zero weights, output bias atanh(action): the actor outputs `action` everywhere."""
    def leaf(path, x):
        name = jax.tree_util.keystr(path)
        if "dense_2" in name and "bias" in name:
            return jnp.full_like(x, np.arctanh(action))
        return jnp.zeros_like(x)
    return jax.tree_util.tree_map_with_path(leaf, params)


@pytest.mark.parametrize("actor_out,noise_clip", [(0.0, 0.5), (0.0, 0.3), (0.8, 0.5)])
def test_td3_target_policy_noise_is_clipped(actor_out, noise_clip):
    agent = _agent(_SpyTD3, gamma=GAMMA, policy_noise=1e6, noise_clip=noise_clip)
    state = agent.init(jax.random.PRNGKey(0), 0.0, 0.0)
    state = state.replace(actor=state.actor.replace(target=_constant_actor(state.actor.target, actor_out)),
                          critic=state.critic.replace(target=_abs_action_critic(state.critic.target)))
    terminals = np.arange(B) % 3 == 0
    window = _window(jax.random.PRNGKey(1), terminals)
    _SPY.clear()
    target = np.asarray(agent.td_target(state, window, jnp.int32(1), jax.random.PRNGKey(2)))
    chex.assert_shape(target, (B,))
    assert len(_SPY) == 1
    next_action = _SPY[0]
    chex.assert_shape(next_action, (B, ACT))
    # noise of scale 1e6 clipped to +-noise_clip, then the action clipped to [-1, 1]
    lo, hi = max(actor_out - noise_clip, -1.0), min(actor_out + noise_clip, 1.0)
    at_lo, at_hi = np.isclose(next_action, lo, atol=1e-6), np.isclose(next_action, hi, atol=1e-6)
    assert np.all(at_lo | at_hi), next_action
    assert at_lo.any() and at_hi.any()  # both signs of noise were drawn
    rewards, done = np.asarray(window.rewards[:, 0], np.float64), terminals.astype(np.float64)
    expected = rewards + GAMMA * (1.0 - done) * (Q_CONST - np.abs(next_action).sum(-1))
    np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-5)
    if actor_out == 0.0:  # symmetric case: the target is known without looking at the noise at all
        np.testing.assert_allclose(target, rewards + GAMMA * (1 - done) * (Q_CONST - ACT * noise_clip),
                                   rtol=1e-5, atol=1e-5)
