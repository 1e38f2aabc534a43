"""Pieces shared by the agents: their static base (and the facts each declares), building a sparse network,
its optimizer."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from sparse_rl_jax import dst, networks
from sparse_rl_jax.config import AgentConfig, SparsityConfig
from sparse_rl_jax.sparsity import distributions, flops
from sparse_rl_jax.sparsity import masks as mask_lib
from sparse_rl_jax.sparsity import optim as optim_lib


def make_optimizer(weight_decay: float = 0.0, mode: str = "decoupled", mask_gradients: bool = True):
    """Adam wrapped so updates (and, by default, gradients) respect the masks, built once; its learning
    rate is an argument of each update (``learning_rate=``: a leaf of the agent's state, per seed).

    Weight decay ``mode``: 'decoupled' is AdamW; 'coupled' adds ``weight_decay * w`` to the gradient
    before Adam, as torch's ``Adam(weight_decay=...)`` does (DS's code). The chains are optax's own
    (``optax.adam``, ``optax.adamw``) with the last link taking the rate per call, so the state has
    their structure and every step computes what theirs would.
    """
    if not weight_decay:
        inner = optim_lib.adam()
    elif mode == "coupled":
        inner = optax.chain(optax.add_decayed_weights(weight_decay), optim_lib.adam())
    else:
        inner = optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(weight_decay),
                            optim_lib.scale_by_learning_rate_arg())
    return optim_lib.masked_optimizer(inner, mask_gradients=mask_gradients)


def is_sparse_net(configured_sparsity: float, method, scfg: SparsityConfig) -> bool:
    """Static: does this network carry masks at all? A dense network under no method has none.

    Decided from the *configured* (Python) sparsity so that a run vmapped over traced sparsity levels
    keeps one static structure; ER lambdas make a network sparse whatever the level.
    """
    return method.has_topology or float(configured_sparsity) > 0.0 or scfg.er_lambdas is not None


def er_lambda_map(scfg: SparsityConfig):
    """``(l1, l2, ...)`` -> ``{'dense_0': l1, 'dense_1': l2, ...}`` (None without lambdas)."""
    if scfg.er_lambdas is None:
        return None
    return {f"dense_{i}": float(v) for i, v in enumerate(scfg.er_lambdas)}


def init_masks_for(key, params, sparsity_level, sparse: bool, scfg: SparsityConfig, method):
    """(masks, densities) for one network; GMP starts dense and prunes towards the densities."""
    if not sparse:
        structure = jax.tree.map(lambda _: False, params)
    else:
        structure = mask_lib.sparse_structure(
            params, dense_input=scfg.dense_input, dense_output=scfg.dense_output)
    densities = distributions.densities_for(
        params, structure, jnp.asarray(sparsity_level, jnp.float32), scfg.distribution,
        lambdas=er_lambda_map(scfg))
    start = densities if not method.starts_dense else mask_lib.map_sparse(
        lambda d: jnp.ones_like(d), densities)
    masks = mask_lib.init_masks(key, params, start, method=scfg.mask_init)
    return masks, densities


def build_net(key, module, example_inputs: Sequence[jax.Array], sparsity_level, sparse: bool,
              scfg: SparsityConfig, method, optimizer, with_target: bool) -> dst.SparseNet:
    """Init params, exact-count masks and optimizer state for one network (pure, vmappable)."""
    init_key, mask_key, net_key = jax.random.split(key, 3)
    params = module.init(init_key, *example_inputs)
    masks, densities = init_masks_for(mask_key, params, sparsity_level, sparse, scfg, method)
    net = dst.init_net(net_key, params, masks, densities, optimizer, method)
    return dst.with_target(net) if with_target else net


def min_q(critic_apply, params, obs, action) -> jax.Array:
    """The smallest of the critic's Q values (the clipped double-Q estimate; one Q: itself)."""
    q, *others = critic_apply(params, obs, action)
    for other in others:
        q = jnp.minimum(q, other)
    return q


