"""sparse_rl_jax: dynamic sparse training for deep RL (TD3/SAC) in JAX on vectorized Brax environments.

    import sparse_rl_jax as srj
    config = srj.make_config("rlx2", "td3", **{"env.name": "inverted_pendulum"})
    result = srj.train(config, num_seeds=2, progress_fn=print)
"""
from sparse_rl_jax.config import (AgentConfig, Config, EnvConfig, ReplayConfig, SparsityConfig,
                                  TopologyConfig)
from sparse_rl_jax.methods import METHODS, make_config, method_names, preset
from sparse_rl_jax.trainer import TrainResult, Trainer, train
from sparse_rl_jax.validation import ConfigError, validate

__version__ = "0.1.0"

__all__ = [
    "AgentConfig", "Config", "ConfigError", "EnvConfig", "METHODS", "ReplayConfig", "SparsityConfig",
    "TopologyConfig", "TrainResult", "Trainer", "make_config", "method_names", "preset", "train",
    "validate",
]
