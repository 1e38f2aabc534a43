"""Configuration checks that run before anything is compiled.

Each failure is one `ConfigError` whose message names the option, the value and what is allowed, so a
launcher can print it as one line and exit with status 2.
"""
from __future__ import annotations

from sparse_rl_jax import config as cfg


class ConfigError(ValueError):
    """A bad option value; the message is one line: option, value, what is allowed."""


def _check(ok: bool, option: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"invalid {option}={value!r}: {allowed}")


def _one_of(option: str, value, allowed) -> None:
    _check(value in allowed, option, value, "allowed values are " + ", ".join(map(str, allowed)))


def _positive(option: str, value) -> None:
    _check(isinstance(value, (int, float)) and value > 0, option, value, "must be > 0")


def validate(config: cfg.Config) -> cfg.Config:
    """Raise `ConfigError` on the first invalid option; return the config unchanged otherwise."""
    from sparse_rl_jax import envs, methods  # local: envs imports brax, only needed here

    _one_of("algo", config.algo, cfg.ALGOS)
    _one_of("method", config.method, methods.method_names())
    _one_of("env.name", config.env.name, envs.env_names())
    _one_of("env.backend", config.env.backend, envs.BACKENDS)
    for name in ("total_env_steps", "eval_every"):
        _positive(name, getattr(config, name))
    _check(config.warmup_env_steps >= 0, "warmup_env_steps", config.warmup_env_steps, "must be >= 0")
    _positive("updates_per_env_step", config.updates_per_env_step)
    upi = config.updates_per_env_step * config.env.num_envs
    _check(abs(upi - round(upi)) < 1e-9 and round(upi) >= 1, "updates_per_env_step",
           config.updates_per_env_step,
           f"updates_per_env_step * env.num_envs must be a positive integer (num_envs={config.env.num_envs})")
    for name in ("num_envs", "episode_length", "action_repeat", "eval_episodes"):
        _positive(f"env.{name}", getattr(config.env, name))
    a = config.agent
    for name in ("batch_size", "actor_lr", "critic_lr", "alpha_lr", "policy_delay"):
        _positive(f"agent.{name}", getattr(a, name))
    _check(0 < a.gamma <= 1, "agent.gamma", a.gamma, "must be in (0, 1]")
    _check(0 < a.tau <= 1, "agent.tau", a.tau, "must be in (0, 1]")
    _check(len(a.hidden) >= 1 and all(h > 0 for h in a.hidden), "agent.hidden", a.hidden,
           "must be a non-empty list of positive layer widths")
    _validate_sparsity(config)
    _validate_replay(config)
    return config


def _validate_sparsity(config: cfg.Config) -> None:
    s, t = config.sparsity, config.topology
    for name in ("actor", "critic"):
        value = getattr(s, name)
        _check(0.0 <= value < 1.0, f"sparsity.{name}", value, "must be in [0, 1)")
    _one_of("sparsity.distribution", s.distribution, cfg.DISTRIBUTIONS)
    _one_of("sparsity.mask_init", s.mask_init, cfg.MASK_INITS)
    _one_of("topology.kind", t.kind, cfg.TOPOLOGY_KINDS)
    _one_of("topology.drop", t.drop, cfg.DROP_SCORES)
    _one_of("topology.grow", t.grow, cfg.GROW_SCORES)
    _one_of("topology.decay", t.decay, cfg.DECAYS)
    _one_of("topology.target_masks", t.target_masks, cfg.TARGET_MASKS)
    _one_of("topology.actor_clock", t.actor_clock, cfg.ACTOR_CLOCKS)
    _positive("topology.period", t.period)
    _positive("topology.importance_horizon", t.importance_horizon)
    _check(0.0 <= t.drop_fraction <= 1.0, "topology.drop_fraction", t.drop_fraction, "must be in [0, 1]")
    _check(0.0 < t.stop <= 1.0, "topology.stop", t.stop, "must be in (0, 1]")
    _check(0.0 <= t.gmp_begin < t.gmp_end <= 1.0, "topology.gmp_begin/gmp_end",
           (t.gmp_begin, t.gmp_end), "need 0 <= gmp_begin < gmp_end <= 1")


def _validate_replay(config: cfg.Config) -> None:
    r = config.replay
    _check(isinstance(r.nstep, int) and r.nstep >= 1, "replay.nstep", r.nstep, "must be an integer >= 1")
    _check(r.nstep_delay >= 0, "replay.nstep_delay", r.nstep_delay, "must be >= 0")
    _positive("replay.capacity", r.capacity)
    _positive("replay.check_every", r.check_every)
    _positive("replay.oldest", r.oldest)
    _check(0.0 < r.shrink_fraction < 1.0, "replay.shrink_fraction", r.shrink_fraction, "must be in (0, 1)")
    _check(r.capacity >= config.env.num_envs * (r.nstep + 1), "replay.capacity", r.capacity,
           f"must hold at least num_envs * (nstep + 1) = {config.env.num_envs * (r.nstep + 1)} transitions")
    smallest = min(r.capacity, r.min_size) if r.dynamic else r.capacity
    batch = config.agent.batch_size
    _check(batch <= smallest, "agent.batch_size", batch,
           f"must not exceed the minimum buffer size ({smallest} transitions)")
    if r.dynamic:
        _positive("replay.min_size", r.min_size)
        _check(r.min_size <= r.capacity, "replay.min_size", r.min_size,
               f"must not exceed replay.capacity ({r.capacity})")
