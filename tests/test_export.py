"""Exported sparse policies: action round trip (NumPy and JAX), size accounting, corrupted files, CLI.

Actors are randomly initialised Flax actors with random biases and random exact-count masks built here
with NumPy (no dependency on the sparsity modules), so a failure points at the export code.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse_rl_jax import networks
from sparse_rl_jax.export import (ChecksumError, CorruptFileError, PolicyFileError,
                                  UnsupportedVersionError, dense_checkpoint_bytes, export_actor,
                                  load_jax_policy, load_policy, read_policy, size_report)
from sparse_rl_jax.export import format as fmt
from sparse_rl_jax.export.numpy_policy import dense_numpy_actor

OBS, ACT, HIDDEN = 17, 6, (256, 256)
TOL = 1e-5


SIMBA = (64, 64)  # two residual blocks of width 64


def make_actor(algo: str, seed: int = 0, backbone: str = "mlp"):
    hidden = SIMBA if backbone == "simba" else HIDDEN
    module = (networks.DeterministicActor if algo == "td3" else networks.GaussianActor)(ACT, hidden,
                                                                                         backbone=backbone)
    params = module.init(jax.random.key(seed), jnp.zeros((1, OBS)))
    rng = np.random.default_rng(seed)
    # Non-zero biases (so every bias matters) and weights scaled so the actions are spread over (-1, 1).
    params = jax.tree.map(lambda x: 0.7 * np.asarray(x) + 0.1 * rng.standard_normal(x.shape), params)
    return module, jax.tree.map(lambda x: x.astype(np.float32), params)


def random_masks(params, sparsity: float, rng, dense_layers=()):
    """Exact-count random kernel masks (count = round((1 - sparsity) * size)); masked weights zeroed.

    Kept weights are scaled by 1/sqrt(density) (as sparse initialisations do) so the actions stay in
    tanh's sensitive range at every sparsity instead of collapsing towards the biases.
    """
    masked, masks = {}, {}
    for name, layer in params["params"].items():
        kernel = layer.get("kernel")
        if kernel is None or name in dense_layers:  # a LayerNorm's scale and bias stay dense
            masks[name] = {"kernel": None, "bias": None}
            masked[name] = dict(layer)
            continue
        flat = np.zeros(kernel.size, bool)
        flat[rng.choice(kernel.size, int(round((1 - sparsity) * kernel.size)), replace=False)] = True
        mask = flat.reshape(kernel.shape)
        masks[name] = {"kernel": mask, "bias": None}
        scale = 1.0 / np.sqrt(max(1.0 - sparsity, 1e-3))
        masked[name] = {"kernel": np.where(mask, kernel * scale, 0).astype(np.float32),
                        "bias": layer["bias"]}
    return {"params": masked}, {"params": masks}


def reference_actions(module, algo, params, obs, normalizer=None):
    """The trained JAX actor's deterministic action (the equality target)."""
    x = jnp.asarray(obs, jnp.float32)
    if normalizer is not None:
        x = (x - normalizer[0]) / normalizer[1]
    out = module.apply(params, x)
    return np.asarray(out if algo == "td3" else jnp.tanh(out[0]))


def make_normalizer(rng):
    return (rng.standard_normal(OBS).astype(np.float32),
            rng.uniform(0.5, 2.0, OBS).astype(np.float32))


@pytest.fixture(scope="module")
def actors():
    actors = {algo: make_actor(algo, seed=i) for i, algo in enumerate(("td3", "sac"))}
    actors.update({f"simba_{algo}": make_actor(algo, seed=2 + i, backbone="simba")
                   for i, algo in enumerate(("td3", "sac"))})
    return actors


@pytest.fixture()
def exported(actors, tmp_path):
    """Factory: (module, masked params, masks, normaliser, path) for one export."""

    def build(algo, sparsity, with_norm, seed=0, **kwargs):
        rng = np.random.default_rng(seed)
        module, params = actors[kwargs.pop("backbone", "") + algo]
        params, masks = random_masks(params, sparsity, rng, kwargs.pop("dense_layers", ()))
        norm = make_normalizer(rng) if with_norm else None
        path = tmp_path / f"{algo}_{sparsity}_{with_norm}.npz"
        export_actor(params, masks, algo, path, obs_normalizer=norm, **kwargs)
        return module, params, masks, norm, path

    return build


