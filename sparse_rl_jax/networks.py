"""Flax actor and critic networks of the agents (TD3, SAC, DDPG), on one of two backbones.

Layer naming is part of the public contract, because the sparsity layer finds input and output layers by
path: every network body is a dict of ``dense_0 .. dense_{L-1}`` kernels in the order the input meets
them; ``dense_0`` is its input layer and the highest index its output layer (the head). The twin critic
holds two networks under ``q1`` and ``q2`` (kept as separate matrices, not a stacked ensemble, so every
layer of every Q has its own exact non-zero count).

Backbones (`BACKBONES`, per network: ``agent.actor_backbone`` / ``agent.critic_backbone``):

* ``mlp``: ReLU layers of widths ``hidden``, then the head.
* ``simba`` (Lee et al., SimBa, ICLR 2025; the body of Ma et al., ICML 2025): an encoder ``Dense(h)``
  (orthogonal init), then per entry of ``hidden`` (all equal to ``h``, the skip adds them) a residual
  block ``x + Dense(h)(ReLU(Dense(4h)(LayerNorm(x))))`` (He init), a final LayerNorm, then the head
  (orthogonal init). Its kernels are ``dense_0`` (encoder), ``dense_{2b+1}``, ``dense_{2b+2}`` (block
  ``b``'s expansion and projection) and ``dense_{2B+1}`` (head); its LayerNorms are ``norm_0 ..
  norm_B`` (``norm_B`` the final one). So every kernel is maskable by the same rules as an MLP's,
  while the LayerNorms' scales and biases (1-D) stay dense.

Parameter trees (what ``init`` returns), MLP:
    actor:  {'params': {'dense_0': {'kernel', 'bias'}, 'dense_1': ..., 'dense_2': ...}}
    critic: {'params': {'q1': {'dense_0': ..., 'dense_1': ..., 'dense_2': ...}, 'q2': {...}}}
    single critic (DDPG, SAC with ``agent.single_q``): {'params': {'q1': {...}}}, so every critic's
    first Q is ``q1``

Every ReLU's output and the last hidden features (the head's input) are sown as ``intermediates``
(``activations``, ``features``) for the plasticity diagnostics (`plasticity.py`); an ``apply`` that does
not ask for that collection pays nothing.

Masking is *not* done inside the forward pass: stored weights are kept exactly zero at inactive positions,
so gradients w.r.t. them are the dense gradients that RigL and importance growth need.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from sparse_rl_jax.config import BACKBONES

SIMBA_EXPANSION = 4  # a block's inner width is 4h

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0
SOFTPLUS_MIN_STD = 0.001  # Brax's min_std


@jax.custom_vjp
def kernel_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x @ kernel`` over the last axis of ``x``, with a VJP that emits the kernel gradient in the
    kernel's own ``[in, out]`` layout.

    Why: autodiff of the product gives ``dW`` as a dot in ``[out, in]`` order followed by a transpose.
    Without a batch axis XLA folds that transpose into the dot; under the seed ``vmap`` (which the
    trainer always runs, also for one seed) it does not, so every consumer of the gradient (Adam,
    importance EMAs, drop/grow scores) read it through a strided transpose: 10% of a dense update and up
    to 40% of DS+importance's (docs/benchmarks.md). Contracting ``x`` and the cotangent over the batch
    with ``x`` first gives ``[in, out]`` directly, vmapped or not. Same products, so the same values up
    to the dot's summation order.
    """
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _kernel_matmul_fwd(x, kernel):
    return kernel_matmul(x, kernel), (x, kernel)


def _kernel_matmul_bwd(res, g):
    x, kernel = res
    dx = jax.lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())))
    batch = tuple(range(x.ndim - 1))
    dkernel = jax.lax.dot_general(x, g, ((batch, batch), ((), ())))
    return dx, dkernel


kernel_matmul.defvjp(_kernel_matmul_fwd, _kernel_matmul_bwd)


class Dense(nn.Module):
    """``flax.linen.Dense`` (same parameter names, shapes and initialisers, so the same initial weights)
    through `kernel_matmul`."""

    features: int
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (jnp.shape(x)[-1], self.features), jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return kernel_matmul(x, kernel) + bias


