"""Each DST method's paper settings as config overrides (data), per algorithm, without a task.

``<name>(family)`` returns the dotted overrides of method ``<name>`` for an agent's `preset_family`:
the structural settings of its paper's code, scaled to the demo's 30k-step run. `methods.REGISTRY` pairs
each built-in method class with its function here; the per-task paper settings (budgets, per-task
sparsities, learning rates) are `presets`. This module imports nothing of the package, so the registry
is plain data and no module needs another to fill it.
"""
from __future__ import annotations

from typing import Any, Dict

Overrides = Dict[str, Any]

# RLx2, Table 2: (actor, critic) sparsity per task.
RLX2_SPARSITY = {
    "td3": {"halfcheetah": (0.90, 0.85), "hopper": (0.98, 0.95), "walker2d": (0.97, 0.95), "ant": (0.96, 0.88)},
    "sac": {"halfcheetah": (0.90, 0.80), "hopper": (0.98, 0.95), "walker2d": (0.90, 0.90), "ant": (0.90, 0.75)},
}
# DS (Sokar et al.): ER (lambda1 for the input layer, lambda2 for the hidden layer); output layers dense.
# The lambdas were tuned on Gym's observation sizes; on Brax the formula is applied to Brax's sizes, so
# Ant's input layer (lambda1 = 40 or 30 at Brax's 27 inputs, against Gym's 111) comes out dense.
DS_LAMBDAS = {
    "td3": {"halfcheetah": (7, 64), "hopper": (7, 64), "walker2d": (7, 64), "ant": (40, 64)},
    "sac": {"halfcheetah": (12, 80), "hopper": (7, 20), "walker2d": (12, 80), "ant": (30, 64)},
}


# Each preset function takes the agent's `preset_family` ("td3": a deterministic actor, "sac": a
# stochastic one), the algorithm whose papers' settings apply; DDPG, which neither paper ran, takes TD3's.
def dense(algo: str) -> Overrides:
    return {"sparsity.actor": 0.0, "sparsity.critic": 0.0}


def static(algo: str) -> Overrides:
    # The masks the dynamic methods start from (RLx2's HalfCheetah sparsities), never updated.
    a, c = RLX2_SPARSITY[algo]["halfcheetah"]
    return {"sparsity.actor": a, "sparsity.critic": c, "sparsity.distribution": "erk"}


def ds(algo: str) -> Overrides:
    """DS-TD3 / DS-SAC as in Sokar et al.'s code (DS_TD3.py): one schedule on the training-iteration
    counter for both networks (events at iterations 2, 1002, ...; TD3's actor takes the first of its
    updates at or after each), per-sign drop, random growth at weight 0, the last event (the first after
    the stop) prune-only, targets pruned to the online count, coupled L2 and unmasked gradients in Adam."""
    lam = DS_LAMBDAS[algo]["halfcheetah"]
    return {
        # the densities follow from the lambdas (about 50% overall), so the sparsity levels stay 0
        "sparsity.distribution": "er", "sparsity.er_lambdas": lam, "sparsity.actor": 0.0,
        "sparsity.critic": 0.0, "sparsity.dense_output": True, "sparsity.mask_init": "random",
        "topology.period": 1000, "topology.start": 2,
        # code: stop 50k iterations before the end of 1M; the 30k-step default keeps the same 5%
        "topology.stop": 0.95, "topology.stop_margin": 0,
        "topology.drop_fraction": 0.05 if algo == "td3" else 0.1, "topology.decay": "constant",
        "topology.final_prune_only": True, "topology.target_masks": "prune",
        "topology.actor_clock": "critic_updates", "topology.regrow_dropped": True,
        "agent.weight_decay_mode": "coupled", "agent.mask_gradients": False,
    }


def rigl(algo: str) -> Overrides:
    """RigL as tuned for SAC by Graesser et al. (2022): interval 1000, drop 0.5 cosine, stop at 80%."""
    a, c = RLX2_SPARSITY[algo]["halfcheetah"]
    return {
        "sparsity.actor": a, "sparsity.critic": c, "sparsity.distribution": "erk",
        "topology.period": 1000, "topology.start": None, "topology.stop": 0.8,
        "topology.drop_fraction": 0.5, "topology.decay": "cosine", "topology.target_masks": "share",
        "topology.actor_clock": "actor_updates",
    }


def rlx2(algo: str) -> Overrides:
    """RLx2 (Tan et al. 2023): RigL every 10k of a network's own updates (TD3's actor counts actor
    updates), optimizer step skipped on event steps, shared target masks, 3-step targets after 300k
    updates, dynamic buffer (oldest 8 x batch checked every 10k env steps)."""
    a, c = RLX2_SPARSITY[algo]["halfcheetah"]
    td3 = algo == "td3"
    return {
        "sparsity.actor": a, "sparsity.critic": c,
        "sparsity.distribution": "erk", "sparsity.dense_output": False, "sparsity.mask_init": "magnitude",
        "topology.period": 10_000, "topology.start": None, "topology.stop": 1.0,
        "topology.drop_fraction": 0.5, "topology.decay": "cosine", "topology.skip_optimizer_step": True,
        "topology.target_masks": "share", "topology.actor_clock": "actor_updates",
        "replay.nstep": 3, "replay.nstep_delay": 300_000, "replay.dynamic": True, "replay.oldest": None,
        "replay.min_size": 100_000 if td3 else 200_000, "replay.capacity": 1_000_000 if td3 else 3_000_000,
    }


def set_(algo: str) -> Overrides:
    """SET as RLx2 ran it beside RigL: RLx2's topology schedule (every 10k of a network's own updates,
    drop fraction 0.5 cosine, skipped optimizer step, shared target masks, magnitude-init ERK masks) with
    SET's scores (per-sign magnitude drop, random growth at zero), one-step targets and a FIFO buffer."""
    out = {k: v for k, v in rlx2(algo).items() if not k.startswith("replay.")}
    return out


def gmp(algo: str) -> Overrides:
    """Gradual magnitude pruning (Zhu & Gupta schedule, 20%-80% of training, every 1000 updates)."""
    a, c = RLX2_SPARSITY[algo]["halfcheetah"]
    return {
        "sparsity.actor": a, "sparsity.critic": c, "sparsity.distribution": "erk",
        "topology.period": 1000, "topology.gmp_begin": 0.2, "topology.gmp_end": 0.8,
        "topology.target_masks": "share", "topology.actor_clock": "actor_updates",
    }
