"""Evaluate the newest readable checkpoint of a run: N deterministic episodes per seed, print the returns.

    python -m experiments.evaluate --workdir runs/demo [--episodes 10] [--seed_offset 0] [--json]

Episodes follow the training-time evaluation protocol (``sparse_rl_jax.evaluation``: deterministic policy,
full episode length, no auto-reset). A newer checkpoint that cannot be read is skipped, with one line
on stderr saying which and why. Exit status: 0, or 2 on bad flags / no readable checkpoint (one line
on stderr). From Python, see ``runs.load_policy``::

    from sparse_rl_jax import runs
    policy = runs.load_policy("runs/demo")
    action = policy(obs)
"""
from __future__ import annotations

import json
import sys
from typing import Sequence

from absl import flags
from absl import logging as absl_logging



def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "Work directory of a training run.", flag_values=fv)
    flags.DEFINE_integer("episodes", 10, "Evaluation episodes per seed.", flag_values=fv)
    flags.DEFINE_integer("seed_offset", 0, "Evaluation key of seed i: PRNGKey(config.seed + seed_offset + i).",
                         flag_values=fv)
    flags.DEFINE_boolean("json", False, "Print one JSON object only.", flag_values=fv)
    return fv


def evaluate_run(workdir: str, episodes: int, seed_offset: int = 0) -> dict:
    """Returns ``{'step', 'env_steps', 'returns': [per-seed mean], 'mean', 'std_over_seeds'}``."""
    import jax
    import numpy as np

    from sparse_rl_jax import evaluation, runs
    from sparse_rl_jax import config as cfg_lib
    from sparse_rl_jax import trainer as trainer_lib

    restored = runs.restore(workdir)  # the newest readable checkpoint
    for step, reason in restored.skipped:
        print(f"evaluate: skipped checkpoint {step}: {reason}", file=sys.stderr, flush=True)
    config = cfg_lib.from_dict(restored.config)
    trainer = trainer_lib.Trainer(config)
    e = config.env
    # the policy as trained: observations normalised with the run's statistics when it had them
    eval_fn = evaluation.make_evaluator(e.name, trainer_lib.make_policy_fn(trainer), episodes,
                                        e.episode_length, action_repeat=e.action_repeat, backend=e.backend,
                                        jit=False)
    keys = trainer_lib.seed_keys(config.seed + seed_offset, restored.num_seeds)
    metrics = jax.jit(jax.vmap(eval_fn))(trainer_lib.policy_params(restored.states), keys)
    returns = [float(r) for r in np.asarray(metrics["eval/episode_reward"])]
    return {"workdir": workdir, "checkpoint_period": restored.period,
            "env_steps": int(np.asarray(restored.states.env_steps)[0]), "episodes": episodes,
            "returns": returns, "mean": float(np.mean(returns)), "std_over_seeds": float(np.std(returns))}


def main(argv: Sequence[str]) -> int:
    from sparse_rl_jax import cli

    absl_logging.set_verbosity(absl_logging.WARNING)
    fv = define_flags()
    if cli.wants_help(argv):
        print(cli.help_text(__doc__, fv))
        return 0
    try:
        cli.parse_args(fv, argv)
        cli.require(fv, "workdir", "the work directory of a training run")
        cli.at_least(fv, episodes=1)
    except cli.UsageError as err:
        return cli.error("evaluate", err)
    from sparse_rl_jax import checkpoint

    try:
        result = evaluate_run(fv["workdir"].value, fv["episodes"].value, fv["seed_offset"].value)
    except checkpoint.CheckpointError as err:
        return cli.error("evaluate", err)
    if fv["json"].value:
        print(json.dumps(result))
        return 0
    print(f"checkpoint {result['checkpoint_period']} of {result['workdir']} ({result['env_steps']:,} env steps), "
          f"{result['episodes']} episodes per seed")
    for i, r in enumerate(result["returns"]):
        print(f"seed {i}: return {r:.2f}")
    print(f"mean return {result['mean']:.2f} (std over seeds {result['std_over_seeds']:.2f})")
    return 0


if __name__ == "__main__":
    from sparse_rl_jax import cli

    cli.run(main)
