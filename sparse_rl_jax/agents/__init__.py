"""The agents, by name: each is one module declaring its networks, losses and the facts the host side
reads (`common.AgentBase`). Adding an algorithm is one module here and one line in `AGENTS`."""
from typing import Dict, Tuple, Type

from sparse_rl_jax.agents import ddpg, sac, td3
from sparse_rl_jax.agents.common import AgentBase
from sparse_rl_jax.agents.ddpg import DDPG
from sparse_rl_jax.agents.sac import SAC, SACState
from sparse_rl_jax.agents.td3 import TD3, TD3State

AGENTS: Dict[str, Type[AgentBase]] = {
    "td3": td3.TD3,
    "sac": sac.SAC,
    "ddpg": ddpg.DDPG,
}


def names() -> Tuple[str, ...]:
    return tuple(AGENTS)


def get(name: str) -> Type[AgentBase]:
    """The agent class of ``name``; ValueError naming the allowed ones."""
    if name not in AGENTS:
        raise ValueError(f"unknown algo {name!r}; allowed: {', '.join(AGENTS)}")
    return AGENTS[name]


__all__ = ["AGENTS", "AgentBase", "DDPG", "SAC", "SACState", "TD3", "TD3State", "get", "names"]
