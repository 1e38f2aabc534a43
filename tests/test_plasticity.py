"""The plasticity measures, checked by hand on small cases, and read from every backbone's bodies."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_rl_jax import networks, plasticity


def test_dormant_ratio_by_hand():
    # layer 1: scores |a| means 1, 1, 0.05, 1.95 (layer mean 1): one unit at or below 0.1
    a1 = jnp.array([[1.0, -1.0, 0.05, 1.9], [1.0, 1.0, -0.05, 2.0]])
    # layer 2: means 0, 2 (layer mean 1): one dead unit
    a2 = jnp.array([[0.0, 2.0], [0.0, -2.0]])
    assert float(plasticity.dormant_ratio([a1, a2])) == pytest.approx(2 / 6)
    assert float(plasticity.dormant_ratio([a1], tau=0.04)) == 0.0
    assert float(plasticity.dormant_ratio([jnp.zeros((3, 5))])) == 1.0  # every unit dead


def test_srank_by_hand():
    # singular values 10, 1, 0.05 (sum 11.05): 10 < 0.99 * 11.05 <= 11 -> srank 2
    features = jnp.diag(jnp.array([10.0, 1.0, 0.05]))
    assert float(plasticity.srank(features)) == 2.0
    assert float(plasticity.srank(features, delta=0.001)) == 3.0
    assert float(plasticity.srank(jnp.ones((8, 4)))) == 1.0  # rank one
    assert float(plasticity.srank(jnp.zeros((8, 4)))) == 0.0
    rng = np.random.default_rng(0)
    assert float(plasticity.srank(jnp.asarray(rng.standard_normal((256, 16)), jnp.float32))) == 16.0


def test_norms_by_hand():
    assert float(plasticity.feature_norm(jnp.array([[3.0, 4.0], [0.0, 1.0]]))) == pytest.approx(3.0)
    params = {"a": {"kernel": jnp.full((2, 2), 1.0), "bias": jnp.array([2.0])}, "b": jnp.array([1.0, 1.0])}
    assert float(plasticity.weight_norm(params)) == pytest.approx(np.sqrt(4 + 4 + 2))


@pytest.mark.parametrize("backbone,hidden,units", [("mlp", (8, 6), 8 + 6), ("simba", (4, 4), 16 + 16)])
def test_every_relu_and_the_head_input_are_measured(backbone, hidden, units):
    """An MLP's ReLU layers, a SimBa body's block expansions (4h each); the twin critic's both Qs."""
    critic = networks.TwinCritic(hidden, backbone)
    params = critic.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)), jnp.zeros((1, 2)))
    obs, act = jax.random.normal(jax.random.PRNGKey(1), (32, 3)), jnp.zeros((32, 2))
    acts, feats = plasticity.sown(critic, params, obs, act)
    assert sum(a.shape[-1] for a in acts) == 2 * units and [f.shape for f in feats] == [(32, hidden[-1])] * 2
    # the sown features are what the head reads: Q1 recomputed from them
    head = params["params"]["q1"][f"dense_{networks.kernel_count(backbone, hidden) - 1}"]
    q1, _ = critic.apply(params, obs, act)
    np.testing.assert_allclose(feats[0] @ head["kernel"][:, 0] + head["bias"][0], q1, rtol=1e-5, atol=1e-5)
    out = plasticity.measure(critic, params, obs, act)
    assert set(out) == set(plasticity.STATE_MEASURES) and 0 <= float(out["dormant_ratio"]) <= 1
    assert 1 <= float(out["srank"]) <= hidden[-1]
