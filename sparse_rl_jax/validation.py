"""Configuration checks that run before anything is compiled.

Each failure is one `ConfigError` whose message names the option, the value and what is allowed, so a
launcher can print it as one line and exit with status 2. Per-field ranges are declared next to each
field in `config.py` and checked here by one walk over every section; the checks below that walk are
the ones that relate several fields.
"""
from __future__ import annotations

from typing import Any

from sparse_rl_jax import config as cfg
from sparse_rl_jax import networks


class ConfigError(ValueError):
    """A bad option value; the message is one line: option, value, what is allowed (also as fields, so a
    launcher can name the option as its flag)."""

    def __init__(self, option: str, value: Any, allowed: str):
        super().__init__(f"invalid {option}={value!r}: {allowed}")
        self.option, self.value, self.allowed = option, value, allowed


def _check(ok: bool, option: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(option, value, allowed)


def _one_of(option: str, value, allowed) -> None:
    _check(value in allowed, option, value, "allowed values are " + ", ".join(map(str, allowed)))


def check_ranges(config: cfg.Config) -> None:
    """Every field against the `Range`/`Choice` declared beside it in `config.py`."""
    sections = [("", cfg.Config, config)] + [
        (f"{name}.", cls, getattr(config, name)) for name, cls in cfg.SECTIONS.items()]
    for prefix, cls, obj in sections:
        for name, allowed in cfg.allowed_values(cls).items():
            value = getattr(obj, name)
            _check(allowed.admits(value), prefix + name, value, "must be " + allowed.describe()
                   if isinstance(allowed, cfg.Range) else allowed.describe())


def validate(config: cfg.Config) -> cfg.Config:
    """Raise `ConfigError` on the first invalid option; return the config unchanged otherwise."""
    from sparse_rl_jax import agents, envs, methods  # local: envs imports brax, only needed here

    _one_of("algo", config.algo, agents.names())
    _one_of("method", config.method, methods.method_names())
    try:
        envs.check_name(config.env.name)
    except envs.UnknownEnv as err:
        raise ConfigError("env.name", config.env.name, err.allowed) from None
    suite, _ = envs.split_name(config.env.name)
    _one_of("env.backend", config.env.backend, envs.SUITE_BACKENDS[suite] + (envs.AUTO,))
    check_ranges(config)
    upi = config.updates_per_env_step * config.env.num_envs
    _check(abs(upi - round(upi)) < 1e-9 and round(upi) >= 1, "updates_per_env_step",
           config.updates_per_env_step,
           f"updates_per_env_step * env.num_envs must be a positive integer (num_envs={config.env.num_envs})")
    _check(config.train_iterations >= 1, "total_env_steps", config.total_env_steps,
           f"must exceed warmup_env_steps={config.warmup_env_steps} by at least one iteration "
           f"({config.env_steps_per_iteration} env steps), or the run trains nothing")
    _validate_networks(config, agents.AGENTS[config.algo])
    _validate_sparsity(config)
    _validate_replay(config)
    return config


def _validate_networks(config: cfg.Config, agent_cls) -> None:
    a = config.agent
    for name in ("actor", "critic"):
        option = f"agent.{name}_hidden" if getattr(a, f"{name}_hidden") else "agent.hidden"
        hidden = getattr(a, f"{name}_hidden") or a.hidden
        try:
            networks.check_hidden(getattr(a, f"{name}_backbone"), hidden)
        except ValueError as err:
            raise ConfigError(option, hidden, f"{err} (the {name}'s backbone is "
                              f"{getattr(a, f'{name}_backbone')})") from None
    _check(not a.single_q or agent_cls.single_q_option, "agent.single_q", a.single_q,
           f"{config.algo} has no single-Q option (TD3's clipped double Q needs two; DDPG always has one)")


def _validate_sparsity(config: cfg.Config) -> None:
    s, t = config.sparsity, config.topology
    if s.er_lambdas is not None:
        _check(s.distribution == "er", "sparsity.er_lambdas", s.er_lambdas,
               f"only with sparsity.distribution=er (got {s.distribution}); set it to None for {s.distribution}")
        for name in ("actor", "critic"):
            _check(getattr(s, name) == 0.0, f"sparsity.{name}", getattr(s, name),
                   "must be 0 with sparsity.er_lambdas (the ER lambdas set the densities); "
                   "clear er_lambdas to give a sparsity level")
        a = config.agent
        kernels = max(networks.kernel_count(a.actor_backbone, a.actor_hidden or a.hidden),
                      networks.kernel_count(a.critic_backbone, a.critic_hidden or a.hidden))
        sparse_layers = kernels - (1 if s.dense_output else 0) - (1 if s.dense_input else 0)
        _check(len(s.er_lambdas) >= sparse_layers, "sparsity.er_lambdas", s.er_lambdas,
               f"needs one lambda per sparse layer ({sparse_layers} here)")
    _check(t.gmp_begin < t.gmp_end, "topology.gmp_begin/gmp_end", (t.gmp_begin, t.gmp_end),
           "need gmp_begin < gmp_end")
    _check(t.stop_margin < max(config.schedule_updates, 1) or config.topology.stop_margin == 0,
           "topology.stop_margin", t.stop_margin,
           f"must be below the gradient updates the schedules span ({config.schedule_updates})")
    _check(t.schedule_env_steps is None or t.schedule_env_steps <= config.total_env_steps,
           "topology.schedule_env_steps", t.schedule_env_steps,
           f"must be at most total_env_steps ({config.total_env_steps}): it is the budget an extended run "
           "was planned for")


def _validate_replay(config: cfg.Config) -> None:
    r = config.replay
    _check(r.capacity >= config.env.num_envs * (r.nstep + 1), "replay.capacity", r.capacity,
           f"must hold at least num_envs * (nstep + 1) = {config.env.num_envs * (r.nstep + 1)} transitions")
    smallest = min(r.capacity, r.min_size) if r.dynamic else r.capacity
    batch = config.agent.batch_size
    _check(batch <= smallest, "agent.batch_size", batch,
           f"must not exceed the minimum buffer size ({smallest} transitions)")
    if r.dynamic:
        _check(r.min_size <= r.capacity, "replay.min_size", r.min_size,
               f"must not exceed replay.capacity ({r.capacity})")
