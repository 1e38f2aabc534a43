"""`make demo`: sparse RLx2-TD3 (90% sparse actor and critic) on Brax inverted_pendulum, 30k env steps.

The learning settings are those of the learning tests (tests/test_learning.py): 16 parallel envs on the
positional backend, one gradient update per two env steps, 2x256 networks, lr 1e-3, tau 0.02. RLx2's
schedules, given in gradient updates for 1M-step MuJoCo runs, are scaled to this budget: a topology update
every 1000 updates, 3-step targets after 4000 updates, a buffer check every 2000 env steps with the
dynamic buffer between 10k and 100k transitions.
"""
from experiments.configs import common


def get_config():
    return common.preset_config("rlx2", "td3", **{
        "env.name": "inverted_pendulum", "env.backend": "positional", "env.num_envs": 16,
        "env.episode_length": 1000, "env.eval_episodes": 5,
        "total_env_steps": 30_000, "warmup_env_steps": 2_000, "eval_every": 2_000,
        "updates_per_env_step": 0.5, "agent.actor_lr": 1e-3, "agent.critic_lr": 1e-3, "agent.tau": 0.02,
        "sparsity.actor": 0.9, "sparsity.critic": 0.9,
        "topology.period": 1_000, "replay.nstep_delay": 4_000, "replay.check_every": 2_000,
        "replay.capacity": 100_000, "replay.min_size": 10_000,
    })
