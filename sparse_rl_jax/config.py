"""Immutable, hashable run configuration, with the allowed range of every field written beside it.

Everything a run needs is in one frozen dataclass tree, so a config can be a static argument of `jax.jit`,
be written to `config.json` and be compared when resuming. Units are explicit in the field names:
``*_env_steps`` count environment transitions (summed over parallel envs); the topology fields
(``period``, ``start``, ``stop_margin``, ``importance_horizon``) count **gradient updates of the network
they apply to** (each network counts its own updates; see ``topology.actor_clock`` for TD3's actor);
``replay.nstep_delay`` counts critic updates.

Every field carries its allowed values in ``metadata`` (`Range` for numbers, `Choice` for strings), read
by `validation.validate` (one walk over all fields, so a new field cannot be forgotten) and by the tests,
which try values outside each range and expect the launcher to refuse them.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, NamedTuple, Optional, Tuple

DISTRIBUTIONS = ("uniform", "er", "erk")
MASK_INITS = ("random", "magnitude")
DECAYS = ("constant", "cosine")
TARGET_MASKS = ("share", "prune")
ACTOR_CLOCKS = ("actor_updates", "critic_updates")
WEIGHT_DECAY_MODES = ("decoupled", "coupled")
POLICY_SCALES = ("tanh_range", "softplus")
BACKBONES = ("mlp", "simba")  # the network bodies of `networks.py`


class Range(NamedTuple):
    """Allowed numbers: ``lo``/``hi`` bounds (``None``: unbounded), open or closed, integer or real.

    ``optional``: ``None`` is allowed too (a derived default, e.g. "8 x batch"). ``each``: the value is a
    sequence and every element must be in range (``hidden``, ``er_lambdas``).
    """
    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    optional: bool = False
    each: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.lo is not None and self.hi is not None:
            text = f"{kind} in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text = f"{kind} {'>' if self.lo_open else '>='} {self.lo:g}"
        elif self.hi is not None:
            text = f"{kind} {'<' if self.hi_open else '<='} {self.hi:g}"
        else:
            text = f"a finite {kind[2:] if kind.startswith('a ') else kind[3:]}"
        if self.each:
            text = "a non-empty list of " + text.replace("an integer", "integers").replace("a number", "numbers")
        return text + (" (or None for the derived default)" if self.optional else "")

    def admits(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.each:
            if not isinstance(value, (list, tuple)) or not value:
                return False
            return all(self._admits_one(v) for v in value)
        return self._admits_one(value)

    def _admits_one(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value) or (self.integer and value != int(value)):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True


class Choice(NamedTuple):
    """Allowed values of a string (or bool) field."""
    options: Tuple[Any, ...]

    def describe(self) -> str:
        return "allowed values are " + ", ".join(map(str, self.options))

    def admits(self, value: Any) -> bool:
        return value in self.options and type(value) is type(self.options[0])


def num(default, lo=None, hi=None, *, lo_open=False, hi_open=False, integer=False, optional=False,
        each=False):
    return field(default=default, metadata={"allowed": Range(lo, hi, lo_open, hi_open, integer, optional, each)})


def choice(default, options):
    return field(default=default, metadata={"allowed": Choice(tuple(options))})


FLAG = (False, True)
POSITIVE_INT = dict(lo=1, integer=True)


@dataclass(frozen=True)
class EnvConfig:
    # A Brax env (``halfcheetah``), ``dmc/<Task>`` (MuJoCo Playground), ``gym/<Task>-v5`` (Gymnasium on the
    # host) or ``dmcontrol/<domain>-<task>`` (dm_control on the host); checked against the suite's registry
    # (validation.py)
    name: str = "inverted_pendulum"
    backend: str = "auto"  # the suite's simulator; auto: its default (envs.resolve_backend)
    num_envs: int = num(16, **POSITIVE_INT)
    episode_length: int = num(1000, **POSITIVE_INT)
    action_repeat: int = num(1, **POSITIVE_INT)
    eval_episodes: int = num(10, **POSITIVE_INT)
    # Running mean/variance normalisation of observations (Brax's trainers do it); off in paper presets.
    normalize_observations: bool = choice(False, FLAG)


@dataclass(frozen=True)
class AgentConfig:
    # The networks' widths: per hidden layer (mlp backbone) or per residual block, all equal (simba);
    # ``actor_hidden`` / ``critic_hidden`` override it for one network (None: ``hidden``).
    hidden: Tuple[int, ...] = num((256, 256), lo=1, integer=True, each=True)
    actor_hidden: Optional[Tuple[int, ...]] = num(None, lo=1, integer=True, each=True, optional=True)
    critic_hidden: Optional[Tuple[int, ...]] = num(None, lo=1, integer=True, each=True, optional=True)
    # Each network's body (`networks.py`): 'mlp' (ReLU layers) or 'simba' (SimBa's residual blocks with
    # LayerNorm, the body of the sparse-scaling work of Ma et al.)
    actor_backbone: str = choice("mlp", BACKBONES)
    critic_backbone: str = choice("mlp", BACKBONES)
    actor_lr: float = num(3e-4, lo=0, lo_open=True)
    critic_lr: float = num(3e-4, lo=0, lo_open=True)
    alpha_lr: float = num(3e-4, lo=0, lo_open=True)
    batch_size: int = num(256, **POSITIVE_INT)
    gamma: float = num(0.99, 0, 1, lo_open=True)
    tau: float = num(0.005, 0, 1, lo_open=True)
    weight_decay: float = num(0.0, lo=0)
    # 'decoupled': AdamW. 'coupled': L2 added to the gradient before Adam (torch Adam's weight_decay,
    # what DS's code uses).
    weight_decay_mode: str = choice("decoupled", WEIGHT_DECAY_MODES)
    # Zero the gradients of absent connections before the optimizer (RLx2, jaxpruner). DS's code does
    # not: its Adam moments see the dense gradient and the weights are re-masked after the step.
    mask_gradients: bool = choice(True, FLAG)
    # TD3
    policy_delay: int = num(2, **POSITIVE_INT)
    policy_noise: float = num(0.2, lo=0)
    noise_clip: float = num(0.5, lo=0)
    exploration_noise: float = num(0.1, lo=0)
    # SAC
    init_log_alpha: float = num(0.0, -20, 20)  # the temperature starts at exp(init_log_alpha)
    # One Q network instead of the twin (Ma et al. on DM Control): the target and the actor read it alone
    single_q: bool = choice(False, FLAG)
    target_entropy: Optional[float] = num(None, optional=True)  # None: -|A| x target_entropy_per_action
    target_entropy_per_action: float = num(1.0, lo=0)  # the default target's |A| multiple (Ma et al.: 0.5)
    # How the actor's raw scale output becomes the Gaussian's std (`networks.GaussianActor`):
    # 'tanh_range' squashes it into log std in [-5, 2] (std 0.22 at a zero output; CleanRL, SpinningUp);
    # 'softplus' is Brax's softplus(raw) + 0.001 (std 0.69 at a zero output).
    policy_scale: str = choice("tanh_range", POLICY_SCALES)


@dataclass(frozen=True)
class SparsityConfig:
    actor: float = num(0.0, 0, 1, hi_open=True)  # fraction of zero weights among the actor's sparse layers
    critic: float = num(0.0, 0, 1, hi_open=True)
    distribution: str = choice("erk", DISTRIBUTIONS)
    # ER lambdas, one per sparse layer from the input (DS: (lambda1, lambda2)); with them the 'er'
    # densities follow from the lambdas and sparsity.actor / .critic are not used.
    er_lambdas: Optional[Tuple[float, ...]] = num(None, lo=0, lo_open=True, optional=True, each=True)
    dense_input: bool = choice(False, FLAG)
    dense_output: bool = choice(False, FLAG)
    mask_init: str = choice("random", MASK_INITS)


@dataclass(frozen=True)
class TopologyConfig:
    """Numbers of the method's topology schedule (the method itself is `Config.method`).

    All counts are in the network's own gradient updates (its `updates` counter); TD3's actor reads them
    on the critic's clock instead when ``actor_clock='critic_updates'`` (DS's code: one schedule for both
    networks, on the training-iteration counter).
    """
    period: int = num(1000, **POSITIVE_INT)
    start: Optional[int] = num(None, optional=True, **POSITIVE_INT)  # first grid point; None: = period
    stop: float = num(1.0, 0, 1, lo_open=True)  # fraction of the updates after which events stop
    stop_margin: int = num(0, lo=0, integer=True)  # ... or this many updates before the end (DS: 50k)
    drop_fraction: float = num(0.3, 0, 1)
    decay: str = choice("constant", DECAYS)
    final_prune_only: bool = choice(False, FLAG)  # DS: the first event after the stop only drops
    regrow_dropped: bool = choice(True, FLAG)
    skip_optimizer_step: bool = choice(False, FLAG)
    reset_moments: bool = choice(False, FLAG)
    target_masks: str = choice("share", TARGET_MASKS)
    actor_clock: str = choice("actor_updates", ACTOR_CLOCKS)
    importance_horizon: Optional[int] = num(None, optional=True, **POSITIVE_INT)  # None: the period
    gmp_begin: float = num(0.2, 0, 1, hi_open=True)
    gmp_end: float = num(0.8, 0, 1, lo_open=True)
    # The run length (env steps) every schedule above that is a fraction of the run is laid out over
    # (stop, stop_margin, the cosine decay, GMP's window). None: total_env_steps. An extended run
    # (`experiments.train --resume --extend_to`) keeps its original budget here, so the schedules it ran
    # stay as they were and the extra steps continue at their end values.
    schedule_env_steps: Optional[int] = num(None, optional=True, **POSITIVE_INT)


@dataclass(frozen=True)
class ReplayConfig:
    capacity: int = num(1_000_000, **POSITIVE_INT)  # maximum transitions held
    min_size: int = num(100_000, **POSITIVE_INT)  # dynamic capacity never shrinks below this
    dynamic: bool = choice(False, FLAG)
    check_every: int = num(10_000, **POSITIVE_INT)  # env steps between policy-distance checks
    oldest: Optional[int] = num(None, optional=True, **POSITIVE_INT)  # None: 8 x agent.batch_size (RLx2)
    distance_threshold: float = num(0.2, lo=0)
    shrink_fraction: float = num(0.1, 0, 1, lo_open=True, hi_open=True)
    nstep: int = num(1, 1, 16, integer=True)  # RLx2's ablation goes to 5; beyond 16 is refused
    nstep_delay: int = num(0, lo=0, integer=True)  # critic updates before n-step targets switch on


@dataclass(frozen=True)
class Config:
    algo: str = "td3"
    method: str = "dense"
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    total_env_steps: int = num(30_000, **POSITIVE_INT)
    warmup_env_steps: int = num(5_000, lo=0, integer=True)
    updates_per_env_step: float = num(1.0, 0, 64, lo_open=True)
    eval_every: int = num(5_000, **POSITIVE_INT)
    seed: int = num(0, 0, 2**31 - 1, integer=True)

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

    @property
    def schedule_updates(self) -> int:
        """The critic updates the topology schedules are laid out over (`TopologyConfig.schedule_env_steps`)."""
        steps = self.topology.schedule_env_steps
        if steps is None:
            return self.total_updates
        left = max(steps - self.warmup_iterations * self.env_steps_per_iteration, 0)
        return -(-left // self.env_steps_per_iteration) * self.updates_per_iteration

    @property
    def oldest_transitions(self) -> int:
        """RLx2's policy-distance window: ``replay.oldest``, or 8 x batch (the paper's K)."""
        r = self.replay
        return 8 * self.agent.batch_size if r.oldest is None else r.oldest


def allowed_values(cls) -> Dict[str, Any]:
    """``{field name: Range | Choice}`` of one config section (fields without metadata are left out)."""
    return {f.name: f.metadata["allowed"] for f in dataclasses.fields(cls) if "allowed" in f.metadata}


@dataclass(frozen=True)
class RunSpec:
    """What identifies one run beside its numbers: its config, the seeds of its program (entry ``i`` is the
    single run with seed ``seeds[i]``), where it writes, and its layout (``data_shards``: 0 = seeds on
    the devices). The launcher, a sweep cell and the summary all take this one value."""
    config: Config
    seeds: Tuple[int, ...]
    workdir: Optional[str] = None
    data_shards: int = 0

    @property
    def num_seeds(self) -> int:
        return len(self.seeds)

    @classmethod
    def consecutive(cls, config: Config, num_seeds: int, workdir: Optional[str] = None,
                    data_shards: int = 0) -> "RunSpec":
        """The launcher's seeds: ``config.seed``, ``config.seed + 1``, ..."""
        return cls(config, tuple(range(config.seed, config.seed + num_seeds)), workdir, data_shards)


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
        sub = SECTIONS.get(key)
        kwargs[key] = _build(sub, value, key) if sub else value
    return Config(**kwargs)


def _build(cls, values: Dict[str, Any], prefix: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown config key {prefix}.{sorted(unknown)[0]}; allowed: {sorted(names)}")
    values = dict(values)
    for name in ("hidden", "actor_hidden", "critic_hidden", "er_lambdas"):  # JSON lists back to hashable tuples
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    return cls(**values)


SECTIONS = {
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
