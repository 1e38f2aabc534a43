"""A saved run read back: its checkpoint restored in the runner's state layout, and its trained policy.

This sits above the runner (the restore template comes from `trainer` / `distributed`), so that
persistence (`checkpoint`) and logging (`run_logging`) never import the runner. Loading a trained policy
in three lines::

    from sparse_rl_jax import runs
    policy = runs.load_policy("runs/demo")  # newest checkpoint, seed 0
    action = policy(obs)  # obs: float32[obs_dim] or [batch, obs_dim] -> actions in [-1, 1]
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from sparse_rl_jax import checkpoint, distributed
from sparse_rl_jax import config as cfg_lib
from sparse_rl_jax import trainer as trainer_lib


def template(config: Any, num_seeds: int, data_shards: int = 0):
    """Abstract (``jax.ShapeDtypeStruct``) vmapped ``TrainState`` for ``config``: nothing is computed.
    ``data_shards > 0``: the data-parallel layout (agent ``[seeds]``, every other field ``[seeds, D]``)."""
    return distributed.abstract_states(config, num_seeds, data_shards)


def restore(workdir: str, period: Optional[int] = None) -> checkpoint.Restored:
    """The checkpoint of ``workdir`` after ``period`` evaluation periods, or by default the newest one
    that is readable (newer unreadable ones are listed in ``.skipped``), either layout;
    `checkpoint.CheckpointError` (one line) when missing, unreadable or incompatible."""
    if period is None:
        return checkpoint.restore_readable(workdir, template)
    return checkpoint.restore(workdir, template, period)


def restore_latest(workdir: str) -> Tuple[Dict[str, Any], Any]:
    """``(config_dict, states)`` of the newest checkpoint; ``states`` is the vmapped ``TrainState``."""
    restored = restore(workdir)
    return restored.config, restored.states


def actor_params(states: Any, seed: int = 0) -> Any:
    """One seed's actor params (a Flax variable dict) from vmapped states."""
    return jax.tree.map(lambda x: x[seed], states.agent.actor.params)


def obs_stats(states: Any, seed: int = 0) -> Any:
    """One seed's observation statistics (``normalization.RunningStats``), or None when the run does not
    normalise observations."""
    stats = getattr(states, "obs_stats", None)
    return None if stats is None else jax.tree.map(lambda x: x[seed], stats)


def load_policy(workdir: str, seed: int = 0):
    """A jitted deterministic policy ``obs -> action`` of the newest checkpoint's seed ``seed``.

    Observations are normalised with the run's statistics when it trained with
    ``env.normalize_observations`` (pass raw observations). The returned function also carries
    ``.params``, ``.obs_stats`` (None without normalisation), ``.config`` (a `Config`) and ``.agent``.
    """
    restored = restore(workdir)
    if not 0 <= seed < restored.num_seeds:
        raise checkpoint.CheckpointError(
            f"invalid seed={seed}: the run in {workdir} has seeds 0..{restored.num_seeds - 1}")
    config = cfg_lib.from_dict(restored.config)
    trainer = trainer_lib.Trainer(config)
    params, stats = actor_params(restored.states, seed), obs_stats(restored.states, seed)
    apply = jax.jit(trainer_lib.make_policy_fn(trainer))

    def policy(obs):
        obs = jnp.asarray(obs, jnp.float32)
        return apply((params, stats), obs[None])[0] if obs.ndim == 1 else apply((params, stats), obs)

    policy.params, policy.obs_stats, policy.config, policy.agent = params, stats, config, trainer.agent
    return policy
