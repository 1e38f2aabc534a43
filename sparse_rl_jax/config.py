"""Immutable, hashable run configuration.

Everything a run needs is in one frozen dataclass tree, so a config can be a static argument of `jax.jit`,
be written to `config.json` and be compared when resuming. Units are explicit in the field names:
``*_env_steps`` count environment transitions (summed over parallel envs), ``period``/``delay`` fields of
the topology and n-step rules count gradient updates ("training iterations"), as in the papers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

ALGOS = ("td3", "sac")
DISTRIBUTIONS = ("uniform", "er", "erk")
MASK_INITS = ("random", "magnitude")
TOPOLOGY_KINDS = ("none", "dst", "gmp")
DROP_SCORES = ("magnitude", "signed_magnitude", "random", "importance")
GROW_SCORES = ("gradient", "random", "importance")
DECAYS = ("constant", "cosine")
TARGET_MASKS = ("share", "prune")
ACTOR_CLOCKS = ("actor_updates", "iterations")


@dataclass(frozen=True)
class EnvConfig:
    name: str = "inverted_pendulum"
    backend: str = "positional"
    num_envs: int = 16
    episode_length: int = 1000
    action_repeat: int = 1
    eval_episodes: int = 10


@dataclass(frozen=True)
class AgentConfig:
    hidden: Tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    weight_decay: float = 0.0
    # TD3
    policy_delay: int = 2
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    exploration_noise: float = 0.1
    # SAC
    init_log_alpha: float = 0.0
    target_entropy: Optional[float] = None  # None: -|A|


@dataclass(frozen=True)
class SparsityConfig:
    actor: float = 0.0  # fraction of zero weights among the actor's sparse layers
    critic: float = 0.0
    distribution: str = "erk"
    dense_input: bool = False
    dense_output: bool = False
    mask_init: str = "random"


@dataclass(frozen=True)
class TopologyConfig:
    kind: str = "none"
    drop: str = "magnitude"
    grow: str = "gradient"
    period: int = 1000
    start: int = 1
    stop: float = 1.0  # fraction of all training iterations after which the topology is frozen
    drop_fraction: float = 0.3
    decay: str = "constant"
    final_prune_only: bool = False
    regrow_dropped: bool = True
    skip_optimizer_step: bool = False
    reset_moments: bool = False
    target_masks: str = "share"
    actor_clock: str = "iterations"
    importance_horizon: int = 1000
    gmp_begin: float = 0.2
    gmp_end: float = 0.8


@dataclass(frozen=True)
class ReplayConfig:
    capacity: int = 1_000_000  # maximum transitions held
    min_size: int = 100_000  # dynamic capacity never shrinks below this
    dynamic: bool = False
    check_every: int = 10_000  # env steps between policy-distance checks
    oldest: int = 2048
    distance_threshold: float = 0.2
    shrink_fraction: float = 0.1
    nstep: int = 1
    nstep_delay: int = 0  # training iterations before n-step targets switch on


@dataclass(frozen=True)
class Config:
    algo: str = "td3"
    method: str = "dense"
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    total_env_steps: int = 30_000
    warmup_env_steps: int = 5_000
    updates_per_env_step: float = 1.0
    eval_every: int = 5_000
    seed: int = 0

    # Derived quantities, in one place so every module agrees on them.
    @property
    def updates_per_iteration(self) -> int:
        return int(round(self.updates_per_env_step * self.env.num_envs))

    @property
    def env_steps_per_iteration(self) -> int:
        return self.env.num_envs * self.env.action_repeat

    @property
    def warmup_iterations(self) -> int:
        return -(-self.warmup_env_steps // self.env_steps_per_iteration)

    @property
    def train_iterations(self) -> int:
        """Environment iterations after warm-up (each: one vector env step, then the gradient updates)."""
        left = max(self.total_env_steps - self.warmup_iterations * self.env_steps_per_iteration, 0)
        return -(-left // self.env_steps_per_iteration)

    @property
    def total_updates(self) -> int:
        return self.train_iterations * self.updates_per_iteration


def to_dict(config: Any) -> Dict[str, Any]:
    """Nested plain dict (tuples become lists), suitable for JSON."""
    return dataclasses.asdict(config)


def from_dict(data: Dict[str, Any]) -> Config:
    """Inverse of `to_dict`; unknown keys raise `ValueError` naming the key."""
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    kwargs = {}
    for key, value in data.items():
        if key not in sections:
            raise ValueError(f"unknown config key {key!r}; allowed: {sorted(sections)}")
        sub = _SECTIONS.get(key)
        kwargs[key] = _build(sub, value, key) if sub else value
    return Config(**kwargs)


def _build(cls, values: Dict[str, Any], prefix: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown config key {prefix}.{sorted(unknown)[0]}; allowed: {sorted(names)}")
    values = dict(values)
    if "hidden" in values:
        values["hidden"] = tuple(int(h) for h in values["hidden"])
    return cls(**values)


_SECTIONS = {
    "env": EnvConfig,
    "agent": AgentConfig,
    "sparsity": SparsityConfig,
    "topology": TopologyConfig,
    "replay": ReplayConfig,
}


def replace(config: Config, **dotted: Any) -> Config:
    """`replace(cfg, **{'sparsity.actor': 0.9, 'total_env_steps': 10})`: dotted-path overrides."""
    data = to_dict(config)
    for path, value in dotted.items():
        node = data
        *parents, leaf = path.split(".")
        for p in parents:
            if p not in node or not isinstance(node[p], dict):
                raise ValueError(f"unknown config key {path!r}")
            node = node[p]
        if leaf not in node:
            raise ValueError(f"unknown config key {path!r}")
        node[leaf] = value
    return from_dict(data)
