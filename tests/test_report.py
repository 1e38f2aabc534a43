"""Tests of the report CLI: end to end via subprocess, and ``main(argv)`` in-process for the details."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparse_rl_jax import report

ROOT = Path(__file__).resolve().parents[1]
BASE = ["--algo", "td3", "--obs-dim", "17", "--act-dim", "6", "--actor-sparsity", "0.9",
        "--critic-sparsity", "0.85", "--distribution", "erk"]
# mujoco.mjx prints these to stdout when brax is imported by the package __init__ (not by the report).
THIRD_PARTY_NOISE = ("Failed to import warp", "Failed to import mujoco_warp")


@pytest.fixture(scope="module")
def cli():
    """Both CLI subprocesses started at once (each pays the package import), results by name."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    runs = {"json": [*BASE, "--json"], "bad": [*BASE, "--critic-sparsity", "-0.1"]}
    procs = {name: subprocess.Popen([sys.executable, "-m", "sparse_rl_jax.report", *args], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, args in runs.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        out[name] = (proc.returncode, stdout, stderr)
    return out


def _check_summary(data):
    assert set(data) == {"total_size", "train_flops", "inference_flops", "params"}
    for key in ("total_size", "train_flops", "inference_flops"):
        assert 0.0 < data[key] <= 1.0
    # actor 10% of 71,424 and critic 15% of 143,360 weights (exact counts round per layer)
    assert data["params"] == pytest.approx(0.1 * 71_424 + 0.15 * 143_360, abs=12)
    assert data["inference_flops"] == pytest.approx(0.1, abs=1e-3)


def test_cli_json_end_to_end(cli):
    returncode, stdout, stderr = cli["json"]
    assert returncode == 0, stderr
    lines = [l for l in stdout.splitlines() if not l.startswith(THIRD_PARTY_NOISE)]
    assert len(lines) == 1
    _check_summary(json.loads(lines[0]))


def test_cli_bad_input_exits_2(cli):
    returncode, stdout, stderr = cli["bad"]
    assert returncode == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "--critic-sparsity=-0.1" in lines[0] and "[0, 1)" in lines[0]


def test_main_json_prints_exactly_one_object(capsys):
    assert report.main(["report", *BASE, "--json"]) == 0
    _check_summary(json.loads(capsys.readouterr().out))


def test_main_table_mentions_every_layer(capsys):
    argv = ["report", "--algo", "sac", "--obs-dim", "3", "--act-dim", "1", "--actor-sparsity", "0.5",
            "--critic-sparsity", "0.5", "--distribution", "er", "--hidden", "8", "--dense-output"]
    assert report.main(argv) == 0
    text = capsys.readouterr().out
    for needle in ("dense_0/kernel", "q1/dense_1/kernel", "q2/dense_0/kernel", "total size", "train FLOPs"):
        assert needle in text


@pytest.mark.parametrize("args, option", [
    (["--actor-sparsity", "1.0"], "--actor-sparsity=1.0"),
    (["--distribution", "gaussian"], "--distribution=gaussian"),
    (["--algo", "ppo"], "--algo=ppo"),
    (["--obs-dim", "0"], "--obs-dim=0"),
    (["--hidden", "256,-1"], "--hidden=256,-1"),
])
def test_main_bad_input_returns_2_with_one_clear_line(capsys, args, option):
    assert report.main(["report", *BASE, *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0]


def test_ddpg_report_counts_one_critic_and_an_actor_update_every_step():
    """DDPG (one Q, no delay) on HalfCheetah's sizes, dense: counts worked out by hand."""
    r = report.compute_report("ddpg", 17, 6, 0.0, 0.0, "erk")
    actor, critic = 17 * 256 + 256 * 256 + 256 * 6, (17 + 6) * 256 + 256 * 256 + 256
    assert (r["counts"]["actor"].dense, r["counts"]["critic"].dense) == (actor, critic)
    # per sample: actor target + critic target forwards, critic fwd+bwd, then actor (3) and critic (3)
    assert r["train_flops"].dense == (1 + 3) * actor + (1 + 3 + 3) * critic
    assert r["total_size"].dense == 2 * actor + 2 * critic
    sparse = report.compute_report("ddpg", 17, 6, 0.9, 0.9, "uniform")
    assert sparse["total_size"].fraction == pytest.approx(0.1, abs=1e-3)
    text = report.format_report(sparse, "ddpg")
    assert "total size (actor + actor target + critic + critic target)" in text
    assert "q2" not in text