@dataclasses.dataclass(frozen=True)
class AgentBase:
    """Static configuration shared by the agents (hashable, so jitted methods can close over it).

    An agent is ``init(key, actor_sparsity, critic_sparsity, hparams=None) -> state``, ``explore(state, obs,
    key) -> (action, noise-free action)``, ``policy(actor_params, obs) -> action`` and ``update(state,
    window, update_index, n_active, key) -> (state, info)``, over a state with ``actor`` and ``critic``
    `dst.SparseNet`s and ``hparams``.

    **Numbers are data, structure is static.** The plain-number hyperparameters the update reads
    (`hparam_keys`: learning rates, tau, exploration and target noise, the drop fraction) are float32
    leaves of the state, ``state.hparams[name]``, initialised from the config (or per seed, from
    ``init``'s ``hparams``) and read by the update from there, never from ``cfg``. So cells that differ
    only in these numbers are one compiled program vmapped over them (a sweep), and a checkpoint holds
    them. What shapes the program stays here, static: sizes, the method, schedules' periods, the policy
    delay, gamma (its n-step powers are computed at trace time in double precision), weight decay.
    The class-level facts below are what the host side (trainer, FLOP accounting, report, export,
    presets) reads instead of asking which algorithm it is; `sparse_rl_jax.agents.AGENTS` maps names to
    classes.

    ``actor_method`` / ``critic_method`` are the DST method objects of the two networks (`methods.py`),
    each built for that network's own update count. ``batch_axes``: the vmap axes the update always runs
    under (seeds, data shards), over which topology events are agreed so their switch stays a branch.
    """
    # ------------------------------------------------------------- facts each agent declares
    flop_model: ClassVar[flops.PassModel]  # its passes per update and its stored networks
    has_actor_target: ClassVar[bool]  # the critic always keeps a target
    # whose papers' settings the presets use: "td3" (deterministic actor) or "sac" (stochastic actor)
    preset_family: ClassVar[str]
    # per-update info entries averaged into `training/<name>` metrics
    metric_names: ClassVar[Tuple[str, ...]] = ("critic_loss", "actor_loss", "q")
    # whether `agent.single_q` may replace its twin critic by one Q network
    single_q_option: ClassVar[bool] = False
    # `AgentConfig` fields the update reads as state leaves (`hparam_keys` adds the drop fraction)
    hparam_names: ClassVar[Tuple[str, ...]] = ("actor_lr", "critic_lr", "tau")

    @classmethod
    def make_actor(cls, action_dim: int, hidden: Sequence[int], backbone: str = "mlp") -> nn.Module:
        raise NotImplementedError

    @classmethod
    def make_critic(cls, hidden: Sequence[int], backbone: str = "mlp") -> nn.Module:
        return networks.TwinCritic(tuple(hidden), backbone)

    @classmethod
    def interval_for(cls, cfg: AgentConfig) -> int:
        """Critic updates per actor update (TD3: the policy delay)."""
        return 1

    obs_dim: int
    action_dim: int
    cfg: AgentConfig
    sparsity: SparsityConfig
    actor_method: Any
    critic_method: Any
    # Data-parallel training: name of the mapped device axis; gradients (and thus importance and
    # topology decisions) are averaged over it so every device keeps identical params and masks.
    grad_axis: Optional[str] = None
    batch_axes: Tuple[str, ...] = ()

    @property
    def actor_interval(self) -> int:
        return self.interval_for(self.cfg)

    @property
    def actor_hidden(self) -> Tuple[int, ...]:
        return tuple(self.cfg.actor_hidden or self.cfg.hidden)

    @property
    def critic_hidden(self) -> Tuple[int, ...]:
        return tuple(self.cfg.critic_hidden or self.cfg.hidden)

    @property
    def actor_module(self) -> nn.Module:
        return self.make_actor(self.action_dim, self.actor_hidden, self.cfg.actor_backbone)

    @property
    def critic_module(self) -> nn.Module:
        return self.make_critic(self.critic_hidden, self.cfg.critic_backbone)

    def gradients(self, loss_fn, *args, local: Tuple[str, ...] = ()):
        """``jax.grad(loss_fn, has_aux=True)(*args)``, gradients and aux metrics averaged over the
        data-parallel axis (identity on one device): the one place an update averages its gradients.
        ``local``: aux entries that stay per shard (per-sample values an update reads afterwards)."""
        grads, aux = jax.grad(loss_fn, has_aux=True)(*args)
        kept = {name: aux.pop(name) for name in local}
        if self.grad_axis is not None:
            grads, aux = jax.lax.pmean((grads, aux), self.grad_axis)
        return grads, {**aux, **kept}

    # ------------------------------------------------------------- hyperparameters as data
    @property
    def _drop_grow_schedule(self):
        """The schedule whose zeta0 the ``drop_fraction`` leaf replaces (both networks share the
        config's), or None when no network drops and grows by a fraction."""
        for m in (self.critic_method, self.actor_method):
            if m.schedule is not None and m.uses_drop_fraction:
                return m.schedule
        return None

    @property
    def hparam_keys(self) -> Tuple[str, ...]:
        """The names of ``state.hparams``: `hparam_names`, plus ``drop_fraction`` under a method that
        drops and grows by one."""
        return self.hparam_names + (("drop_fraction",) if self._drop_grow_schedule is not None else ())

    def default_hparams(self) -> Dict[str, float]:
        """The config's values of `hparam_keys`."""
        values = {name: float(getattr(self.cfg, name)) for name in self.hparam_names}
        if self._drop_grow_schedule is not None:
            values["drop_fraction"] = float(self._drop_grow_schedule.drop_fraction)
        return values

    def check_hparams(self, names) -> None:
        """ValueError naming the allowed ones if ``names`` holds one this agent does not read."""
        unknown = sorted(set(names) - set(self.hparam_keys))
        if unknown:
            raise ValueError(f"invalid hparams {unknown}: {type(self).__name__} under this method reads "
                             f"{', '.join(self.hparam_keys)}")

    def init_hparams(self, hparams: Optional[Mapping[str, Any]] = None) -> Dict[str, jax.Array]:
        """``state.hparams``: float32 scalars, the config's values overridden by ``hparams`` (may be traced:
        a vmapped sweep passes one value per seed). ValueError on a name this agent does not read."""
        self.check_hparams(hparams or {})
        values = {**self.default_hparams(), **(hparams or {})}
        return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}

    @property
    def optimizer(self):
        """Both networks' optimizer (`make_optimizer`); each update passes its network's rate."""
        c = self.cfg
        return make_optimizer(c.weight_decay, c.weight_decay_mode, c.mask_gradients)

    def apply_actor_gradients(self, net, grads, hparams):
        return dst.apply_gradients(net, grads, self.actor_method, self.optimizer, self.batch_axes,
                                   hparams.get("drop_fraction"), learning_rate=hparams["actor_lr"])

    def apply_critic_gradients(self, net, grads, hparams):
        return dst.apply_gradients(net, grads, self.critic_method, self.optimizer, self.batch_axes,
                                   hparams.get("drop_fraction"), learning_rate=hparams["critic_lr"])

    def build_nets(self, key, actor_sparsity, critic_sparsity):
        """(actor, critic) sparse networks for one seed; the actor's target as `has_actor_target` says."""
        actor_key, critic_key = jax.random.split(key)
        obs, act = jnp.zeros((1, self.obs_dim)), jnp.zeros((1, self.action_dim))
        actor = build_net(
            actor_key, self.actor_module, (obs,), actor_sparsity,
            is_sparse_net(self.sparsity.actor, self.actor_method, self.sparsity), self.sparsity,
            self.actor_method, self.optimizer, with_target=self.has_actor_target)
        critic = build_net(
            critic_key, self.critic_module, (obs, act), critic_sparsity,
            is_sparse_net(self.sparsity.critic, self.critic_method, self.sparsity), self.sparsity,
            self.critic_method, self.optimizer, with_target=True)
        return actor, critic

    def networks(self, state) -> dict:
        return {"actor": state.actor, "critic": state.critic}
