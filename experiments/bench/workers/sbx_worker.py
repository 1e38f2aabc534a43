"""Stable-Baselines-Jax (sbx-rl) SAC and TD3 on Gymnasium HalfCheetah-v5 (MuJoCo), for the peers bench.

Runs in its own environment (`experiments.bench.venvs`, ``sbx``):

    python -m experiments.bench.workers.sbx_worker '{"steps": 1000, "warmup": 5000}'

Same work as this framework's programs: 1 env, batch 256, 2x256 networks, one gradient update per env
step, Adam 3e-4, gamma 0.99, tau 0.005, 1M buffer; TD3 with policy delay 2, target noise 0.2 clipped at
0.5 and N(0, 0.1) exploration. Start-up = construction plus ``learn`` over the warm-up and one chunk
(its JIT compilation included); each timed chunk is one more ``learn(steps)``.
"""
from __future__ import annotations

import json
import sys
import time

from experiments.bench.workers import protocol


def program(algo: str, steps: int, warmup: int):
    import gymnasium as gym
    import numpy as np
    from sbx import SAC, TD3
    from stable_baselines3.common.noise import NormalActionNoise

    env = gym.make("HalfCheetah-v5")
    common = dict(learning_rate=3e-4, buffer_size=1_000_000, learning_starts=warmup, batch_size=256, tau=0.005,
                  gamma=0.99, train_freq=1, gradient_steps=1, policy_kwargs={"net_arch": [256, 256]}, seed=0,
                  verbose=0)
    if algo == "sac":
        model = SAC("MlpPolicy", env, **common)
    else:
        act = env.action_space.shape[0]
        model = TD3("MlpPolicy", env, policy_delay=2, target_policy_noise=0.2, target_noise_clip=0.5,
                    action_noise=NormalActionNoise(np.zeros(act), 0.1 * np.ones(act)), **common)
    model.learn(total_timesteps=warmup + steps)

    def run() -> float:
        t0 = time.perf_counter()
        model.learn(total_timesteps=steps, reset_num_timesteps=False)
        return time.perf_counter() - t0

    return run


def main(argv) -> None:
    args = json.loads(argv[1]) if len(argv) > 1 else {}
    steps, warmup = args.get("steps", 1000), args.get("warmup", 5000)
    import jax
    import sbx

    only = args.get("programs")
    protocol.serve({f"sbx_{a}": (lambda a=a: program(a, steps, warmup)) for a in ("td3", "sac")
                    if not only or f"sbx_{a}" in only},
                   info={"sbx": sbx.__version__, "jax": jax.__version__})


if __name__ == "__main__":
    main(sys.argv)
