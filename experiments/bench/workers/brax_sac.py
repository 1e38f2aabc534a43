"""Brax's own SAC trainer (`brax.training.agents.sac.train`) on the same Brax env, for the peers bench and
the learning gate. Runs in its own environment (`experiments.bench.venvs`, ``brax``: Brax's trainer calls
`jax.device_put_replicated`, which JAX 0.10 removed).

    python -m experiments.bench.workers.brax_sac '{"mode": "bench", "steps": 1000, "warmup": 5000, "rounds": 5}'
    python -m experiments.bench.workers.brax_sac '{"mode": "learn", "env_steps": 100000, "warmup": 1000,
                                                    "evals": 4, "seed": 0, "normalize": true}'

``bench``: the trainer's epochs are the timed chunks. Its ``progress_fn`` runs after every epoch, so the
worker answers there and waits on stdin for the next request: the trainer is paused between chunks,
and each chunk's time is the trainer's own epoch training time (``training/sps``; its evaluation, run
between epochs with one env, is not counted). ``learn``: one training run, printing one JSON line per
evaluation (env steps, eval return, seconds so far).
Settings as this framework's SAC: 1 env, batch 256, 2x256 networks, one update per env step, Adam 3e-4,
gamma 0.99, tau 0.005, reward scale 1, deterministic evaluation over 10 episodes of 1000 steps.
"""
from __future__ import annotations

import functools
import json
import sys
import time

from experiments.bench.workers import protocol


def train(env_steps: int, warmup: int, evals: int, seed: int, normalize: bool, progress, backend: str = "spring",
          eval_envs: int = 10):
    from brax import envs
    from brax.training.agents.sac import networks as sac_networks
    from brax.training.agents.sac import train as sac

    return sac.train(
        environment=envs.get_environment("halfcheetah", backend=backend), num_timesteps=env_steps,
        episode_length=1000, num_envs=1, num_eval_envs=eval_envs, learning_rate=3e-4, discounting=0.99,
        batch_size=256, num_evals=evals + 1, normalize_observations=normalize, reward_scaling=1.0, tau=0.005,
        min_replay_size=warmup, max_replay_size=1_000_000, grad_updates_per_step=1, deterministic_eval=True,
        network_factory=functools.partial(sac_networks.make_sac_networks, hidden_layer_sizes=(256, 256)),
        progress_fn=progress, seed=seed)


def bench(args) -> None:
    import jax

    steps, warmup, rounds = args.get("steps", 1000), args.get("warmup", 5000), args.get("rounds", 5)
    t0 = time.perf_counter()
    seen = {"epochs": 0}

    def progress(step, metrics):
        if step == 0:  # the trainer's evaluation before training
            return
        seen["epochs"] += 1
        if seen["epochs"] == 1:  # prefill, compilation and the first epoch
            protocol.say({"ready": {"brax_sac": time.perf_counter() - t0},
                          "info": {"jax": jax.__version__, "first_epoch_steps": int(step)}})
        else:
            protocol.say({"program": "brax_sac", "seconds": steps / float(metrics["training/sps"])})
        if protocol.next_command() == "quit":
            sys.exit(0)

    # epochs of `steps` env steps each: one to compile, then one per round
    train(warmup + steps * (rounds + 1), warmup, rounds + 1, 0, False, progress, eval_envs=1)
    protocol.say({"done": True})


def learn(args) -> None:
    t0 = time.perf_counter()

    def progress(step, metrics):
        protocol.say({"env_steps": int(step), "eval_return": float(metrics["eval/episode_reward"]),
                      "seconds": time.perf_counter() - t0})

    train(args["env_steps"], args["warmup"], args["evals"], args["seed"], args["normalize"], progress)


if __name__ == "__main__":
    a = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    (learn if a.get("mode") == "learn" else bench)(a)
