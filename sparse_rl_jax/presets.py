"""Presets: each method's paper settings as config overrides (data), per algorithm and optionally per task.

``make_config(method, algo)`` gives the small demo-scale defaults with the method's structural settings
(what its paper's code does, scaled to a 30k-step run); ``make_config(method, algo, task)`` gives the
paper's own settings for that task: sparsities (RLx2's Table 2; DS's ER lambdas), step budget (DS 1M,
RLx2 3M), warm-up, batch, learning rates, optimizer coupling, buffer sizes and n-step delay, all from
`../shared/reference/ALGORITHMS.md` and the authors' code. Every value stays overridable.

Where a paper and its code differ, the preset follows the code, and the comment says so.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

from sparse_rl_jax import agents
from sparse_rl_jax import config as cfg
from sparse_rl_jax import methods

Overrides = Dict[str, Any]
TASKS = ("halfcheetah", "hopper", "walker2d", "ant")
# The papers' own benchmark: the Gymnasium MuJoCo tasks, stepped on the host (host_envs); the paper tables
# are read under the Brax name of the same robot.
GYM_TASKS = {"gym/HalfCheetah-v5": "halfcheetah", "gym/Hopper-v5": "hopper", "gym/Walker2d-v5": "walker2d",
             "gym/Ant-v5": "ant"}
DMC_PREFIXES = ("dmc/", "dmcontrol/")  # DM Control: Playground's tasks, and dm_control's other domains

# the per-task tables live with the method presets that read them
from sparse_rl_jax.method_presets import DS_LAMBDAS, RLX2_SPARSITY  # noqa: E402


# ---------------------------------------------------------------------------- per-task paper settings
def _locomotion_settings(algo: str, task: str) -> Overrides:
    """The papers' TD3/SAC settings on a Brax or Gymnasium task: one env, one update per env step, 5k-step
    evals of 10 episodes. TD3: 25k random warm-up (Fujimoto's code); SAC: 5k (pytorch_sac, which RLx2's
    SAC uses)."""
    return {
        "env.name": task, "env.backend": "mujoco" if task in GYM_TASKS else "spring", "env.num_envs": 1,
        "env.episode_length": 1000,
        "env.eval_episodes": 10, "eval_every": 5_000, "updates_per_env_step": 1.0,
        "warmup_env_steps": 25_000 if algo == "td3" else 5_000,
        "agent.batch_size": 256, "agent.actor_lr": 3e-4, "agent.critic_lr": 3e-4,
        "replay.capacity": 1_000_000,
    }


def _dmc_settings(task: str) -> Overrides:
    """The DM Control Suite as its state-based literature runs it (SimBa; Ma et al., 2025): action repeat
    2, 1000-step episodes, 1M env steps, 10-episode evaluations every 10k env steps. The sparse methods
    keep their own structure (sparsities, topology schedules) and their papers' one update per agent
    step; their paper tables name no DMC task, so the sparsities are the method presets' defaults."""
    return {
        "env.name": task, "env.backend": "auto", "env.num_envs": 1, "env.episode_length": 1000,
        "env.action_repeat": 2, "env.eval_episodes": 10, "eval_every": 10_000, "updates_per_env_step": 1.0,
        "total_env_steps": 1_000_000, "warmup_env_steps": 10_000, "agent.batch_size": 256,
        "replay.capacity": 1_000_000,
    }


def _task_settings(method: str, algo: str, task: str) -> Overrides:
    base = method.partition("+")[0]
    if task.startswith(DMC_PREFIXES):
        return _dmc_settings(task)
    out = _locomotion_settings(algo, task)
    task = GYM_TASKS.get(task, task)
    out["total_env_steps"] = 3_000_000  # RLx2's budget, which its baselines (dense, static, RigL) share
    if base in ("static", "set", "rigl", "rlx2", "gmp"):
        a, c = RLX2_SPARSITY[algo][task]
        out.update({"sparsity.actor": a, "sparsity.critic": c})
    if base == "rlx2" and algo == "sac":
        out["replay.capacity"] = 3_000_000
    if base == "ds":
        out.update({
            "total_env_steps": 1_000_000, "sparsity.er_lambdas": DS_LAMBDAS[algo][task],
            "topology.stop": 1.0, "topology.stop_margin": 50_000,  # code: the last 50k iterations frozen
        })
        if algo == "td3":  # DS's runs: Adam 1e-3 with coupled weight decay 2e-4, batch 100
            out.update({"agent.actor_lr": 1e-3, "agent.critic_lr": 1e-3, "agent.weight_decay": 2e-4,
                        "agent.batch_size": 100})
    return out