def check_hidden(backbone: str, hidden: Sequence[int]) -> None:
    """ValueError unless ``hidden`` describes a ``backbone`` body."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; allowed: {', '.join(BACKBONES)}")
    if not hidden:
        raise ValueError("hidden must name at least one layer (mlp) or block (simba)")
    if backbone == "simba" and len(set(hidden)) != 1:
        raise ValueError(f"a simba body's blocks share one width (their skips add), got {tuple(hidden)}")


def body_layers(module: nn.Module, x: jax.Array, backbone: str, hidden: Sequence[int], out: int) -> jax.Array:
    """A ``backbone`` body of widths ``hidden`` and its linear head of width ``out``, registered on the
    calling compact ``module`` (module docstring: layer names); sows every ReLU's output as
    ``activations`` and the head's input as ``features``."""
    check_hidden(backbone, hidden)
    if backbone == "mlp":
        for i, width in enumerate(hidden):
            x = nn.relu(Dense(width, name=f"dense_{i}")(x))
            module.sow("intermediates", "activations", x)
        module.sow("intermediates", "features", x)
        return Dense(out, name=f"dense_{len(hidden)}")(x)
    h, blocks = int(hidden[0]), len(hidden)
    x = Dense(h, kernel_init=nn.initializers.orthogonal(), name="dense_0")(x)
    for b in range(blocks):
        y = nn.LayerNorm(name=f"norm_{b}")(x)
        y = nn.relu(Dense(SIMBA_EXPANSION * h, kernel_init=nn.initializers.he_normal(), name=f"dense_{2 * b + 1}")(y))
        module.sow("intermediates", "activations", y)
        x = x + Dense(h, kernel_init=nn.initializers.he_normal(), name=f"dense_{2 * b + 2}")(y)
    x = nn.LayerNorm(name=f"norm_{blocks}")(x)
    module.sow("intermediates", "features", x)
    return Dense(out, kernel_init=nn.initializers.orthogonal(), name=f"dense_{2 * blocks + 1}")(x)


def kernel_count(backbone: str, hidden: Sequence[int]) -> int:
    """Kernels of one body with its head (the ``dense_i`` layers)."""
    return len(hidden) + 1 if backbone == "mlp" else 2 * len(hidden) + 2


class MLP(nn.Module):
    """ReLU MLP with layers named ``dense_0 .. dense_{L-1}``; no activation after the last layer."""

    features: Sequence[int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return body_layers(self, x, "mlp", self.features[:-1], self.features[-1])


class Body(nn.Module):
    """A ``backbone`` body of widths ``hidden`` with its linear head of width ``out``."""

    out: int
    hidden: Sequence[int] = (256, 256)
    backbone: str = "mlp"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return body_layers(self, x, self.backbone, self.hidden, self.out)


class DeterministicActor(nn.Module):
    """TD3 actor: tanh-bounded action in [-1, 1]^A."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    backbone: str = "mlp"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return jnp.tanh(body_layers(self, obs, self.backbone, self.hidden, self.action_dim))


class GaussianActor(nn.Module):
    """SAC actor: outputs (mean, log_std) of a Gaussian before tanh squashing.

    ``scale`` (``AgentConfig.policy_scale``): 'tanh_range' maps the raw output into log std in [-5, 2];
    'softplus' takes std = softplus(raw) + 0.001, as Brax's ``NormalTanhDistribution``."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    scale: str = "tanh_range"
    backbone: str = "mlp"

    @nn.compact
    def __call__(self, obs: jax.Array) -> Tuple[jax.Array, jax.Array]:
        out = body_layers(self, obs, self.backbone, self.hidden, 2 * self.action_dim)
        mean, log_std = jnp.split(out, 2, axis=-1)
        if self.scale == "softplus":
            return mean, jnp.log(jax.nn.softplus(log_std) + SOFTPLUS_MIN_STD)
        # Soft clipping keeps gradients alive at the bounds (as in most JAX SAC implementations).
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(log_std) + 1.0)
        return mean, log_std


class TwinCritic(nn.Module):
    """Two independent Q networks Q1, Q2 taking (obs, action); returns (q1, q2), each of shape [...]."""

    hidden: Sequence[int] = (256, 256)
    backbone: str = "mlp"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> Tuple[jax.Array, jax.Array]:
        x = jnp.concatenate([obs, action], axis=-1)
        q1 = Body(1, self.hidden, self.backbone, name="q1")(x)[..., 0]
        q2 = Body(1, self.hidden, self.backbone, name="q2")(x)[..., 0]
        return q1, q2


class SingleCritic(nn.Module):
    """One Q network (DDPG; SAC with ``agent.single_q``), under ``q1`` like the twin critic's first;
    returns ``(q1,)``."""

    hidden: Sequence[int] = (256, 256)
    backbone: str = "mlp"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> Tuple[jax.Array]:
        x = jnp.concatenate([obs, action], axis=-1)
        return (Body(1, self.hidden, self.backbone, name="q1")(x)[..., 0],)


def squash_gaussian_sample(key: jax.Array, mean: jax.Array, log_std: jax.Array):
    """Reparameterised tanh-Gaussian sample and its log-probability (summed over action dims)."""
    std = jnp.exp(log_std)
    noise = jax.random.normal(key, mean.shape, mean.dtype)
    pre_tanh = mean + std * noise
    action = jnp.tanh(pre_tanh)
    log_prob = -0.5 * (noise**2 + 2.0 * log_std + jnp.log(2.0 * jnp.pi))
    # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), numerically stable.
    log_det = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return action, jnp.sum(log_prob - log_det, axis=-1)
