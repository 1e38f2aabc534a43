"""Pieces shared by the TD3 and SAC agents: their static base, building a sparse network, its optimizer."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from sparse_rl_jax import dst, networks
from sparse_rl_jax.config import AgentConfig, SparsityConfig
from sparse_rl_jax.sparsity import distributions
from sparse_rl_jax.sparsity import masks as mask_lib
from sparse_rl_jax.sparsity import optim as optim_lib


def make_optimizer(learning_rate: float, weight_decay: float = 0.0):
    """Adam (AdamW when weight decay is set) wrapped so gradients and updates respect the masks."""
    inner = optax.adamw(learning_rate, weight_decay=weight_decay) if weight_decay else optax.adam(learning_rate)
    return optim_lib.masked_optimizer(inner)


def is_sparse_net(configured_sparsity: float, rules: dst.NetRules) -> bool:
    """Static: does this network carry masks at all? A dense network under no method has none.

    Decided from the *configured* (Python) sparsity so that a run vmapped over traced sparsity levels
    keeps one static structure.
    """
    return rules.kind != "none" or float(configured_sparsity) > 0.0


def init_masks_for(key, params, sparsity_level, sparse: bool, scfg: SparsityConfig,
                   rules: dst.NetRules):
    """(masks, densities) for one network; GMP starts dense and prunes towards the densities."""
    if not sparse:
        structure = jax.tree.map(lambda _: False, params)
    else:
        structure = mask_lib.sparse_structure(
            params, dense_input=scfg.dense_input, dense_output=scfg.dense_output)
    densities = distributions.densities_for(
        params, structure, jnp.asarray(sparsity_level, jnp.float32), scfg.distribution)
    start = densities if rules.kind != "gmp" else mask_lib.map_sparse(
        lambda d: jnp.ones_like(d), densities)
    masks = mask_lib.init_masks(key, params, start, method=scfg.mask_init)
    return masks, densities


def build_net(key, module, example_inputs: Sequence[jax.Array], sparsity_level, sparse: bool,
              scfg: SparsityConfig, rules: dst.NetRules, optimizer, with_target: bool) -> dst.SparseNet:
    """Init params, exact-count masks and optimizer state for one network (pure, vmappable)."""
    init_key, mask_key, net_key = jax.random.split(key, 3)
    params = module.init(init_key, *example_inputs)
    masks, densities = init_masks_for(mask_key, params, sparsity_level, sparse, scfg, rules)
    return dst.init_net(net_key, params, masks, densities, optimizer, rules, with_target)


def min_q(critic_apply, params, obs, action) -> jax.Array:
    q1, q2 = critic_apply(params, obs, action)
    return jnp.minimum(q1, q2)


@dataclasses.dataclass(frozen=True)
class AgentBase:
    """Static configuration shared by TD3 and SAC (hashable, so jitted methods can close over it).

    Subclasses add their actor module and learning rules. They stay frozen dataclasses with these
    fields: `distributed.with_hparams` rebuilds agents with `dataclasses.replace(agent, cfg=...,
    actor_rules=..., critic_rules=...)`.
    """
    obs_dim: int
    action_dim: int
    cfg: AgentConfig
    sparsity: SparsityConfig
    actor_rules: dst.NetRules
    critic_rules: dst.NetRules
    actor_clock_on_actor_updates: bool = False
    # Data-parallel training: name of the mapped device axis; gradients (and thus importance and
    # topology decisions) are averaged over it so every device keeps identical params and masks.
    grad_axis: Optional[str] = None

    def reduce(self, tree):
        """Mean over the data-parallel axis (identity on one device)."""
        return tree if self.grad_axis is None else jax.lax.pmean(tree, self.grad_axis)

    @property
    def critic_module(self):
        return networks.TwinCritic(tuple(self.cfg.hidden))

    @property
    def actor_optimizer(self):
        return make_optimizer(self.cfg.actor_lr, self.cfg.weight_decay)

    @property
    def critic_optimizer(self):
        return make_optimizer(self.cfg.critic_lr, self.cfg.weight_decay)

    def build_nets(self, key, actor_sparsity, critic_sparsity, actor_target: bool):
        """(actor, critic) sparse networks for one seed; only the critic always keeps a target."""
        actor_key, critic_key = jax.random.split(key)
        obs, act = jnp.zeros((1, self.obs_dim)), jnp.zeros((1, self.action_dim))
        actor = build_net(
            actor_key, self.actor_module, (obs,), actor_sparsity,
            is_sparse_net(self.sparsity.actor, self.actor_rules), self.sparsity,
            self.actor_rules, self.actor_optimizer, with_target=actor_target)
        critic = build_net(
            critic_key, self.critic_module, (obs, act), critic_sparsity,
            is_sparse_net(self.sparsity.critic, self.critic_rules), self.sparsity,
            self.critic_rules, self.critic_optimizer, with_target=True)
        return actor, critic

    def networks(self, state) -> dict:
        return {"actor": state.actor, "critic": state.critic}
