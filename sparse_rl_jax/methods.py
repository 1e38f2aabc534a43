"""Registry of DST methods: each is a named preset of config overrides carrying its paper's settings.

A preset only sets fields; every one stays overridable (`make_config('rlx2', 'td3', **{'topology.period':
1000})`). Sparsity levels default to the papers' HalfCheetah settings; set your own per task.
The ``+importance`` variants change only the drop and grow scores (ALGORITHMS.md, Method 3).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

from sparse_rl_jax import config as cfg

Overrides = Dict[str, Any]


def _dense(algo: str) -> Overrides:
    return {"sparsity.actor": 0.0, "sparsity.critic": 0.0, "topology.kind": "none"}


def _static(algo: str) -> Overrides:
    # Same masks as the dynamic methods would start from, never updated.
    return {"sparsity.actor": 0.9, "sparsity.critic": 0.85, "sparsity.distribution": "erk",
            "topology.kind": "none"}


def _ds(algo: str) -> Overrides:
    """DS-TD3 / DS-SAC (Sokar et al. 2022): SET with per-sign magnitude drop and random growth."""
    return {
        # ER with one lambda solved for the target is ERK over 2-D kernels; about 50% sparsity on Brax.
        "sparsity.actor": 0.5, "sparsity.critic": 0.5, "sparsity.distribution": "erk",
        "sparsity.dense_output": True, "sparsity.mask_init": "random",
        "topology.kind": "dst", "topology.drop": "signed_magnitude", "topology.grow": "random",
        "topology.period": 1000, "topology.start": 2, "topology.stop": 0.95,
        "topology.drop_fraction": 0.05 if algo == "td3" else 0.1, "topology.decay": "constant",
        "topology.final_prune_only": True, "topology.target_masks": "prune",
        "topology.actor_clock": "iterations", "topology.regrow_dropped": True,
    }


def _rigl(algo: str) -> Overrides:
    """RigL as tuned for SAC by Graesser et al. (2022): interval 1000, 0.5 cosine, stop at 80%."""
    return {
        "sparsity.actor": 0.9, "sparsity.critic": 0.85, "sparsity.distribution": "erk",
        "topology.kind": "dst", "topology.drop": "magnitude", "topology.grow": "gradient",
        "topology.period": 1000, "topology.start": 1, "topology.stop": 0.8,
        "topology.drop_fraction": 0.5, "topology.decay": "cosine", "topology.target_masks": "share",
        "topology.actor_clock": "iterations",
    }


def _rlx2(algo: str) -> Overrides:
    """RLx2 (Tan et al. 2023): RigL + delayed 3-step TD target + dynamic-capacity replay buffer."""
    td3 = algo == "td3"
    return {
        "sparsity.actor": 0.9, "sparsity.critic": 0.85 if td3 else 0.8,
        "sparsity.distribution": "erk", "sparsity.dense_output": False, "sparsity.mask_init": "magnitude",
        "topology.kind": "dst", "topology.drop": "magnitude", "topology.grow": "gradient",
        "topology.period": 10_000, "topology.start": 1, "topology.stop": 1.0,
        "topology.drop_fraction": 0.5, "topology.decay": "cosine", "topology.skip_optimizer_step": True,
        "topology.target_masks": "share", "topology.actor_clock": "actor_updates",
        "replay.nstep": 3, "replay.nstep_delay": 300_000, "replay.dynamic": True,
        "replay.min_size": 100_000 if td3 else 200_000, "replay.capacity": 1_000_000 if td3 else 3_000_000,
    }


def _gmp(algo: str) -> Overrides:
    """Gradual magnitude pruning (Zhu & Gupta schedule, 20%-80% of training, every 1000 steps)."""
    return {
        "sparsity.actor": 0.9, "sparsity.critic": 0.85, "sparsity.distribution": "erk",
        "topology.kind": "gmp", "topology.period": 1000, "topology.gmp_begin": 0.2,
        "topology.gmp_end": 0.8, "topology.target_masks": "share",
    }


def _with_importance(base: Callable[[str], Overrides]) -> Callable[[str], Overrides]:
    def preset(algo: str) -> Overrides:
        return {**base(algo), "topology.drop": "importance", "topology.grow": "importance"}
    preset.__doc__ = f"{base.__doc__.strip()} Drop/grow by running importance instead."
    return preset


METHODS: Dict[str, Callable[[str], Overrides]] = {
    "dense": _dense,
    "static": _static,
    "ds": _ds,
    "rigl": _rigl,
    "rlx2": _rlx2,
    "gmp": _gmp,
    "ds+importance": _with_importance(_ds),
    "rigl+importance": _with_importance(_rigl),
    "rlx2+importance": _with_importance(_rlx2),
}


def method_names() -> Tuple[str, ...]:
    return tuple(METHODS)


def preset(method: str, algo: str) -> Overrides:
    """The dotted overrides a method applies for an algorithm."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    if algo not in cfg.ALGOS:
        raise ValueError(f"unknown algo {algo!r}; allowed: {', '.join(cfg.ALGOS)}")
    return METHODS[method](algo)


def make_config(method: str = "dense", algo: str = "td3", base: cfg.Config | None = None,
                **overrides: Any) -> cfg.Config:
    """A full config: defaults, then the method preset, then the user's dotted overrides."""
    base = base or cfg.Config()
    merged = {"algo": algo, "method": method, **preset(method, algo), **overrides}
    return cfg.replace(base, **merged)
