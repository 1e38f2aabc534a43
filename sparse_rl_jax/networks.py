"""Flax actor and critic networks of the agents (TD3, SAC, DDPG).

Layer naming is part of the public contract, because the sparsity layer finds input and output layers by
path: every MLP is a dict of ``dense_0 .. dense_{L-1}``; ``dense_0`` is its input layer and the highest
index its output layer. The twin critic holds two MLPs under ``q1`` and ``q2`` (kept as separate
matrices, not a stacked ensemble, so every layer of every Q has its own exact non-zero count).

Parameter trees (what ``init`` returns):
    actor:  {'params': {'dense_0': {'kernel', 'bias'}, 'dense_1': ..., 'dense_2': ...}}
    critic: {'params': {'q1': {'dense_0': ..., 'dense_1': ..., 'dense_2': ...}, 'q2': {...}}}
    single critic (DDPG): {'params': {'q1': {...}}}, so every critic's first Q is ``q1``

Masking is *not* done inside the forward pass: stored weights are kept exactly zero at inactive positions,
so gradients w.r.t. them are the dense gradients that RigL and importance growth need.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def mlp_layers(x: jax.Array, features: Sequence[int]) -> jax.Array:
    """ReLU layers ``dense_0 .. dense_{L-1}`` registered on the calling compact module."""
    for i, width in enumerate(features):
        x = Dense(width, name=f"dense_{i}")(x)
        if i < len(features) - 1:
            x = nn.relu(x)
    return x


class MLP(nn.Module):
    """ReLU MLP with layers named ``dense_0 .. dense_{L-1}``; no activation after the last layer."""

    features: Sequence[int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return mlp_layers(x, self.features)


class DeterministicActor(nn.Module):
    """TD3 actor: tanh-bounded action in [-1, 1]^A."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return jnp.tanh(mlp_layers(obs, (*self.hidden, self.action_dim)))


class GaussianActor(nn.Module):
    """SAC actor: outputs (mean, log_std) of a Gaussian before tanh squashing.

    ``scale`` (``AgentConfig.policy_scale``): 'tanh_range' maps the raw output into log std in [-5, 2];
    'softplus' takes std = softplus(raw) + 0.001, as Brax's ``NormalTanhDistribution``."""

    action_dim: int
    hidden: Sequence[int] = (256, 256)
    scale: str = "tanh_range"

    @nn.compact
    def __call__(self, obs: jax.Array) -> Tuple[jax.Array, jax.Array]:
        out = mlp_layers(obs, (*self.hidden, 2 * self.action_dim))
        mean, log_std = jnp.split(out, 2, axis=-1)
        if self.scale == "softplus":
            return mean, jnp.log(jax.nn.softplus(log_std) + SOFTPLUS_MIN_STD)
        # Soft clipping keeps gradients alive at the bounds (as in most JAX SAC implementations).
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(log_std) + 1.0)
        return mean, log_std


class TwinCritic(nn.Module):
    """Two independent Q networks Q1, Q2 taking (obs, action); returns (q1, q2), each of shape [...]."""

    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> Tuple[jax.Array, jax.Array]:
        x = jnp.concatenate([obs, action], axis=-1)
        q1 = MLP((*self.hidden, 1), name="q1")(x)[..., 0]
        q2 = MLP((*self.hidden, 1), name="q2")(x)[..., 0]
        return q1, q2


class SingleCritic(nn.Module):
    """One Q network (DDPG), under ``q1`` like the twin critic's first; returns ``(q1,)``."""

    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> Tuple[jax.Array]:
        x = jnp.concatenate([obs, action], axis=-1)
        return (MLP((*self.hidden, 1), name="q1")(x)[..., 0],)


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
