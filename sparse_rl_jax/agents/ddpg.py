"""DDPG (Lillicrap et al. 2016) with sparse networks, as in Fujimoto et al.'s re-tuned "OurDDPG".

The deterministic actor and Gaussian exploration of TD3, but one critic, no target policy smoothing and
no policy delay: the critic, the actor and both targets update at every update. Target (n-step windows
as for TD3, 1-step when ``n_active == 1``):

    T = sum_{k<m} g^k r_k + g^m (1 - d) Q'(s_m, mu'(s_m))

Everything else (sparse networks, DST methods, replay, export as a tanh policy) is shared with TD3, so
this file is only what differs. `agent.policy_delay`, `policy_noise` and `noise_clip` are not read (nor are they state leaves).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sparse_rl_jax import networks, replay
from sparse_rl_jax.agents.td3 import TD3, TD3State
from sparse_rl_jax.sparsity.flops import Pass, PassModel

# TD3's passes with one Q everywhere and an actor update at every critic update.
FLOP_MODEL = PassModel(passes=(
    Pass("target action: actor target forward", "actor_target", 1.0),
    Pass("target Q: critic target forward", "critic_target", 1.0),
    Pass("critic update: forward", "critic", 1.0),
    Pass("critic update: backward", "critic", 2.0),
    Pass("actor update: actor forward", "actor", 1.0, "actor_update"),
    Pass("actor update: critic forward", "critic", 1.0, "actor_update"),
    Pass("actor update: critic backward", "critic", 2.0, "actor_update"),
    Pass("actor update: actor backward", "actor", 2.0, "actor_update"),
), stored=("actor", "critic", "critic_target", "actor_target"), actor_interval=1)


@dataclasses.dataclass(frozen=True)
class DDPG(TD3):
    flop_model = FLOP_MODEL
    hparam_names = TD3.hparam_names[:-2]  # no target policy smoothing: no policy_noise, noise_clip

    @classmethod
    def make_critic(cls, hidden, backbone="mlp"):
        return networks.SingleCritic(tuple(hidden), backbone)

    @classmethod
    def interval_for(cls, cfg) -> int:
        return 1

    def td_target(self, state: TD3State, window: replay.Window, n_active, key) -> jax.Array:
        del key  # no target policy smoothing
        parts = replay.nstep_parts(window, self.cfg.gamma, n_active)
        next_obs = replay.gather_bootstrap(window, parts.bootstrap_index)
        (next_q,) = self.critic_module.apply(state.critic.target, next_obs,
                                             self.policy(state.actor.target, next_obs))
        return jax.lax.stop_gradient(parts.reward_sum + parts.bootstrap_discount * next_q)

    def critic_loss(self, critic_params, state: TD3State, window: replay.Window, n_active, key):
        target = self.td_target(state, window, n_active, key)
        (q,) = self.critic_module.apply(critic_params, window.obs, window.action)
        loss = jnp.mean((q - target) ** 2)
        return loss, {"critic_loss": loss, "q": jnp.mean(q)}

    def actor_loss(self, actor_params, critic_params, obs):
        (q,) = self.critic_module.apply(critic_params, obs, self.policy(actor_params, obs))
        loss = -jnp.mean(q)
        return loss, {"actor_loss": loss}
