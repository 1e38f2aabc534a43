"""The suites beyond Brax under the env layer's one contract (`envs.EnvTransition`): Gymnasium MuJoCo
tasks and dm_control's other domains stepped on the host (`host_envs`), and the DM Control Suite of MuJoCo
Playground (`dmc`).

What a user relies on: a Gymnasium trajectory here is Gymnasium's own, bit for bit; termination
(the task ended the episode) and truncation (the time limit) keep Gymnasium's meaning; the transition at
an episode's end carries the true final observation, not the reset one; vmapped seeds are independent
simulators; states survive a checkpoint exactly; bad names fail before anything is built.
"""
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import sparse_rl_jax as srj
from sparse_rl_jax import checkpoint, envs, host_envs, runs, validation
from tests.conftest import leaves_equal, run_chunks, tiny_config


def _rollout(env, key, actions):
    """``env`` (one env) reset from ``key`` and stepped with ``actions[t]``: (initial state, transitions)."""

    def run(key, actions):
        state = env.reset(key)

        def body(s, a):
            s, tr = envs.env_step(env, s, a[None])
            return s, tr

        return state, jax.lax.scan(body, state, actions)[1]

    return jax.jit(run)(key, actions)


def _gymnasium_episode(task, initial_bits, actions):
    """An uninterrupted Gymnasium episode from the same initial state: per step (obs, reward, terminated),
    until it terminates."""
    import gymnasium

    env = gymnasium.make(task).unwrapped
    env.reset(seed=0)
    state = np.asarray(initial_bits).view(np.float64)
    size = mujoco.mj_stateSize(env.model, mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_setState(env.model, env.data, state[:size], mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(env.model, env.data)  # as Gymnasium's reset leaves it
    low, high = env.action_space.low, env.action_space.high
    out = []
    for a in np.asarray(actions, np.float64):
        obs, reward, terminated, _, _ = env.step(low + (a + 1.0) * 0.5 * (high - low))
        out.append((obs.astype(np.float32), np.float32(reward), terminated))
        if terminated:
            break
    return out


@pytest.mark.parametrize("task, steps", [("HalfCheetah-v5", 60), ("Hopper-v5", 120), ("Ant-v5", 80)])
def test_a_host_trajectory_is_gymnasiums_own_bit_for_bit(task, steps):
    env = envs.make_env(f"gym/{task}", num_envs=1, episode_length=1000)
    actions = jax.random.uniform(jax.random.PRNGKey(3), (steps, env.action_size), minval=-1.0, maxval=1.0)
    initial, trs = _rollout(env, jax.random.PRNGKey(1), actions)
    reference = _gymnasium_episode(task, initial.pipeline_state[0], actions)
    n = len(reference)
    assert np.array_equal(np.asarray(trs.obs[0, 0]), np.asarray(initial.obs[0]))
    for t, (obs, reward, terminated) in enumerate(reference):
        assert np.array_equal(np.asarray(trs.next_obs[t, 0]), obs), t
        assert np.asarray(trs.reward[t, 0]) == reward, t
        assert float(trs.terminal[t, 0]) == float(terminated) and float(trs.truncated[t, 0]) == 0.0
    if task != "HalfCheetah-v5":  # random actions topple them: the episode ends by termination
        assert reference[-1][2] and n < steps
        assert not np.array_equal(np.asarray(trs.obs[n, 0]), reference[-1][0])  # the next episode began


@pytest.mark.parametrize("task", ["manipulator-bring_ball", "quadruped-walk", "dog-run"])
def test_dm_control_episodes_interleaved_on_one_host_env_are_each_uninterrupted(task):
    """Two envs' episodes step in turn on one host simulator; each must equal its own dm_control episode.
    Manipulator draws its target into the model at reset, so a carry without those model fields fails."""
    env = envs.make_env(f"dmcontrol/{task}", num_envs=2, episode_length=1000)
    actions = jax.random.uniform(jax.random.PRNGKey(5), (25, 2, env.action_size), minval=-1.0, maxval=1.0)

    def run(key):
        state = env.reset(key)
        return state, jax.lax.scan(lambda s, a: envs.env_step(env, s, a), state, actions)[1]

    initial, trs = jax.jit(run)(jax.random.PRNGKey(2))
    adapter = host_envs.DMControl
    for row in range(2):
        reference = adapter.make(task)
        adapter.reset(reference, 0)
        host_envs._load(adapter, reference, np.asarray(initial.pipeline_state[row]).view(np.float64))
        low, high = adapter.action_box(reference)
        for t in range(actions.shape[0]):
            action = low + (np.asarray(actions[t, row], np.float64) + 1) * 0.5 * (high - low)
            obs, reward, _ = adapter.step(reference, action)
            assert np.array_equal(np.asarray(trs.next_obs[t, row]), obs.astype(np.float32)), (row, t)
            assert np.asarray(trs.reward[t, row]) == np.float32(reward), (row, t)
    assert not np.array_equal(np.asarray(initial.obs[0]), np.asarray(initial.obs[1]))


def test_host_env_time_limit_truncates_with_the_final_observation():
    env = envs.make_env("gym/HalfCheetah-v5", num_envs=2, episode_length=5)
    actions = jnp.zeros((7, env.action_size))

    def run(key):
        state = env.reset(key)
        return jax.lax.scan(lambda s, a: envs.env_step(env, s, jnp.stack([a, a])), state, actions)[1]

    trs = jax.jit(run)(jax.random.PRNGKey(0))
    assert np.array_equal(np.asarray(trs.truncated[:, 0]), [0, 0, 0, 0, 1, 0, 0])
    assert not np.asarray(trs.terminal).any()
    # the truncated transition holds the 5th step's observation; the next one starts a new episode
    assert not np.array_equal(np.asarray(trs.next_obs[4]), np.asarray(trs.obs[5]))
    assert np.array_equal(np.asarray(trs.next_obs[3]), np.asarray(trs.obs[4]))
    assert not np.array_equal(np.asarray(trs.obs[0, 0]), np.asarray(trs.obs[0, 1]))  # two envs, two starts


def test_host_env_under_a_seed_vmap_equals_each_seed_alone():
    env = envs.make_env("gym/Hopper-v5", num_envs=2, episode_length=1000)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    actions = jax.random.uniform(jax.random.PRNGKey(1), (3, 40, 2, env.action_size), minval=-1.0, maxval=1.0)

    def run(key, acts):
        state = env.reset(key)
        return jax.lax.scan(lambda s, a: envs.env_step(env, s, a), state, acts)[1]

    batched = jax.jit(jax.vmap(run))(keys, actions)
    for i in range(3):
        leaves_equal(jax.tree.map(lambda x: x[i], batched), jax.jit(run)(keys[i], actions[i]))


def test_playground_dmc_transitions_truncate_at_the_limit_and_keep_the_final_observation():
    env = envs.make_env("dmc/CartpoleBalance", num_envs=2, episode_length=6, action_repeat=2)
    assert env.backend == "jax"
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    assert not any(getattr(x, "weak_type", False) for x in jax.tree.leaves(state))  # the loop compiles once
    actions = jnp.full((4, 2, env.action_size), 0.3)

    def run(state):
        return jax.lax.scan(lambda s, a: envs.env_step(env, s, a), state, actions)

    _, trs = jax.jit(run)(state)
    assert np.array_equal(np.asarray(trs.truncated[:, 0]), [0, 0, 1, 0])  # 3 agent steps of 2 = 6
    assert not np.asarray(trs.terminal).any()
    # the final observation is Playground's own after the last two physics steps
    base = envs.make_base_env("dmc/CartpoleBalance")

    def six_steps(s):
        for t in range(3):
            for _ in range(2):
                s = base.step(s, actions[t, 0])
        return s.obs

    final = jax.jit(six_steps)(jax.tree.map(lambda x: x[0], state))
    assert np.allclose(np.asarray(trs.next_obs[2, 0]), np.asarray(final), atol=1e-6)
    assert not np.allclose(np.asarray(trs.next_obs[2]), np.asarray(trs.obs[3]))


def test_a_gymnasium_run_resumes_exactly_from_its_checkpoint(tmp_path):
    config = tiny_config("rlx2", "td3", **{"env.name": "gym/Hopper-v5", "env.backend": "auto",
                                           "env.episode_length": 30})
    _, states, _, chunk = run_chunks(config, num_seeds=2, chunks=1)
    from sparse_rl_jax import trainer

    template = runs.template
    workdir = str(tmp_path)
    checkpoint.save(workdir, 1, jax.device_get(states), [], config)
    restored = checkpoint.restore(workdir, template)
    leaves_equal(restored.states, jax.device_get(states))
    per = trainer.chunk_iterations(config)
    a, _ = chunk(states, jnp.int32(per))
    b, _ = chunk(jax.device_put(restored.states), jnp.int32(per))
    leaves_equal(jax.device_get(a), jax.device_get(b))


def test_dmc_states_with_empty_arrays_survive_a_checkpoint(tmp_path):
    config = tiny_config("static", "sac", **{"env.name": "dmc/CartpoleBalance", "env.backend": "auto",
                                             "env.episode_length": 30})
    from sparse_rl_jax import runner, trainer

    # the initial states already hold the env's MJX data (a training chunk would only cost compile time)
    host = jax.device_get(runner.Runner(config, num_seeds=1).init(trainer.seed_keys(0, 1)))
    assert any(0 in np.shape(x) for x in jax.tree.leaves(host))  # MJX's act: cartpole has no activations
    checkpoint.save(str(tmp_path), 1, host, [], config)
    leaves_equal(checkpoint.restore(str(tmp_path), runs.template).states, host)


@pytest.mark.parametrize("name, says", [
    ("gym/NoSuchTask-v5", "allowed values are gym/<task> for the tasks"),
    ("dmc/NoSuchTask", "allowed values are dmc/<task> for the tasks"),
    ("atari/Pong", "dmc/<Task> (the DM Control Suite"),
    ("dmcontrol/quadruped-escape", "allowed values are dmcontrol/<task> for the tasks"),  # a new terrain each episode
    ("dmcontrol/cheetah-run", "allowed values are dmcontrol/<task> for the tasks"),  # Playground's: dmc/CheetahRun
])
def test_unknown_envs_of_any_suite_fail_before_anything_is_built(name, says):
    with pytest.raises(validation.ConfigError) as err:
        srj.validate(srj.make_config("dense", "td3", **{"env.name": name}))
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_missing_suite_package_is_named(monkeypatch):
    def missing():
        raise ImportError("No module named 'gymnasium'")

    monkeypatch.setattr(host_envs.Gymnasium, "task_names", staticmethod(missing))
    with pytest.raises(validation.ConfigError, match=r"needs the gymnasium\[mujoco\] package"):
        srj.validate(srj.make_config("dense", "td3", **{"env.name": "gym/HalfCheetah-v5"}))


def test_a_backend_of_another_suite_is_refused():
    with pytest.raises(validation.ConfigError, match="allowed values are mujoco, auto"):
        srj.validate(srj.make_config("dense", "td3", **{"env.name": "gym/HalfCheetah-v5", "env.backend": "spring"}))


def test_paper_presets_target_the_papers_gymnasium_tasks():
    brax = srj.make_config("rlx2", "td3", task="hopper")
    gym = srj.make_config("rlx2", "td3", task="gym/Hopper-v5")
    assert gym.env.name == "gym/Hopper-v5" and gym.env.backend == "mujoco"
    assert (gym.sparsity, gym.replay, gym.total_env_steps) == (brax.sparsity, brax.replay, brax.total_env_steps)
    ds = srj.make_config("ds", "sac", task="gym/Walker2d-v5")
    assert ds.sparsity.er_lambdas == srj.make_config("ds", "sac", task="walker2d").sparsity.er_lambdas
    dmc = srj.make_config("rigl", "sac", task="dmc/CheetahRun")
    assert (dmc.env.action_repeat, dmc.env.episode_length, dmc.total_env_steps) == (2, 1000, 1_000_000)
    dog = srj.make_config("rigl", "sac", task="dmcontrol/dog-run")
    assert (dog.env.action_repeat, dog.total_env_steps) == (2, 1_000_000)
    srj.validate(gym), srj.validate(dmc), srj.validate(dog)
