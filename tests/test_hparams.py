"""Numbers are data: the agents' plain-number hyperparameters are leaves of their state.

What a user relies on: a value given per seed at init (a vmapped sweep) trains exactly as a config
holding that value, every agent reads the leaf (not its static config), and a name the agent does not
read is refused before anything runs."""
import jax
import numpy as np
import pytest

from sparse_rl_jax import agents, replay, trainer
from tests.conftest import tiny_config

# a value for every hyperparameter any agent reads, each different from the presets'
VALUES = {"actor_lr": 2e-3, "critic_lr": 7e-4, "tau": 0.05, "drop_fraction": 0.2, "exploration_noise": 0.3,
          "policy_noise": 0.4, "noise_clip": 0.3, "alpha_lr": 1e-3}
FIELD = {"drop_fraction": "topology.drop_fraction"}  # the rest are agent.<name>


def _window(obs_dim, act_dim, key, batch=16):
    k = jax.random.split(key, 4)
    return replay.Window(
        obs=jax.random.normal(k[0], (batch, obs_dim)),
        action=jax.random.uniform(k[1], (batch, act_dim), minval=-1, maxval=1),
        rewards=jax.random.normal(k[2], (batch, 1)), terminals=np.zeros((batch, 1), bool),
        truncated=np.zeros((batch, 1), bool), next_obs=jax.random.normal(k[3], (batch, 1, obs_dim)),
        valid=np.ones((batch, 1), bool))


def _agent(config):
    """The config's agent outside any vmap (no seed axis to agree events over)."""
    return trainer.make_agent(config, obs_dim=4, action_dim=2)


def _run(agent, state, steps=4):
    """A few updates (the first is a drop/grow event: topology.period=1), then one exploration step."""
    window = _window(agent.obs_dim, agent.action_dim, jax.random.PRNGKey(1))
    update = jax.jit(agent.update)
    for i in range(steps):
        state, _ = update(state, window, i, 1, jax.random.PRNGKey(10 + i))
    action, _ = jax.jit(agent.explore)(state, window.obs, jax.random.PRNGKey(99))
    return state, action


@pytest.mark.parametrize("algo", agents.names())
def test_hparams_given_at_init_train_as_the_config_holding_them(algo):
    base = tiny_config("rigl", algo, **{"topology.period": 1, "topology.start": 1})
    agent = _agent(base)
    names = agent.hparam_keys
    assert "drop_fraction" in names and {"actor_lr", "critic_lr", "tau"} <= set(names)
    given = {k: VALUES[k] for k in names}
    config = tiny_config("rigl", algo, **{"topology.period": 1, "topology.start": 1,
                                          **{FIELD.get(k, f"agent.{k}"): v for k, v in given.items()}})
    reference = _agent(config)
    key = jax.random.PRNGKey(0)
    state_a, act_a = _run(agent, agent.init(key, 0.8, 0.8, given))
    state_b, act_b = _run(reference, reference.init(key, 0.8, 0.8))
    # bit for bit: the leaf and the config value give the same float32 arithmetic
    jax.tree.map(np.testing.assert_array_equal, state_a, state_b)
    np.testing.assert_array_equal(act_a, act_b)
    # and the leaves are read: the base config's own values train differently
    state_c, _ = _run(agent, agent.init(key, 0.8, 0.8))
    for net in ("actor", "critic"):
        a, c = (jax.tree.leaves(getattr(s, net).params) for s in (state_a, state_c))
        assert not all(np.array_equal(x, y) for x, y in zip(a, c)), net


def test_per_seed_hparams_vmap_and_unknown_names_are_refused():
    agent = _agent(tiny_config("rigl", "sac"))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    states = jax.vmap(lambda k, lr: agent.init(k, 0.5, 0.5, {"critic_lr": lr}))(keys, np.float32([1e-4, 1e-3, 1e-2]))
    np.testing.assert_allclose(states.hparams["critic_lr"], [1e-4, 1e-3, 1e-2], rtol=1e-6)
    np.testing.assert_allclose(states.hparams["tau"], [0.005] * 3)
    with pytest.raises(ValueError, match=r"invalid hparams \['policy_noise'\]: SAC .* reads actor_lr"):
        agent.init(keys[0], 0.5, 0.5, {"policy_noise": 0.1})
    dense = _agent(tiny_config("dense", "td3"))
    assert "drop_fraction" not in dense.hparam_keys  # no drop/grow: no such leaf