def observations(n, seed=1):
    return np.random.default_rng(seed).standard_normal((n, OBS)).astype(np.float32)


# ------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("algo", ["td3", "sac"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.98])
@pytest.mark.parametrize("with_norm", [False, True])
def test_numpy_actions_match_jax_actor(exported, algo, sparsity, with_norm):
    module, params, _, norm, path = exported(algo, sparsity, with_norm)
    obs = observations(32)
    ref = reference_actions(module, algo, params, obs, norm)
    policy = load_policy(path)
    batched = policy(obs)
    assert batched.shape == (32, ACT) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, ref, atol=TOL, rtol=0)
    single = np.stack([policy(o) for o in obs[:8]])
    assert single.shape == (8, ACT)
    np.testing.assert_allclose(single, ref[:8], atol=TOL, rtol=0)
    assert 0.2 < np.abs(ref).mean() < 0.9  # actions spread over tanh's range, neither ~0 nor saturated


@pytest.mark.parametrize("kernel", ["scipy", "sparsetools"])
def test_numpy_kernels_agree(exported, kernel):
    module, params, _, norm, path = exported("td3", 0.95, True)
    obs = observations(5)
    ref = reference_actions(module, "td3", params, obs, norm)
    policy = load_policy(path, kernel=kernel)
    np.testing.assert_allclose(np.stack([policy(o) for o in obs]), ref, atol=TOL, rtol=0)


