"""The agents' n-step TD targets against a hand-written NumPy reference (terminal and truncation inside)."""
import jax
import jax.numpy as jnp
import numpy as np

from sparse_rl_jax import replay
from sparse_rl_jax.agents.sac import SAC
from sparse_rl_jax.agents.td3 import TD3
from sparse_rl_jax.config import AgentConfig, SparsityConfig
from sparse_rl_jax.methods import Static

GAMMA, Q_CONST, ALPHA = 0.9, 5.0, 0.5
OBS, ACT, N = 3, 2, 3


def _window():
    rewards = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.5, 0.5, 0.5]], np.float32)
    terminals = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]], bool)
    truncated = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]], bool)
    valid = np.ones((4, N), bool)
    next_obs = np.arange(4 * N * OBS, dtype=np.float32).reshape(4, N, OBS) / 10.0
    return replay.Window(obs=jnp.zeros((4, OBS)), action=jnp.zeros((4, ACT)), rewards=jnp.asarray(rewards),
                         terminals=jnp.asarray(terminals), truncated=jnp.asarray(truncated),
                         next_obs=jnp.asarray(next_obs), valid=jnp.asarray(valid))


def _reference(window, n_active, entropy: bool):
    """Loop form of ALGORITHMS.md's rules; log pi(a~|s) := s[0] (see _FixedSAC)."""
    out = []
    for b in range(window.rewards.shape[0]):
        r, d, tr = np.asarray(window.rewards[b]), np.asarray(window.terminals[b]), np.asarray(window.truncated[b])
        s = np.asarray(window.next_obs[b])
        total, k = 0.0, 0
        while True:
            total += GAMMA**k * r[k]
            if d[k]:
                out.append(total)
                break
            if tr[k] or k + 1 == n_active:
                boot = Q_CONST - (ALPHA * s[k][0] if entropy else 0.0)
                out.append(total + GAMMA ** (k + 1) * boot)
                break
            if entropy:  # soft value bonus at the intermediate state s_{k+1} = next_obs[k]
                total += GAMMA ** (k + 1) * (-ALPHA * s[k][0])
            k += 1
    return np.array(out, np.float32)


def _constant_critic(params):
    """Zero kernels and an output bias of Q_CONST: both Qs return Q_CONST everywhere."""
    def leaf(path, x):
        name = jax.tree_util.keystr(path)
        return jnp.full_like(x, Q_CONST) if "dense_2" in name and "bias" in name else jnp.zeros_like(x)
    return jax.tree_util.tree_map_with_path(leaf, params)


class _FixedSAC(SAC):
    def sample(self, actor_params, obs, key):  # deterministic stand-in: log pi = first obs entry
        return jnp.zeros(obs.shape[:-1] + (ACT,)), obs[..., 0]


def _agent(cls):
    cfg = AgentConfig(hidden=(8, 8), gamma=GAMMA, init_log_alpha=float(np.log(ALPHA)), policy_noise=0.0)
    return cls(obs_dim=OBS, action_dim=ACT, cfg=cfg, sparsity=SparsityConfig(),
               actor_method=Static(), critic_method=Static())


def test_sac_soft_nstep_target_matches_reference():
    agent = _agent(_FixedSAC)
    state = agent.init(jax.random.PRNGKey(0), 0.0, 0.0)
    state = state.replace(critic=state.critic.replace(target=_constant_critic(state.critic.target)))
    window = _window()
    for n_active in (1, 2, 3):
        got = agent.soft_target(state, window, jnp.int32(n_active), jax.random.PRNGKey(1))
        np.testing.assert_allclose(np.asarray(got), _reference(window, n_active, True), rtol=1e-5, atol=1e-5)


def test_td3_nstep_target_matches_reference():
    agent = _agent(TD3)
    state = agent.init(jax.random.PRNGKey(0), 0.0, 0.0)
    state = state.replace(critic=state.critic.replace(target=_constant_critic(state.critic.target)))
    window = _window()
    for n_active in (1, 2, 3):
        got = agent.td_target(state, window, jnp.int32(n_active), jax.random.PRNGKey(2))
        np.testing.assert_allclose(np.asarray(got), _reference(window, n_active, False), rtol=1e-5, atol=1e-5)
