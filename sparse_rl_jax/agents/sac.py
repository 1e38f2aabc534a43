"""SAC (Haarnoja et al. 2018) with sparse networks and automatic temperature.

Actor, critic and temperature learn at every update; only the critic keeps a target copy. The n-step
soft target adds, at every intermediate state of the window, the entropy bonus -alpha log pi(a~|s)
with a fresh action from the online actor (ALGORITHMS.md, RLx2):

    T = sum_{k<m} g^k r_k + sum_{k=1}^{m-1} g^k (-alpha log pi(a~_k|s_k))
        + g^m (1 - d) [min Q'(s_m, a~_m) - alpha log pi(a~_m|s_m)]
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from sparse_rl_jax import dst, networks, replay
from sparse_rl_jax.agents import common
from sparse_rl_jax.sparsity import optim as optim_lib
from sparse_rl_jax.sparsity.flops import Pass, PassModel

# The pass model (`sparsity.flops`): the next action from the online actor (and, with n-step targets, one
# actor pass per intermediate state), the actor update through the critic's Qs (both, or the single one
# with `agent.single_q`: the critic's stored size says which); no actor target.
FLOP_MODEL = PassModel(passes=(
    Pass("next action: online actor forward", "actor", 1.0),
    Pass("entropy at intermediate states: actor forward", "actor", 1.0, "nstep"),
    Pass("target Q: critic target forward (Q1+Q2)", "critic_target", 1.0),
    Pass("critic update: forward", "critic", 1.0),
    Pass("critic update: backward", "critic", 2.0),
    Pass("actor update: actor forward", "actor", 1.0, "actor_update"),
    Pass("actor update: critic forward (Q1+Q2)", "critic", 1.0, "actor_update"),
    Pass("actor update: critic backward", "critic", 2.0, "actor_update"),
    Pass("actor update: actor backward", "actor", 2.0, "actor_update"),
), stored=("actor", "critic", "critic_target"), actor_interval=1)


@struct.dataclass
class SACState:
    actor: dst.SparseNet
    critic: dst.SparseNet
    log_alpha: jax.Array
    alpha_opt_state: optax.OptState
    hparams: Dict[str, jax.Array]  # `common.AgentBase.hparam_keys` -> float32 scalar


@dataclasses.dataclass(frozen=True)
class SAC(common.AgentBase):
    flop_model = FLOP_MODEL
    has_actor_target = False
    preset_family = "sac"
    metric_names = ("critic_loss", "actor_loss", "q", "alpha", "entropy")
    hparam_names = common.AgentBase.hparam_names + ("alpha_lr",)
    single_q_option = True

    @classmethod
    def make_actor(cls, action_dim, hidden, backbone="mlp"):
        return networks.GaussianActor(action_dim, tuple(hidden), backbone=backbone)

    @property
    def actor_module(self):
        return networks.GaussianActor(self.action_dim, self.actor_hidden, scale=self.cfg.policy_scale,
                                      backbone=self.cfg.actor_backbone)

    @property
    def critic_module(self):
        if self.cfg.single_q:
            return networks.SingleCritic(self.critic_hidden, self.cfg.critic_backbone)
        return super().critic_module

    @staticmethod
    def alpha_optimizer():
        return optim_lib.adam()

    @property
    def target_entropy(self) -> float:
        te = self.cfg.target_entropy
        return -float(self.action_dim) * self.cfg.target_entropy_per_action if te is None else float(te)

    # ----------------------------------------------------------------- init / acting
    def init(self, key, actor_sparsity, critic_sparsity, hparams=None) -> SACState:
        actor, critic = self.build_nets(key, actor_sparsity, critic_sparsity)
        log_alpha = jnp.asarray(self.cfg.init_log_alpha, jnp.float32)
        return SACState(actor=actor, critic=critic, log_alpha=log_alpha,
                        alpha_opt_state=self.alpha_optimizer().init(log_alpha),
                        hparams=self.init_hparams(hparams))

    def policy(self, actor_params, obs) -> jax.Array:
        """Deterministic evaluation policy tanh(mean)."""
        mean, _ = self.actor_module.apply(actor_params, obs)
        return jnp.tanh(mean)

    def sample(self, actor_params, obs, key):
        mean, log_std = self.actor_module.apply(actor_params, obs)
        return networks.squash_gaussian_sample(key, mean, log_std)

    def explore(self, state: SACState, obs, key) -> Tuple[jax.Array, jax.Array]:
        mean, log_std = self.actor_module.apply(state.actor.params, obs)
        action, _ = networks.squash_gaussian_sample(key, mean, log_std)
        return action, jnp.tanh(mean)

    # ----------------------------------------------------------------- learning
    def soft_target(self, state: SACState, window: replay.Window, n_active, key) -> jax.Array:
        alpha = jnp.exp(state.log_alpha)
        parts = replay.nstep_parts(window, self.cfg.gamma, n_active)
        boot_key, mid_key = jax.random.split(key)
        next_obs = replay.gather_bootstrap(window, parts.bootstrap_index)
        next_action, next_logp = self.sample(state.actor.params, next_obs, boot_key)
        next_q = common.min_q(self.critic_module.apply, state.critic.target, next_obs, next_action)
        target = parts.reward_sum + parts.bootstrap_discount * (next_q - alpha * next_logp)
        if window.rewards.shape[1] > 1:
            # Entropy bonus at intermediate states s_k = next_obs[k-1], k = 1..n-1: an actor pass over
            # n-1 states per sample, run only once n-step targets are on (a real branch: `n_active`
            # comes from the unbatched update counter); with n = 1 every term is 0.
            def bonus():
                _, mid_logp = self.sample(state.actor.params, window.next_obs[:, :-1], mid_key)
                return alpha * jnp.sum(parts.entropy_discounts[:, 1:] * mid_logp, axis=1)

            target = target - jax.lax.cond(n_active > 1, bonus, lambda: jnp.zeros_like(target))
        return jax.lax.stop_gradient(target)

    def critic_loss(self, critic_params, state: SACState, window, n_active, key):
        target = self.soft_target(state, window, n_active, key)
        qs = self.critic_module.apply(critic_params, window.obs, window.action)
        loss = sum(jnp.mean((q - target) ** 2) for q in qs) / len(qs)  # the mean over the Q networks
        return loss, {"critic_loss": loss, "q": jnp.mean(qs[0])}

    def actor_loss(self, actor_params, critic_params, log_alpha, obs, key):
        action, logp = self.sample(actor_params, obs, key)
        q = common.min_q(self.critic_module.apply, critic_params, obs, action)
        loss = jnp.mean(jnp.exp(log_alpha) * logp - q)
        return loss, {"actor_loss": loss, "entropy": -jnp.mean(logp), "logp": logp}

    def update(self, state: SACState, window: replay.Window, update_index, n_active, key
               ) -> Tuple[SACState, Dict[str, jax.Array]]:
        critic_key, actor_key = jax.random.split(key)
        grads, info = self.gradients(self.critic_loss, state.critic.params, state, window, n_active, critic_key)
        hp = state.hparams
        critic, critic_topo = self.apply_critic_gradients(state.critic, grads, hp)
        critic = dst.update_target(critic, hp["tau"], self.critic_method)

        actor_grads, actor_info = self.gradients(self.actor_loss, state.actor.params, critic.params,
                                                 state.log_alpha, window.obs, actor_key, local=("logp",))
        logp = jax.lax.stop_gradient(actor_info.pop("logp"))  # this shard's samples: the temperature's loss
        actor, actor_topo = self.apply_actor_gradients(state.actor, actor_grads, hp)

        alpha_grad, _ = self.gradients(lambda la: (-la * jnp.mean(logp + self.target_entropy), {}),
                                       state.log_alpha)
        alpha_update, alpha_opt_state = self.alpha_optimizer().update(alpha_grad, state.alpha_opt_state,
                                                                      learning_rate=hp["alpha_lr"])
        log_alpha = optax.apply_updates(state.log_alpha, alpha_update)

        info.update(actor_info)
        info.update({f"critic_{k}": v for k, v in critic_topo.items()})
        info.update({f"actor_{k}": v for k, v in actor_topo.items()})
        info["alpha"] = jnp.exp(log_alpha)
        state = SACState(actor=actor, critic=critic, log_alpha=log_alpha, alpha_opt_state=alpha_opt_state,
                         hparams=hp)
        return state, info
