"""TD3 (Fujimoto et al. 2018) with sparse networks.

Pure functions over `TD3State`; the `TD3` object itself is static configuration (hashable), so its
methods can be jitted with it closed over. The critic learns at every update; the actor and both target
networks after every `policy_delay`-th critic update (Fujimoto's code: ``total_it % policy_freq == 0``
with a 1-based counter), a real `lax.cond` because the update counter it reads is shared by all vmapped
seeds. Targets use n-step windows (`replay.nstep_parts`), 1-step when `n_active == 1`. The actor loss
uses Q1 only.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from sparse_rl_jax import dst, networks, replay
from sparse_rl_jax.agents import common
from sparse_rl_jax.sparsity.flops import Pass, PassModel

# The pass model (`sparsity.flops`): the target action from the actor target, the actor update through Q1.
FLOP_MODEL = PassModel(passes=(
    Pass("target action: actor target forward", "actor_target", 1.0),
    Pass("target Q: critic target forward (Q1+Q2)", "critic_target", 1.0),
    Pass("critic update: forward", "critic", 1.0),
    Pass("critic update: backward", "critic", 2.0),
    Pass("actor update: actor forward", "actor", 1.0, "actor_update"),
    Pass("actor update: critic forward (Q1)", "critic_q1", 1.0, "actor_update"),
    Pass("actor update: critic backward", "critic_q1", 2.0, "actor_update"),
    Pass("actor update: actor backward", "actor", 2.0, "actor_update"),
), stored=("actor", "critic", "critic_target", "actor_target"), actor_interval=2)


@struct.dataclass
class TD3State:
    actor: dst.SparseNet
    critic: dst.SparseNet
    hparams: Dict[str, jax.Array]  # `common.AgentBase.hparam_keys` -> float32 scalar


@dataclasses.dataclass(frozen=True)
class TD3(common.AgentBase):
    flop_model = FLOP_MODEL
    has_actor_target = True
    preset_family = "td3"
    hparam_names = common.AgentBase.hparam_names + ("exploration_noise", "policy_noise", "noise_clip")

    @classmethod
    def make_actor(cls, action_dim, hidden, backbone="mlp"):
        return networks.DeterministicActor(action_dim, tuple(hidden), backbone)

    @classmethod
    def interval_for(cls, cfg) -> int:
        return cfg.policy_delay

    # ----------------------------------------------------------------- init / acting
    def init(self, key, actor_sparsity, critic_sparsity, hparams=None) -> TD3State:
        actor, critic = self.build_nets(key, actor_sparsity, critic_sparsity)
        return TD3State(actor=actor, critic=critic, hparams=self.init_hparams(hparams))

    def policy(self, actor_params, obs) -> jax.Array:
        """Deterministic policy (evaluation, and the noise-free action stored for RLx2)."""
        return self.actor_module.apply(actor_params, obs)

    def explore(self, state: TD3State, obs, key) -> Tuple[jax.Array, jax.Array]:
        """(action taken with Gaussian exploration noise, noise-free action)."""
        clean = self.policy(state.actor.params, obs)
        noise = state.hparams["exploration_noise"] * jax.random.normal(key, clean.shape)
        return jnp.clip(clean + noise, -1.0, 1.0), clean

    # ----------------------------------------------------------------- learning
    def td_target(self, state: TD3State, window: replay.Window, n_active, key) -> jax.Array:
        """n-step clipped double-Q target with target policy smoothing."""
        parts = replay.nstep_parts(window, self.cfg.gamma, n_active)
        next_obs = replay.gather_bootstrap(window, parts.bootstrap_index)
        hp = state.hparams
        noise = jnp.clip(hp["policy_noise"] * jax.random.normal(key, window.action.shape),
                         -hp["noise_clip"], hp["noise_clip"])
        next_action = jnp.clip(self.policy(state.actor.target, next_obs) + noise, -1.0, 1.0)
        next_q = common.min_q(self.critic_module.apply, state.critic.target, next_obs, next_action)
        return jax.lax.stop_gradient(parts.reward_sum + parts.bootstrap_discount * next_q)

    def critic_loss(self, critic_params, state: TD3State, window: replay.Window, n_active, key):
        target = self.td_target(state, window, n_active, key)
        q1, q2 = self.critic_module.apply(critic_params, window.obs, window.action)
        loss = jnp.mean((q1 - target) ** 2) + jnp.mean((q2 - target) ** 2)
        return loss, {"critic_loss": loss, "q": jnp.mean(q1)}

    def actor_loss(self, actor_params, critic_params, obs):
        q1, _ = self.critic_module.apply(critic_params, obs, self.policy(actor_params, obs))
        loss = -jnp.mean(q1)
        return loss, {"actor_loss": loss}

    def update(self, state: TD3State, window: replay.Window, update_index, n_active, key
               ) -> Tuple[TD3State, Dict[str, jax.Array]]:
        """One gradient update; `update_index` is the run's 0-based critic-update count, unbatched
        (shared by the seeds), so the policy-delay test below is a real branch."""
        grads, info = self.gradients(self.critic_loss, state.critic.params, state, window, n_active, key)
        critic, critic_info = self.apply_critic_gradients(state.critic, grads, state.hparams)
        state = state.replace(critic=critic)
        info.update({f"critic_{k}": v for k, v in critic_info.items()})

        def delayed(state):
            actor_grads, actor_info = self.gradients(self.actor_loss, state.actor.params, state.critic.params,
                                                     window.obs)
            actor, topo = self.apply_actor_gradients(state.actor, actor_grads, state.hparams)
            actor = dst.update_target(actor, state.hparams["tau"], self.actor_method)
            critic = dst.update_target(state.critic, state.hparams["tau"], self.critic_method)
            actor_info.update({f"actor_{k}": v for k, v in topo.items()})
            return state.replace(actor=actor, critic=critic), actor_info

        def skip(state):
            zeros = {f"actor_{k}": v for k, v in dst.zero_metrics(state.actor).items()}
            return state, {"actor_loss": jnp.float32(0.0), **zeros}

        delay = self.actor_interval
        if delay == 1:  # every update (DDPG, or TD3 without delay): no branch to trace
            state, actor_info = delayed(state)
        else:
            state, actor_info = jax.lax.cond((update_index + 1) % delay == 0, delayed, skip, state)
        info.update(actor_info)
        return state, info
