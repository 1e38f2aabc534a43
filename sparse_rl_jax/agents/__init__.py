"""TD3 and SAC agents over sparse networks."""
from sparse_rl_jax.agents.sac import SAC, SACState
from sparse_rl_jax.agents.td3 import TD3, TD3State

__all__ = ["SAC", "SACState", "TD3", "TD3State"]