# ---------------------------------------------------------------------------- recipes
def ma2025(method: str, family: str) -> Overrides:
    """Ma et al., "Network Sparsity Unlocks the Scaling Potential of Deep RL" (ICML 2025), read from their
    code: SimBa bodies (actor 1 block x 128, critic 2 blocks x 512; a 2 x 1024 critic is their ~17M
    parameter point), observation normalisation, AdamW (lr 1e-4, weight decay 1e-2, the mask applied to
    the whole update), 2 updates per env step, ER sparsity; SAC with one Q network, the temperature
    starting at 0.01 and a target entropy of -|A|/2; DDPG (the "td3" family) with Gaussian noise 0.1.

    Their masks are one-shot random (the `static` method), drawn by Bernoulli sampling; ours have exact
    counts. The sparsity level is their experiment's variable (they sweep about 0.8-0.9): a sparse
    method gets 0.9 on both networks here, to override per cell."""
    out: Overrides = {
        "agent.actor_backbone": "simba", "agent.critic_backbone": "simba",
        "agent.actor_hidden": (128,), "agent.critic_hidden": (512, 512),
        "env.normalize_observations": True, "updates_per_env_step": 2.0,
        "agent.actor_lr": 1e-4, "agent.critic_lr": 1e-4, "agent.alpha_lr": 1e-4,
        "agent.weight_decay": 1e-2, "agent.weight_decay_mode": "decoupled", "agent.mask_gradients": True,
        "sparsity.distribution": "er", "sparsity.er_lambdas": None,
    }
    if method.partition("+")[0] != "dense":
        out.update({"sparsity.actor": 0.9, "sparsity.critic": 0.9})
    if family == "sac":
        out.update({"agent.single_q": True, "agent.init_log_alpha": math.log(0.01),
                    "agent.target_entropy_per_action": 0.5})
    else:
        out["agent.exploration_noise"] = 0.1
    return out


RECIPES = {"ma2025": ma2025}  # settings of a paper that are not a DST method's, applied over the preset


# ---------------------------------------------------------------------------- public
def preset(method: str, algo: str, task: Optional[str] = None, recipe: Optional[str] = None) -> Overrides:
    """The dotted overrides a method applies for an algorithm (and a task, for the paper settings; and a
    `RECIPES` entry, a paper's settings over those)."""
    entry, _ = methods.parse(method)
    family = agents.get(algo).preset_family
    out = dict(entry.preset(family))
    if task is not None:
        if task not in TASKS and task not in GYM_TASKS and not task.startswith(DMC_PREFIXES):
            raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS + tuple(GYM_TASKS))}, or a "
                             "DM Control task as dmc/<Task> (e.g. dmc/CheetahRun) or dmcontrol/<domain>-<task> "
                             "(e.g. dmcontrol/dog-run)")
        out.update(_task_settings(method, family, task))
    if recipe is not None:
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; allowed: {', '.join(RECIPES)}")
        out.update(RECIPES[recipe](method, family))
    return out


def make_config(method: str = "dense", algo: str = "td3", task: Optional[str] = None,
                base: Optional[cfg.Config] = None, recipe: Optional[str] = None, **overrides: Any) -> cfg.Config:
    """A full config: defaults, then the method preset (for ``task``: the paper's settings; for
    ``recipe``: a paper's settings over those, `RECIPES`), then the user's dotted overrides."""
    base = base or cfg.Config()
    merged = {"algo": algo, "method": method, **preset(method, algo, task, recipe), **overrides}
    return cfg.replace(base, **merged)
