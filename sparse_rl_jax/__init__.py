"""sparse_rl_jax: dynamic sparse training for deep RL (TD3/SAC) in JAX on vectorized Brax environments.

    import sparse_rl_jax as srj
    config = srj.make_config("rlx2", "td3", **{"env.name": "inverted_pendulum"})
    result = srj.train(config, num_seeds=2, progress_fn=print)
"""
from sparse_rl_jax.config import (AgentConfig, Config, EnvConfig, ReplayConfig, SparsityConfig,
                                  TopologyConfig)
from sparse_rl_jax.methods import (GMP, REGISTRY, RLx2, SET, Importance, RigL, Static, method_names,
                                   register)
from sparse_rl_jax.presets import TASKS, make_config, preset
from sparse_rl_jax.validation import ConfigError, validate

# The trainer pulls in Brax (slow to import, and it prints to stdout); load it only when used, so that
# `import sparse_rl_jax` and tools such as `python -m sparse_rl_jax.report` stay fast and quiet.
_LAZY = {"train": "sparse_rl_jax.runner", "Trainer": "sparse_rl_jax.trainer",
         "TrainResult": "sparse_rl_jax.runner", "PeriodResult": "sparse_rl_jax.runner"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sparse_rl_jax' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "AgentConfig", "Config", "ConfigError", "EnvConfig", "GMP", "Importance", "REGISTRY", "RLx2",
    "PeriodResult", "ReplayConfig", "RigL", "SET", "SparsityConfig", "Static", "TASKS", "TopologyConfig",
    "TrainResult",
    "Trainer", "make_config", "method_names", "preset", "register", "train", "validate",
]