def test_numpy_accepts_float64_lists_and_rejects_bad_shapes(exported):
    module, params, _, _, path = exported("td3", 0.9, False)
    policy = load_policy(path)
    obs = observations(1)[0]
    ref = reference_actions(module, "td3", params, obs[None])[0]
    np.testing.assert_allclose(policy(obs.astype(np.float64).tolist()), ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(policy(np.asfortranarray(observations(4))),
                               reference_actions(module, "td3", params, observations(4)), atol=TOL)
    for bad in (np.zeros(OBS + 1), np.zeros((2, OBS - 1)), np.zeros((1, 1, OBS))):
        with pytest.raises(ValueError, match="obs must have shape"):
            policy(bad)


@pytest.mark.parametrize("algo,sparsity,with_norm,kernel,min_width", [
    ("td3", 0.9, True, "gather", 32),  # default: narrow input/output layers densified
    ("sac", 0.95, False, "gather", 0),  # every layer a gather
    ("td3", 0.0, False, "gather", 32),  # wide rows: the fori_loop branch of the gather kernel
    ("sac", 0.5, True, "bcoo", 32),
    ("td3", 0.9, False, "dense", 32),
])
def test_jax_actions_match_jax_actor(exported, algo, sparsity, with_norm, kernel, min_width):
    module, params, _, norm, path = exported(algo, sparsity, with_norm)
    obs = observations(16)
    ref = reference_actions(module, algo, params, obs, norm)
    policy = load_jax_policy(path, kernel=kernel, min_sparse_width=min_width)
    assert policy.kinds == {("gather", 32): ("dense", "gather", "dense"), ("gather", 0): ("gather",) * 3,
                            ("bcoo", 32): ("bcoo",) * 3, ("dense", 32): ("dense",) * 3}[kernel, min_width]
    np.testing.assert_allclose(np.asarray(policy(obs)), ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(policy(obs[3])), ref[3], atol=TOL, rtol=0)


@pytest.mark.parametrize("algo", ["td3", "sac"])
@pytest.mark.parametrize("sparsity,with_norm", [(0.0, True), (0.9, False)])
def test_simba_actor_round_trip(exported, algo, sparsity, with_norm):
    """A simba actor (LayerNorms, residual blocks) acts the same in every runtime as in Flax; its file is
    version 2, while an MLP's stays version 1 (older readers keep reading those)."""
    module, params, masks, norm, path = exported(algo, sparsity, with_norm, backbone="simba_")
    obs = observations(16)
    ref = reference_actions(module, algo, params, obs, norm)
    assert 0.2 < np.abs(ref).mean() < 0.9
    exported_policy = read_policy(path)
    assert int(fmt._read_arrays(str(path))["format_version"]) == 2
    assert [(l.has_norm, l.skip_from, l.activation) for l in exported_policy.layers] == [
        (False, None, "identity"), (True, None, "relu"), (False, 1, "identity"), (True, None, "relu"),
        (False, 3, "identity"), (True, None, "identity")]
    numpy_policy = load_policy(path)
    np.testing.assert_allclose(numpy_policy(obs), ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.stack([numpy_policy(o) for o in obs[:4]]), ref[:4], atol=TOL, rtol=0)
    np.testing.assert_allclose(dense_numpy_actor(exported_policy)(obs), ref, atol=TOL, rtol=0)
    for kernel in ("gather", "bcoo", "dense"):
        np.testing.assert_allclose(np.asarray(load_jax_policy(path, kernel=kernel)(obs)), ref, atol=TOL, rtol=0)
    *_, mlp_path = exported(algo, sparsity, with_norm)
    assert int(fmt._read_arrays(str(mlp_path))["format_version"]) == 1


def test_dense_layers_without_mask_are_stored_dense(exported):
    module, params, _, norm, path = exported("td3", 0.9, True, dense_layers=("dense_0", "dense_2"))
    stored = read_policy(path)
    assert [l.is_sparse for l in stored.layers] == [False, True, False]
    obs = observations(8)
    ref = reference_actions(module, "td3", params, obs, norm)
    np.testing.assert_allclose(load_policy(path)(obs), ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(load_policy(path)(obs[0]), ref[0], atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(load_jax_policy(path)(obs)), ref, atol=TOL, rtol=0)


def test_float16_values_are_smaller_and_close(exported, tmp_path):
    module, params, masks, _, path32 = exported("td3", 0.9, False)
    export_actor(params, masks, "td3", tmp_path / "f16.npz", values_dtype="float16")
    assert os.path.getsize(tmp_path / "f16.npz") < 0.75 * os.path.getsize(path32)
    obs = observations(16)
    ref = reference_actions(module, "td3", params, obs)
    np.testing.assert_allclose(load_policy(tmp_path / "f16.npz")(obs), ref, atol=2e-2, rtol=0)


def test_metadata_round_trip_and_rejects_unserialisable(exported, actors, tmp_path):
    _, params, masks, _, _ = exported("td3", 0.5, False)
    meta = {"env": "halfcheetah", "step": np.int64(3), "lr": np.float32(0.5), "hidden": np.array([256])}
    export_actor(params, masks, "td3", tmp_path / "m.npz", metadata=meta)
    assert load_policy(tmp_path / "m.npz").metadata == {"env": "halfcheetah", "step": 3, "lr": 0.5,
                                                        "hidden": [256]}
    with pytest.raises(ValueError, match="JSON"):
        export_actor(params, masks, "td3", tmp_path / "bad.npz", metadata={"x": object()})


def test_every_agent_has_an_export_head():
    from sparse_rl_jax import agents
    from sparse_rl_jax.export import format as fmt

    assert set(fmt.HEADS) == set(agents.names()) and set(fmt.HEADS.values()) <= set(fmt.OUTPUT_TRANSFORMS)


def test_export_rejects_unmasked_weights_and_bad_algo(actors, tmp_path):
    _, params = actors["td3"]
    _, masks = random_masks(params, 0.9, np.random.default_rng(0))
    with pytest.raises(ValueError, match="non-zero where the mask is False"):
        export_actor(params, masks, "td3", tmp_path / "x.npz")  # params not masked
    with pytest.raises(ValueError, match="algo"):
        export_actor(params, None, "ppo", tmp_path / "x.npz")
    assert not os.path.exists(tmp_path / "x.npz")


# -------------------------------------------------------------------------------- size accounting
@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_stored_nnz_equals_mask_count(exported, algo):
    _, _, masks, _, path = exported(algo, 0.9, False)
    report = size_report(path)
    for name, layer in masks["params"].items():
        mask = layer["kernel"]
        if algo == "sac" and name == "dense_2":  # log-std half of the output layer is dropped
            mask = mask[:, :ACT]
        assert report["nnz"][name] == int(mask.sum())
    stored = read_policy(path)
    assert stored.layers[-1].shape == (ACT, HIDDEN[-1])
    assert stored.layers[1].indices.dtype == np.uint8  # 256 inputs -> 1-byte column indices
    assert stored.layers[0].indices.dtype == np.uint8


def test_indices_use_smallest_dtype():
    assert fmt.smallest_uint(255) == np.uint8
    assert fmt.smallest_uint(256) == np.uint16
    assert fmt.smallest_uint(65535) == np.uint16
    assert fmt.smallest_uint(65536) == np.uint32


@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_file_smaller_than_dense_checkpoint(exported, tmp_path, actors, algo):
    _, params90, _, _, path90 = exported(algo, 0.9, False)
    _, _, _, _, path95 = exported(algo, 0.95, False)
    dense = dense_checkpoint_bytes(actors[algo][1], tmp_path / "dense.npz")
    assert dense > 4 * (17 * 256 + 256 * 256 + 256 * ACT)  # the dense floats are really in there
    assert os.path.getsize(path90) < dense / 5
    assert os.path.getsize(path95) < dense / 10  # the goal at 95% sparsity


# --------------------------------------------------------------------------------- corrupted files
def _arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _rewrite(path, arrays, fix_checksum):
    if fix_checksum:
        payload = {k: v for k, v in arrays.items() if k != "checksum"}
        arrays["checksum"] = np.frombuffer(fmt.checksum(payload), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_wrong_version_is_a_clear_error(exported):
    *_, path = exported("td3", 0.9, False)
    arrays = _arrays(path)
    arrays["format_version"] = np.asarray(3, np.int32)
    _rewrite(path, arrays, fix_checksum=True)  # a well-formed version-3 file, not a corrupted one
    with pytest.raises(UnsupportedVersionError, match="version 3 is not supported.*reads versions 1, 2"):
        load_policy(path)


@pytest.mark.parametrize("keep", [0, 10, 0.5, -22])
def test_truncated_file_is_a_clear_error(exported, keep):
    *_, path = exported("td3", 0.9, False)
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    path.write_bytes(data[:cut])
    with pytest.raises(CorruptFileError, match="truncated"):
        load_policy(path)


@pytest.mark.parametrize("compress", [True, False])
def test_flipped_byte_is_a_checksum_error(exported, compress):
    *_, path = exported("td3", 0.9, False, compress=compress)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("layer1.values.npy")
    data = bytearray(path.read_bytes())
    header = 30 + len(info.filename.encode()) + len(info.extra)  # zip local file header
    data[info.header_offset + header + info.compress_size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="corrupted"):
        load_policy(path)


def test_modified_array_is_a_checksum_error(exported):
    *_, path = exported("sac", 0.9, True)
    arrays = _arrays(path)
    arrays["layer1.values"] = arrays["layer1.values"].copy()
    arrays["layer1.values"][7] += 1e-3  # valid zip (fresh CRCs), stale sha256
    _rewrite(path, arrays, fix_checksum=False)
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        load_policy(path)
    arrays["obs_std"] = arrays["obs_std"][:-1]  # dropped or resized entries too
    _rewrite(path, arrays, fix_checksum=False)
    with pytest.raises(ChecksumError):
        load_jax_policy(path)


def test_not_a_policy_file(tmp_path):
    path = tmp_path / "dense.npz"
    np.savez(path, kernel=np.zeros((3, 3)))
    with pytest.raises(CorruptFileError, match="not an exported policy"):
        load_policy(path)
    (tmp_path / "junk.npz").write_bytes(b"hello world, definitely not a zip file" * 10)
    with pytest.raises(PolicyFileError):
        load_policy(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "missing.npz")


# ---------------------------------------------------------------------------------- without JAX
def test_numpy_runtime_runs_without_jax(exported, tmp_path):
    """Copy the export package elsewhere and run it in a process where importing JAX fails."""
    module, params, _, norm, path = exported("sac", 0.95, True)
    obs = observations(4)
    np.save(tmp_path / "obs.npy", obs)
    np.save(tmp_path / "ref.npy", reference_actions(module, "sac", params, obs, norm))
    pkg = os.path.join(os.path.dirname(networks.__file__), "export")
    shutil.copytree(pkg, tmp_path / "deploy_policy", ignore=shutil.ignore_patterns("__pycache__"))
    script = textwrap.dedent(f"""
        import sys
        sys.modules["jax"] = None  # any 'import jax' now raises ImportError
        sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np
        from deploy_policy import load_policy
        policy = load_policy({str(path)!r})
        obs, ref = np.load({str(tmp_path / 'obs.npy')!r}), np.load({str(tmp_path / 'ref.npy')!r})
        assert np.abs(policy(obs) - ref).max() <= {TOL}
        assert np.abs(np.stack([policy(o) for o in obs]) - ref).max() <= {TOL}
        assert not any(m == "jax" or m.startswith("jax.") for m in sys.modules if sys.modules[m])
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ------------------------------------------------------------------------------------------- CLI
def test_cli_exits_2_without_checkpoint_module(monkeypatch, tmp_path, capsys):
    from experiments import export as cli

    monkeypatch.setitem(sys.modules, "sparse_rl_jax.runs", None)  # import now fails
    status = cli.main(["export", "--workdir", str(tmp_path), "--out", str(tmp_path / "p.npz")])
    assert status == 2
    assert "sparse_rl_jax.runs" in capsys.readouterr().err


def test_cli_exports_newest_checkpoint(monkeypatch, tmp_path, actors, capsys):
    """A stand-in checkpoint module with the documented ``restore_latest`` contract (2 seeds)."""
    from experiments import export as cli

    module, params = actors["sac"]
    seeds = [random_masks(params, 0.9, np.random.default_rng(s)) for s in range(2)]
    stack = lambda *xs: np.stack(xs)  # noqa: E731
    states = types.SimpleNamespace(agent=types.SimpleNamespace(actor=types.SimpleNamespace(
        params=jax.tree.map(stack, seeds[0][0], seeds[1][0]),
        masks=jax.tree.map(stack, seeds[0][1], seeds[1][1]))))
    fake = types.ModuleType("sparse_rl_jax.runs")
    fake.restore_latest = lambda workdir: ({"algo": "sac", "method": "rigl",
                                            "env": {"name": "halfcheetah"}}, states)
    monkeypatch.setitem(sys.modules, "sparse_rl_jax.runs", fake)
    out = tmp_path / "p.npz"
    assert cli.main(["export", "--workdir", str(tmp_path), "--out", str(out), "--seed", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    policy = load_policy(out)
    assert policy.metadata["method"] == "rigl" and policy.metadata["seed"] == 1
    obs = observations(8)
    np.testing.assert_allclose(policy(obs), reference_actions(module, "sac", seeds[1][0], obs),
                               atol=TOL, rtol=0)
    assert cli.main(["export", "--workdir", str(tmp_path)]) == 2  # --out missing


@pytest.mark.parametrize("algo", ["td3", "sac", "ddpg"])
def test_export_of_normalised_run_acts_like_trained_policy(tmp_path, algo, capsys):
    """A run with ``env.normalize_observations``: its checkpoint's running stats become the file's
    normaliser, so the exported policy (NumPy and JAX) on raw observations gives
    ``agent.policy(params, normalize(stats, obs))``, as does ``runs.load_policy``."""
    from experiments import export as cli
    from sparse_rl_jax import checkpoint, normalization, runner, runs, trainer
    from tests.conftest import tiny_config

    config = tiny_config("rigl", algo, **{"env.normalize_observations": True, "sparsity.actor": 0.8})
    run = runner.Runner(config, num_seeds=2)
    tr, states = run.trainer, run.init(trainer.seed_keys(0, 2))
    rng = np.random.default_rng(3)
    offset, scale = rng.uniform(-30, 30, tr.obs_dim), rng.uniform(0.05, 20, tr.obs_dim)

    def raw_obs(n):
        return (offset + scale * rng.standard_normal((n, tr.obs_dim))).astype(np.float32)

    per_seed = [normalization.update(normalization.update(normalization.init(tr.obs_dim), raw_obs(50)),
                                     raw_obs(30 + 40 * s)) for s in range(2)]
    states = states.replace(obs_stats=jax.tree.map(lambda *xs: jnp.stack(xs), *per_seed))
    checkpoint.save(str(tmp_path), 1, states, [], config)
    out = tmp_path / "p.npz"
    assert cli.main(["export", "--workdir", str(tmp_path), "--out", str(out), "--seed", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert read_policy(out).obs_mean is not None

    params = jax.tree.map(lambda x: x[1], states.agent.actor.params)
    obs = raw_obs(16)
    want = np.asarray(tr.agent.policy(params, normalization.normalize(per_seed[1], obs)))
    assert not np.allclose(np.asarray(tr.agent.policy(params, obs)), want, atol=1e-2)  # it matters here
    np.testing.assert_allclose(load_policy(out)(obs), want, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(load_jax_policy(out)(obs)), want, atol=TOL, rtol=0)
    np.testing.assert_allclose(load_policy(out)(obs[0]), want[0], atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(runs.load_policy(str(tmp_path), seed=1)(obs)), want,
                               atol=TOL, rtol=0)
