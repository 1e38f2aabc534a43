"""End-to-end launcher runs on a tiny budget: outputs, resume after a kill during a save, divergence,
evaluation, and every kind of bad input (exit 2, one line, nothing compiled or changed).

The CLI runs in subprocesses that share a JAX persistent compilation cache, so the resumed and the
diverging runs reuse the compiled programs of the first TD3 run.
"""
import dataclasses
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from experiments import train
from sparse_rl_jax import (callbacks, checkpoint, cli, config_flag, distributed, launch, plasticity, run_logging,
                           runner, runs)
from sparse_rl_jax import config as cfg_lib
from sparse_rl_jax import trainer as trainer_lib
from sparse_rl_jax.export import load_policy, read_policy
from tests.conftest import CONFIGS, ROOT, TIMING, tiny_args, tiny_config

TINY = tiny_args(eval_every=160)  # four evaluation periods
TD3_ARGS = [f"--config={CONFIGS}/preset.py:rlx2,td3", *TINY, "--seeds=2", "--keep_checkpoints=2"]
# SAC and DDPG run on SimBa bodies (the TD3 run and the learning tests cover MLPs): one residual block of
# width 16, one ER lambda per sparse kernel for DS (encoder, the block's two; its head stays dense)
SIMBA_ARGS = [*tiny_args(eval_every=160, **{"agent.hidden": (16,)}), "--config.agent.actor_backbone=simba",
              "--config.agent.critic_backbone=simba"]
SAC_ARGS = [f"--config={CONFIGS}/preset.py:ds,sac", "--config.env=inverted_pendulum", *SIMBA_ARGS,
            "--config.agent.single_q=True", "--config.sparsity.er_lambdas=(1.5,4,4)"]
DDPG_ARGS = [f"--config={CONFIGS}/preset.py:rigl+importance,ddpg", *SIMBA_ARGS, "--noplots"]
CHUNKS = 4


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("jax_cache")))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def _cmd(module, *args):
    return [sys.executable, "-m", module, *args]


def run_cli(env, module, *args, timeout=600):
    return subprocess.run(_cmd(module, *args), env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


class Background:
    """A CLI run started in the background (XLA compiles on one core: two first runs overlap well)."""

    def __init__(self, env, workdir, *args):
        self.workdir = workdir
        self.proc = subprocess.Popen(_cmd("experiments.train", *args, f"--workdir={workdir}"), env=env, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.result = None

    def wait(self):
        if self.result is None:
            stdout, stderr = self.proc.communicate(timeout=900)
            self.result = subprocess.CompletedProcess(self.proc.args, self.proc.returncode, stdout, stderr)
        return self.result


@pytest.fixture(scope="module")
def first_runs(cli_env, tmp_path_factory):
    """The TD3, SAC and DDPG end-to-end runs, started together."""
    runs = {"td3": Background(cli_env, str(tmp_path_factory.mktemp("td3") / "run"), *TD3_ARGS),
            "sac": Background(cli_env, str(tmp_path_factory.mktemp("sac") / "run"), *SAC_ARGS,
                              "--checkpoint_every=2"),
            "ddpg": Background(cli_env, str(tmp_path_factory.mktemp("ddpg") / "run"), *DDPG_ARGS)}
    yield runs
    for run in runs.values():
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


@pytest.fixture(scope="module")
def td3_run(first_runs):
    proc = first_runs["td3"].wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    return first_runs["td3"].workdir, proc


def _is_png(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", head[16:24])
    assert width > 50 and height > 50
    return True


def _jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.slow
def test_td3_end_to_end_outputs(td3_run):
    workdir, proc = td3_run
    out = proc.stdout
    # Progress a person can follow, then the summary table and where things are.
    assert f"[{CHUNKS}/{CHUNKS}] env steps 640/640 (100%)" in out
    for part in ("env steps/s", "elapsed", "remaining", "eval return", "mean of 2 seeds", "sparsity actor"):
        assert part in out
    for col in ("final return", "best return", "AUC", "total size", "train FLOPs", "infer FLOPs"):
        assert col in out
    assert "mean " in out and "summary:" in out
    for banner in ("Failed to import warp", "Failed to import mujoco_warp", "not actively being maintained"):
        assert banner not in out and banner not in proc.stderr  # sparse_rl_jax.quiet
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["method"] == "rlx2" and config["agent"]["hidden"] == [16, 16]
    for seed in (0, 1):
        rows = _jsonl(os.path.join(workdir, "metrics", f"seed_{seed}.jsonl"))
        assert [r["env_steps"] for r in rows] == [160, 320, 480, 640]
        assert {"eval/episode_reward", "sparsity/actor", "buffer/size", "nstep",
                "density/actor/dense_0", "density/critic/q1/dense_1"} <= set(rows[0])
        assert {f"plasticity/{n}/{m}" for n in ("actor", "critic") for m in plasticity.MEASURES} <= set(rows[-1])
        with open(os.path.join(workdir, "metrics", f"seed_{seed}.csv")) as f:
            lines = f.read().splitlines()
        assert lines[0].startswith("env_steps,") and len(lines) == 1 + CHUNKS
        events = os.listdir(os.path.join(workdir, "tensorboard", f"seed_{seed}"))
        assert any(e.startswith("events.out.tfevents") for e in events)
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert len(summary["seeds"]) == 2
    import jax
    assert summary["platform"]["jax"] == jax.__version__ and summary["platform"]["backend"] == "cpu"
    for key in ("final_return", "best_return", "auc", "sparsity_actor", "sparsity_critic", "total_size",
                "train_flops", "inference_flops", "plasticity/critic/srank", "plasticity/actor/grad_norm"):
        assert summary["mean"][key] is not None
    assert 0.85 < summary["mean"]["sparsity_actor"] < 0.95
    assert summary["mean"]["total_size"] < 0.3 and summary["mean"]["inference_flops"] < 0.2
    # training FLOPs: the summary is the run's accumulated count, the periods' figures add up to it
    for seed in (0, 1):
        rows = _jsonl(os.path.join(workdir, "metrics", f"seed_{seed}.jsonl"))
        sparse = [b["flops/train_so_far"] - a["flops/train_so_far"] for a, b in zip([{"flops/train_so_far": 0}] + rows, rows)]
        dense = [b["flops/train_dense_so_far"] - a["flops/train_dense_so_far"]
                 for a, b in zip([{"flops/train_dense_so_far": 0}] + rows, rows)]
        for r, s_, d_ in zip(rows, sparse, dense):
            if d_ > 0:
                assert abs(r["flops/train_fraction"] - s_ / d_) < 1e-9
        assert abs(summary["seeds"][seed]["train_flops"] - sum(sparse) / sum(dense)) < 1e-9
        assert 0.05 < summary["seeds"][seed]["train_flops"] < 0.5
    for name in ("learning_curve", "layer_density", "final_masks", "plasticity", "buffer_nstep"):
        assert _is_png(os.path.join(workdir, "plots", f"{name}.png"))
    assert checkpoint.all_periods(workdir) == [CHUNKS - 1, CHUNKS]


@pytest.mark.slow
def test_sac_end_to_end(first_runs):
    workdir, proc = first_runs["sac"].workdir, first_runs["sac"].wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[4/4] env steps 640/640 (100%)" in proc.stdout
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert summary["algo"] == "sac" and summary["method"] == "ds" and summary["num_seeds"] == 1
    assert summary["seeds"][0]["final_return"] is not None
    critic = runs.restore(workdir).states.agent.critic.params["params"]
    assert sorted(critic) == ["q1"] and {"norm_0", "norm_1", "dense_3"} <= set(critic["q1"])  # one Q, one block
    assert checkpoint.all_periods(workdir) == [2, 4]
    assert _is_png(os.path.join(workdir, "plots", "learning_curve.png"))
    assert not os.path.exists(os.path.join(workdir, "plots", "buffer_nstep.png"))  # not an RLx2 run


@pytest.mark.slow
def test_ddpg_end_to_end_with_export(first_runs, cli_env, tmp_path):
    """The third agent through the same launcher, summary, export CLI and policy loading: both of its
    networks evolved (RigL with importance growth), one critic, no actor delay."""
    workdir, proc = first_runs["ddpg"].workdir, first_runs["ddpg"].wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rigl+importance DDPG on inverted_pendulum" in proc.stdout
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert summary["algo"] == "ddpg" and summary["seeds"][0]["final_return"] is not None
    last = _jsonl(os.path.join(workdir, "metrics", "seed_0.jsonl"))[-1]
    assert last["topology/actor/net_updates"] == last["topology/critic/net_updates"] > 0  # no policy delay
    events = [sum(r[f"topology/{n}/events"] for r in _jsonl(os.path.join(workdir, "metrics", "seed_0.jsonl")))
              for n in ("actor", "critic")]
    assert min(events) >= 2, events
    state = runs.restore(workdir).states.agent
    assert list(state.critic.params["params"]) == ["q1"]  # DDPG's single critic
    assert {"norm_0", "norm_1"} <= set(state.actor.params["params"])  # a one-block SimBa body
    out = tmp_path / "ddpg.npz"
    proc = run_cli(cli_env, "experiments.export", f"--workdir={workdir}", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_policy(out).output_transform == "tanh" and read_policy(out).algo == "ddpg"
    assert [l.skip_from for l in read_policy(out).layers] == [None, None, 1, None]
    obs = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(load_policy(out)(obs), runs.load_policy(workdir)(obs), atol=1e-5)
    # resumed from its checkpoint for one more period
    proc = run_cli(cli_env, "experiments.train", f"--workdir={workdir}", "--resume", "--extend_to=800", "--noplots")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[5/5] env steps 800/800 (100%)" in proc.stdout


def _state_leaves(workdir):
    return jax.tree.leaves(runs.restore(workdir).states)


@pytest.mark.slow
def test_resume_after_kill_during_save_equals_uninterrupted_run(td3_run, cli_env, tmp_path):
    reference, _ = td3_run
    workdir = str(tmp_path / "killed")
    ckpt = checkpoint.checkpoint_dir(workdir)
    proc = subprocess.Popen(_cmd("experiments.train", *TD3_ARGS, f"--workdir={workdir}"), env=cli_env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_mid_save = False
    try:
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:
            names = os.listdir(ckpt) if os.path.isdir(ckpt) else []
            if any(n.endswith("orbax-checkpoint-tmp") and int(n.split(".")[0]) >= 2 for n in names):
                proc.send_signal(signal.SIGKILL)
                killed_mid_save = True
                break
            time.sleep(0.002)
    finally:
        proc.kill()
        proc.wait()
    assert killed_mid_save, "the run ended before a checkpoint save could be interrupted"
    steps = checkpoint.all_periods(workdir)
    assert steps and steps[-1] < CHUNKS, steps
    resumed = run_cli(cli_env, "experiments.train", f"--workdir={workdir}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming after period {steps[-1]}/{CHUNKS}" in resumed.stdout
    # Exactly the same final state (params, targets, optimizer, masks, buffer, env, keys) and metrics.
    for a, b in zip(_state_leaves(reference), _state_leaves(workdir)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    for seed in (0, 1):
        name = os.path.join("metrics", f"seed_{seed}.jsonl")
        assert _without_timing(_jsonl(os.path.join(workdir, name))) == \
            _without_timing(_jsonl(os.path.join(reference, name)))
    ref_summary = json.load(open(os.path.join(reference, "summary.json")))
    assert json.load(open(os.path.join(workdir, "summary.json"))) == ref_summary


def test_a_levels_run_gives_each_level_the_plain_runs_seeds():
    """Entry ``l * seeds + s`` of a levels run is seed ``s`` at level ``l``, with a plain run's key for that
    seed; each level's own run is its config at that level, in ``level_<level>/``."""
    config = tiny_config()
    plan = launch.Plan(config, "/w", 4, None, 1, 2, False, sparsity_levels=(0.8, 0.95))
    args = launch._level_args(plan)
    keys = np.asarray(trainer_lib.seed_keys(config.seed, 2))
    np.testing.assert_array_equal(args["keys"], np.concatenate([keys, keys]))
    assert args["actor_sparsity"] == args["critic_sparsity"] == [0.8, 0.8, 0.95, 0.95]
    assert plan.run.seeds == (0, 1, 0, 1)
    (low, low_entries), (high, high_entries) = plan.level_runs()
    assert (low_entries, high_entries) == ([0, 1], [2, 3])
    assert (low.workdir, high.workdir, low.seeds) == ("/w/level_0.8", "/w/level_0.95", (0, 1))
    assert high.config == cfg_lib.replace(config, **{"sparsity.actor": 0.95, "sparsity.critic": 0.95})
    assert launch._level_args(dataclasses.replace(plan, restored=object())) == {}  # resumed: in the states


@pytest.mark.slow
def test_sparsity_levels_run_in_one_program_each_written_as_its_own_run(td3_run, cli_env, tmp_path):
    """``--sparsity_levels``: one seed at 0.8 and at 0.95 in one program (the TD3 run's program: cached);
    each level's run is written on its own (its entry's metrics, its config, its measured sparsity); cut
    off after its third period it resumes to the same files; other levels on resume exit 2."""
    del td3_run  # run after it: its compiled programs are this run's
    workdir = str(tmp_path / "levels")
    args = [f"--config={CONFIGS}/preset.py:rlx2,td3", *TINY, "--seeds=1", "--sparsity_levels=0.8,0.95",
            "--noplots", f"--workdir={workdir}"]
    proc = run_cli(cli_env, "experiments.train", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "levels: 1 seed(s) at each of the sparsity levels 0.8, 0.95 (actor and critic) in one program" \
        in proc.stdout
    assert json.load(open(os.path.join(workdir, launch.LEVELS_FILE)))["sparsity_levels"] == [0.8, 0.95]
    base = json.load(open(os.path.join(workdir, "config.json")))
    levels = {}
    for entry, level in enumerate((0.8, 0.95)):
        d = os.path.join(workdir, f"level_{level:g}")
        assert f"level {level:g}: final return" in proc.stdout
        config = json.load(open(os.path.join(d, "config.json")))
        assert config["sparsity"] == {**base["sparsity"], "actor": level, "critic": level}
        assert {k: v for k, v in config.items() if k != "sparsity"} == {k: v for k, v in base.items()
                                                                         if k != "sparsity"}
        summary = json.load(open(os.path.join(d, "summary.json")))
        assert summary["num_seeds"] == 1 and abs(summary["mean"]["sparsity_critic"] - level) < 0.02, summary["mean"]
        rows = _jsonl(os.path.join(d, "metrics", "seed_0.jsonl"))
        assert len(rows) == CHUNKS and rows == _jsonl(os.path.join(workdir, "metrics", f"seed_{entry}.jsonl"))
        levels[level] = (_without_timing(rows), summary["mean"])
    assert levels[0.8][0][-1]["sparsity/critic"] < levels[0.95][0][-1]["sparsity/critic"]
    # cut off after period 3: resumed, it writes the same levels
    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    shutil.rmtree(os.path.join(checkpoint.checkpoint_dir(resumed), str(CHUNKS)))
    for name in ("summary.json", "level_0.8", "level_0.95"):
        path = os.path.join(resumed, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    again = run_cli(cli_env, "experiments.train", f"--workdir={resumed}", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    for level, (rows, mean) in levels.items():
        d = os.path.join(resumed, f"level_{level:g}")
        assert _without_timing(_jsonl(os.path.join(d, "metrics", "seed_0.jsonl"))) == rows
        assert json.load(open(os.path.join(d, "summary.json")))["mean"] == mean
    other = run_cli(cli_env, "experiments.train", f"--workdir={resumed}", "--resume", "--sparsity_levels=0.5")
    assert other.returncode == 2 and other.stderr.strip().splitlines() == [
        f"train: error: --resume: invalid --sparsity_levels=0.5: the run saved in {resumed} has levels 0.8,0.95 (omit "
        "--sparsity_levels)"], other.stderr
    # --seeds on resume counts the seeds at each level, as when the run was started
    plan = launch.plan_run(launch.Request(workdir=resumed, config=None, resume=True, seeds=1))
    plan.lock.release()
    assert (plan.num_seeds, plan.seeds_per_level, plan.sparsity_levels) == (2, 1, (0.8, 0.95))
    with pytest.raises(launch.UsageError, match=r"has 1 seeds at each of its 2 sparsity levels \(omit --seeds or "
                                                r"pass --seeds 1\)"):
        launch.plan_run(launch.Request(workdir=resumed, config=None, resume=True, seeds=2))


@pytest.mark.slow
def test_evaluate_cli_and_three_line_policy_loading(td3_run, cli_env):
    workdir, _ = td3_run
    proc = run_cli(cli_env, "experiments.evaluate", f"--workdir={workdir}", "--episodes=2", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["checkpoint_period"] == CHUNKS and len(result["returns"]) == 2
    assert all(0.0 <= r <= 50.0 for r in result["returns"])
    text = run_cli(cli_env, "experiments.evaluate", f"--workdir={workdir}", "--episodes=1")
    assert text.returncode == 0 and f"checkpoint {CHUNKS} of {workdir}" in text.stdout, text.stderr[-3000:]

    policy = runs.load_policy(workdir)  # the documented three lines
    action = policy(np.zeros(4, np.float32))
    assert action.shape == (1,) and -1.0 <= float(action[0]) <= 1.0
    assert policy(np.zeros((3, 4), np.float32)).shape == (3, 1)


def _files(folder):
    """{relative path: bytes} of everything below `folder`."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_run_resumes(td3_run, cli_env, tmp_path):
    """A scheduler's SIGTERM (preemption, time limit): the period in progress is finished and
    checkpointed, exit 143 with the resume command; the resumed run ends like the uninterrupted one."""
    reference, _ = td3_run
    workdir = str(tmp_path / "preempted")
    proc = subprocess.Popen(_cmd("experiments.train", *TD3_ARGS, f"--workdir={workdir}"), env=cli_env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # compiled programs come from the shared cache: periods are quick
            if line.startswith("[1/"):
                proc.send_signal(signal.SIGTERM)
                break
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stderr[-2000:]
    assert "train: terminated (SIGTERM), stopped after period" in stderr and "--resume" in stderr
    steps = checkpoint.all_periods(workdir)
    assert steps and steps[-1] < CHUNKS, steps  # the period in progress was checkpointed before stopping
    resumed = run_cli(cli_env, "experiments.train", f"--workdir={workdir}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for a, b in zip(_state_leaves(reference), _state_leaves(workdir)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_divergence_stops_with_message_and_keeps_last_checkpoint(td3_run, cli_env, tmp_path):
    """Resume from a checkpoint whose critic Adam second moments are negative: the next period's
    updates are NaN. The run must stop naming the network and step, exit non-zero, and write nothing
    over the last good checkpoint."""
    reference, _ = td3_run
    workdir = str(tmp_path / "diverge")
    shutil.copytree(reference, workdir)
    restored = runs.restore(workdir, period=CHUNKS - 1)
    shutil.rmtree(os.path.join(checkpoint.checkpoint_dir(workdir), str(CHUNKS)))
    adam = restored.states.agent.critic.opt_state[0]
    poisoned_adam = adam._replace(nu=jax.tree.map(lambda x: -1.0 - x, adam.nu))
    opt_state = (poisoned_adam,) + tuple(restored.states.agent.critic.opt_state[1:])
    states = restored.states.replace(agent=restored.states.agent.replace(
        critic=restored.states.agent.critic.replace(opt_state=opt_state)))
    shutil.rmtree(os.path.join(checkpoint.checkpoint_dir(workdir), str(CHUNKS - 1)))
    checkpoint.save(workdir, CHUNKS - 1, states, restored.history, cfg_lib.from_dict(restored.config))
    before = _files(checkpoint.checkpoint_dir(workdir))

    proc = run_cli(cli_env, "experiments.train", f"--workdir={workdir}", "--resume")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("train: stopped:") and "NaN/inf" in message and "critic" in message
    assert "env step 640" in message and f"checkpoints/{CHUNKS - 1}" in message
    assert checkpoint.all_periods(workdir) == [CHUNKS - 1]
    assert _files(checkpoint.checkpoint_dir(workdir)) == before


def _corrupt(folder):
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")


@pytest.mark.slow
def test_resume_and_evaluate_fall_back_past_a_corrupted_newest_checkpoint(td3_run, cli_env, tmp_path):
    """The newest checkpoint's files are damaged, an older one is intact: evaluate uses the older one,
    and --resume continues from it (moving the damaged one aside), ending exactly like the reference."""
    reference, _ = td3_run
    workdir = str(tmp_path / "corrupt")
    shutil.copytree(reference, workdir)
    newest = os.path.join(checkpoint.checkpoint_dir(workdir), str(CHUNKS))
    _corrupt(os.path.join(newest, "state"))
    proc = run_cli(cli_env, "experiments.evaluate", f"--workdir={workdir}", "--episodes=1", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["checkpoint_period"] == CHUNKS - 1
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("evaluate: skipped")]
    assert len(skipped) == 1 and f"checkpoint {CHUNKS}:" in skipped[0] and newest in skipped[0]
    resumed = run_cli(cli_env, "experiments.train", f"--workdir={workdir}", "--resume", "--noplots")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resume: skipped checkpoint {CHUNKS}:" in resumed.stdout
    assert f"resuming after period {CHUNKS - 1}/{CHUNKS}" in resumed.stdout
    aside = os.listdir(os.path.join(workdir, "checkpoints_unreadable"))
    assert len(aside) == 1 and aside[0].startswith(f"{CHUNKS}-")  # kept, out of the way of the new save
    for a, b in zip(_state_leaves(reference), _state_leaves(workdir)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(checkpoint.CheckpointError, match="no readable checkpoint"):
        for step in checkpoint.all_periods(workdir):
            _corrupt(os.path.join(checkpoint.checkpoint_dir(workdir), str(step), "state"))
        runs.restore(workdir)


@pytest.mark.slow
def test_extending_a_finished_run_equals_a_run_planned_that_way(td3_run, cli_env, tmp_path):
    """--resume --extend_to: the run goes on past its budget with every run-length schedule as it was
    planned; the result equals a fresh run of the longer budget with the schedules laid out over the
    shorter one, and the extension is recorded."""
    reference, _ = td3_run
    workdir = str(tmp_path / "extended")
    shutil.copytree(reference, workdir)
    proc = run_cli(cli_env, "experiments.train", f"--workdir={workdir}", "--resume", "--extend_to=800",
                   "--noplots")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "extend: from 640 to 800 env steps" in proc.stdout
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["total_env_steps"] == 800 and saved["topology"]["schedule_env_steps"] == 640
    (record,) = json.load(open(os.path.join(workdir, launch.EXTENSIONS)))
    assert (record["from_env_steps"], record["to_env_steps"], record["at_checkpoint"]) == (640, 800, CHUNKS)
    assert json.load(open(os.path.join(workdir, "summary.json")))["extensions"] == [record]
    rows = _jsonl(os.path.join(workdir, "metrics", "seed_0.jsonl"))
    assert len(rows) == CHUNKS + 1
    assert _without_timing(rows[:CHUNKS]) == _without_timing(_jsonl(os.path.join(reference, "metrics",
                                                                                  "seed_0.jsonl")))
    planned = str(tmp_path / "planned")
    fresh = run_cli(cli_env, "experiments.train", *TD3_ARGS, "--config.total_env_steps=800",
                    "--config.topology.schedule_env_steps=640", f"--workdir={planned}", "--noplots")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    # its first four periods are the reference's: the schedules did not stretch over the longer budget
    assert _without_timing(_jsonl(os.path.join(planned, "metrics", "seed_0.jsonl"))[:CHUNKS]) == \
        _without_timing(_jsonl(os.path.join(reference, "metrics", "seed_0.jsonl")))
    for a, b in zip(_state_leaves(planned), _state_leaves(workdir)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def _mount_tmpfs(path, size):
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"cannot mount a tmpfs here ({err}): needs root with CAP_SYS_ADMIN")


@pytest.mark.slow
def test_a_full_disk_stops_in_one_line_and_the_run_resumes(td3_run, cli_env, tmp_path):
    """A work dir on a tiny tmpfs fills up during the third checkpoint: exit 74, one line naming the file
    and the last good checkpoint; with room made, --resume ends exactly like the reference run."""
    reference, _ = td3_run
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "700k")
    try:
        workdir = str(disk / "run")
        proc = run_cli(cli_env, "experiments.train", *TD3_ARGS, f"--workdir={workdir}", "--noplots")
        assert proc.returncode == cli.IO_ERROR, proc.stdout[-2000:] + proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        (line,) = lines
        good = checkpoint.all_periods(workdir)
        assert line.startswith("train: stopped: could not write ") and "No space left on device" in line
        assert f"the last good checkpoint is {checkpoint.checkpoint_dir(workdir)}/{good[-1]}" in line
        assert "--resume" in line and good and good[-1] < CHUNKS
        for step in good:  # every checkpoint before the failure still restores
            runs.restore(workdir, period=step)
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        resumed = run_cli(cli_env, "experiments.train", f"--workdir={workdir}", "--resume", "--noplots")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        for a, b in zip(_state_leaves(reference), _state_leaves(workdir)):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_failing_tensorboard_writer_leaves_the_others_closed(tmp_path):
    """A full disk fails the first seed's final flush: every other writer is still closed, the first failure
    is raised, and not at all while another error is already ending the run."""
    for check in (True, False):
        log = run_logging.RunLog(str(tmp_path / str(check)), 3)
        writers = list(log._writers)

        def full(_close=writers[0].close):
            _close()
            raise OSError(28, "No space left on device")

        writers[0].close = full
        if check:
            with pytest.raises(OSError, match="No space"):
                log.close(check=check)
        else:
            log.close(check=check)
        assert all(w.all_writers is None for w in writers) and log._writers == []


# ---------------------------------------------------------------------------- bad input
@pytest.fixture
def no_training(monkeypatch):
    """Bad input must be rejected before anything is compiled: training/init must never be reached."""

    def forbidden(*args, **kwargs):
        raise AssertionError("training was started for bad input")

    monkeypatch.setattr(runner, "train", forbidden)
    monkeypatch.setattr(runner.Runner, "__init__", forbidden)
    monkeypatch.setattr(distributed, "make_chunk_fn", forbidden)


def _main(argv, capsys):
    status = train.main(["train", *argv])
    err = capsys.readouterr().err.strip()
    return status, err


BAD = [
    (["--config.env.name=nope"], "--config.env.name='nope'", "allowed values are"),
    (["--config.env=nope"], "--config.env.name='nope'", "allowed values are"),
    (["--config.env.backend=warp"], "--config.env.backend='warp'", "allowed values are"),
    (["--config.env.name=gym/Nope-v5"], "--config.env.name='gym/Nope-v5'", "allowed values are gym/<task>"),
    (["--config.env.name=dmc/CheetahRun", "--config.env.backend=spring"], "--config.env.backend='spring'",
     "allowed values are jax, warp, auto"),
    (["--config.method=nope"], "--config.method='nope'", "allowed values are"),
    (["--config.algo=ppo"], "--config.algo='ppo'", "td3, sac"),
    (["--config.sparsity.actor=1.0"], "--config.sparsity.actor=1.0", "[0, 1)"),
    (["--config.sparsity.critic=-0.1"], "--config.sparsity.critic=-0.1", "[0, 1)"),
    (["--config.total_env_steps=0"], "--config.total_env_steps=0", "must be an integer >= 1"),
    (["--config.eval_every=-5"], "--config.eval_every=-5", "must be an integer >= 1"),
    (["--config.total_env_steps=100", "--config.warmup_env_steps=100"], "--config.total_env_steps=100",
     "must exceed warmup_env_steps=100 by at least one iteration"),
    (["--config.agent.exploration_noise=-0.1"], "--config.agent.exploration_noise=-0.1", "must be a number >= 0"),
    (["--config.replay.nstep=5000"], "--config.replay.nstep=5000", "an integer in [1, 16]"),
    (["--config.agent.batch_size=5000"], "--config.agent.batch_size=5000", "minimum buffer size (400"),
    (["--config.replay.nstep=0"], "--config.replay.nstep=0", "an integer in [1, 16]"),
    (["--config.nope=1"], "--config.nope", "no such config field"),
    (["--config.sparsity.actor=abc"], "--config.sparsity.actor=abc", "float"),
    (["--seeds=0"], "--seeds=0", ">= 1"),
    (["--sparsity_levels=0.8,1.2"], "--sparsity_levels=0.8,1.2", "between 0 and 1 (exclusive)"),
    (["--sparsity_levels=0.8,0.8"], "--sparsity_levels=0.8,0.8", "distinct sparsity levels"),
    (["--sparsity_levels=0.8,x"], "--sparsity_levels=0.8,x", "numbers between 0 and 1"),
    (["--sparsity_levels=0.8", "--config.sparsity.actor=0", "--config.sparsity.critic=0"],
     "--sparsity_levels=0.8", "no sparsity level to vary (it is dense)"),
    (["--sparsity_levels=0.8", "--config.sparsity.er_lambdas=(1.5,4,4)", "--config.sparsity.distribution=er",
      "--config.sparsity.actor=0", "--config.sparsity.critic=0"],
     "--sparsity_levels=0.8", "(ER lambdas set its densities)"),
    (["--sparsity_levels=0.8", "--data_shards=1"], "--sparsity_levels=0.8 with --data_shards=1", "vmapped beside"),
]


@pytest.mark.parametrize("extra,option,allowed", BAD, ids=[b[1] for b in BAD])
def test_bad_config_values_exit_2_with_one_line(extra, option, allowed, tmp_path, capsys, no_training):
    workdir = tmp_path / "w"
    status, err = _main([f"--config={CONFIGS}/preset.py:rlx2,td3", *TINY, *extra, f"--workdir={workdir}"], capsys)
    assert status == 2
    assert len(err.splitlines()) == 1 and option in err and allowed in err, err
    assert not workdir.exists(), "nothing may be written for bad input"


def _outside(allowed):
    """Values just outside a field's declared range (config.py), as command-line strings."""
    if isinstance(allowed, cfg_lib.Choice):
        return ["nope"] if isinstance(allowed.options[0], str) else []
    out = []
    if allowed.lo is not None:
        out.append(allowed.lo if allowed.lo_open else allowed.lo - 1)
    if allowed.hi is not None:
        out.append(allowed.hi if allowed.hi_open else allowed.hi + 1)
    if allowed.integer and allowed.lo is not None:
        out.append(allowed.lo + 1.5)
    if allowed.lo is None and allowed.hi is None:
        out.append(float("inf"))
    out = [int(v) if allowed.integer and float(v).is_integer() else v for v in out]
    return [f"({v!r},)" if allowed.each else repr(v) for v in out]


def _range_cases():
    sections = [("", cfg_lib.Config)] + [(f"{n}.", c) for n, c in cfg_lib.SECTIONS.items()]
    for prefix, cls in sections:
        for name, allowed in cfg_lib.allowed_values(cls).items():
            for value in _outside(allowed):
                yield f"{prefix}{name}", value


RANGE_CASES = list(_range_cases())


def test_every_field_has_a_declared_range_or_choice():
    """A new numeric field without a range would escape the walk below."""
    free = {"algo", "method", "env", "agent", "sparsity", "topology", "replay", "name", "backend"}
    for cls in (cfg_lib.Config, *cfg_lib.SECTIONS.values()):
        for f in dataclasses.fields(cls):
            assert f.name in free or "allowed" in f.metadata, f"{cls.__name__}.{f.name} has no declared range"
    assert len(RANGE_CASES) > 80


def test_every_field_outside_its_range_exits_2(tmp_path, capsys, no_training):
    """Walk every declared range with values just outside it: exit 2, one line naming the option."""
    failures = []
    for option, value in RANGE_CASES:
        workdir = tmp_path / option
        status, err = _main([f"--config={CONFIGS}/preset.py:rlx2,td3", *TINY, f"--config.{option}={value}",
                             f"--workdir={workdir}"], capsys)
        if status != 2 or len(err.splitlines()) != 1 or option.split(".")[-1] not in err or workdir.exists():
            failures.append((option, value, status, err))
    assert not failures, failures


@pytest.mark.parametrize("config,allowed", [
    ("nope_td3.py", "preset.py:<method>,<algo>[,<task>]"),
    ("preset.py:nope,td3", "unknown method 'nope'; allowed: dense"),
    ("preset.py:ds,ppo", "unknown algo 'ppo'; allowed: td3, sac"),
    ("preset.py:ds,td3,pong", "unknown task 'pong'; allowed: halfcheetah"),
])
def test_bad_preset_or_algorithm(config, allowed, tmp_path, capsys, no_training):
    status, err = _main([f"--config={CONFIGS}/{config}", f"--workdir={tmp_path / 'w'}"], capsys)
    assert status == 2 and len(err.splitlines()) == 1 and config in err and allowed in err, err


PRESET = f"--config={CONFIGS}/preset.py:rlx2,td3"
FLAG_ERRORS = [  # absl's and ml_collections' own exceptions, each one line naming the option
    ([PRESET, "--config.agent.nope=1"], "invalid --config.agent.nope: no such config field; fields of agent: hidden"),
    ([PRESET, "--config.seed.x=1"], "invalid --config.seed.x: no such config field: seed is a value"),
    ([PRESET, "--config.agent=3"], "flag --config.agent=3: Failed to parse '3' as a ConfigDict"),
    (["--config.agent.tau=0.1", PRESET], "Found --config.agent.tau=0.1 in argv before a value for --config"),
    (["--config", f"{CONFIGS}/preset.py:nope,td3"], "preset.py:nope,td3': unknown method 'nope'; allowed: dense"),
    (["--resume", "--config.agent.tau=0.1"], "invalid --config.agent.tau: overrides need --config"),
    ([PRESET, "--seeds=abc"], "flag --seeds=abc: invalid literal for int()"),
    ([PRESET, "--bogus"], "Unknown command line flag 'bogus'"),
    ([PRESET, "positional"], "unexpected positional arguments ['positional']"),
]


@pytest.mark.parametrize("argv,message", FLAG_ERRORS, ids=[m[:40] for _, m in FLAG_ERRORS])
def test_flag_errors_name_the_option(argv, message, tmp_path, capsys, no_training):
    status, err = _main([*argv, f"--workdir={tmp_path / 'w'}"], capsys)
    assert status == 2 and len(err.splitlines()) == 1 and err.startswith("train: error: ") and message in err, err
    assert not (tmp_path / "w").exists()


def _ends(raised):
    def execute(plan, stop):
        if raised is signal.SIGTERM:
            signal.raise_signal(signal.SIGTERM)  # the launcher's handler only sets the stop request
            raise callbacks.Terminated(f"stop requested: {stop.requested}")
        raise raised
    return execute


_NO_ROOM = ("prog: stopped: could not write /w/metrics/seed_0.csv (No space left on device); no checkpoint "
            "was written yet; make room or fix the permissions, then continue with: again")


def _wrapped_write_error():
    """What orbax raises for a checkpoint it could not write: tensorstore's ValueError naming the file."""
    try:
        raise ValueError('RESOURCE_EXHAUSTED: Error writing local file "/w/checkpoints/3.orbax-checkpoint-tmp/x":'
                         " Failed to write 9 bytes: Permission denied [os_error_code='13']")
    except ValueError as err:
        try:
            raise RuntimeError("save failed") from err
        except RuntimeError as outer:
            return outer


@pytest.mark.parametrize("raised,status,line", [
    (callbacks.NonFiniteError("critic loss is NaN/inf"), 1, "prog: stopped: critic loss is NaN/inf"),
    (OSError(28, "No space left on device", "/w/metrics/seed_0.csv"), 74, _NO_ROOM),
    (_wrapped_write_error(), 74, "prog: stopped: could not write /w/checkpoints/3.orbax-checkpoint-tmp/x "
     "(Permission denied); no checkpoint was written yet; make room or fix the permissions, then continue "
     "with: again"),
    (KeyboardInterrupt(), 130, "prog: interrupted; continue with: again"),
    (signal.SIGTERM, 143, "prog: terminated (SIGTERM), stop requested: True; continue with: again"),
])
def test_every_ending_has_its_exit_status(raised, status, line, capfd):
    """`launch.main`, the path both launchers take: its exit statuses and their one line on stderr. After
    a failed write, whatever the process prints later (library threads, exit hooks) goes to the file the
    line names, never to the screen."""
    guard = signal.signal(signal.SIGTERM, lambda *args: None)  # if no handler were installed: not pytest's end
    try:
        got = launch.main("prog", ["prog"], doc="", help_flags=list, plan=lambda argv: "plan", execute=_ends(raised),
                          continue_with=lambda plan: "again")
        os.write(2, b"a late traceback\n")
    finally:
        signal.signal(signal.SIGTERM, guard)
    err = capfd.readouterr().err  # capfd puts file descriptor 2 back afterwards
    if status != cli.IO_ERROR:
        assert got == status and err == line + "\na late traceback\n"
        return
    assert got == status and err.endswith(")\n") and err.count("\n") == 1, err
    head, late = err[:-2].split(" (the libraries' later reports: ")
    assert head == line
    with open(late) as f:
        assert f.read() == "a late traceback\n"
    os.remove(late)


def test_bad_input_is_usage_error_from_the_plan(capsys):
    def plan(argv):
        raise cli.UsageError("invalid --x=1: must be\n 2")

    assert launch.main("prog", ["prog"], doc="", help_flags=list, plan=plan, execute=None, continue_with=str) == 2
    assert capsys.readouterr().err == "prog: error: invalid --x=1: must be 2\n"


def test_unwritable_workdir(tmp_path, capsys, no_training):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    status, err = _main([f"--config={CONFIGS}/preset.py:rlx2,td3", f"--workdir={blocker / 'run'}"], capsys)
    assert status == 2 and "--workdir=" in err and "writable" in err and len(err.splitlines()) == 1
    assert blocker.read_text() == "keep me"


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A work dir shaped like a TD3_ARGS run after 3 periods (checkpoint contents are random; nothing
    is compiled), for the bad-input tests."""
    workdir = str(tmp_path_factory.mktemp("fake") / "run")
    config, _ = config_flag.parse(["train", *TD3_ARGS])
    template = runs.template(config, num_seeds=2)
    states = jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), template)
    checkpoint.save(workdir, CHUNKS - 1, states, [], config, num_seeds=2)
    run_logging.write_json(os.path.join(workdir, "config.json"), cfg_lib.to_dict(config))
    return workdir


def test_existing_run_is_never_overwritten(fake_run, capsys, no_training):
    workdir = fake_run
    before = _files(workdir)
    status, err = _main([*TD3_ARGS, f"--workdir={workdir}"], capsys)
    assert status == 2 and "already holds a run" in err and "--resume" in err
    assert _files(workdir) == before


def test_resume_with_conflicting_flags(fake_run, capsys, no_training):
    workdir = fake_run
    before = _files(workdir)
    status, err = _main([*TD3_ARGS, "--config.agent.batch_size=64", f"--workdir={workdir}", "--resume"], capsys)
    assert status == 2 and len(err.splitlines()) == 1
    assert "agent.batch_size=64 (saved: 32)" in err
    status, err = _main([f"--workdir={workdir}", "--resume", "--seeds=3"], capsys)
    assert status == 2 and "--seeds=3" in err and "2 seeds" in err
    assert _files(workdir) == before


def test_resume_without_checkpoint(tmp_path, capsys, no_training):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "config.json").write_text("{}")
    status, err = _main([f"--workdir={workdir}", "--resume"], capsys)
    assert status == 2 and "no checkpoint" in err and len(err.splitlines()) == 1
    status, err = _main([f"--workdir={tmp_path / 'absent'}", "--resume"], capsys)
    assert status == 2 and "nothing to resume" in err


def test_extension_needs_resume_and_a_larger_budget(fake_run, capsys, no_training):
    workdir = fake_run
    before = _files(workdir)
    status, err = _main([*TD3_ARGS, f"--workdir={workdir}x", "--extend_to=900"], capsys)
    assert status == 2 and "--extend_to=900" in err and "--resume" in err
    status, err = _main([f"--workdir={workdir}", "--resume", "--extend_to=640"], capsys)
    assert status == 2 and "--extend_to=640" in err and "640 env steps" in err and len(err.splitlines()) == 1
    status, err = _main([*TD3_ARGS, "--config.total_env_steps=900", f"--workdir={workdir}", "--resume"], capsys)
    assert status == 2 and "total_env_steps=900 (saved: 640)" in err and "--extend_to" in err
    assert _files(workdir) == before


def test_resume_from_corrupted_checkpoint(fake_run, tmp_path, capsys, no_training):
    workdir = str(tmp_path / "corrupt")
    shutil.copytree(fake_run, workdir)
    newest = os.path.join(checkpoint.checkpoint_dir(workdir), str(CHUNKS - 1))
    for root, _, files in os.walk(os.path.join(newest, "state")):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    before = _files(workdir)
    status, err = _main([f"--workdir={workdir}", "--resume"], capsys)
    assert status == 2 and "no readable checkpoint" in err and "corrupted" in err and newest in err
    assert len(err.splitlines()) == 1 and _files(workdir) == before


def test_bad_input_exit_status_from_the_real_cli(cli_env, tmp_path):
    start = time.time()
    proc = run_cli(cli_env, "experiments.train", f"--config={CONFIGS}/preset.py:ds,td3", "--config.sparsity.actor=1.5",
                   f"--workdir={tmp_path / 'w'}")
    assert proc.returncode == 2
    # the whole output: one line, no dependency banners (Warp, Brax's maintenance warning: sparse_rl_jax.quiet)
    assert proc.stderr.strip().splitlines() == \
        ["train: error: invalid --config.sparsity.actor=1.5: must be a number in [0, 1)"], proc.stderr
    assert proc.stdout == "" and not (tmp_path / "w").exists()
    assert time.time() - start < 120


def test_divergence_check_names_the_network_the_seed_and_the_step():
    entry = [320, {"training/critic_loss": [1.0, 2.0], "training/updates": 160}]
    agent = {"actor": {"params": np.ones((2, 3))},
             "critic": {"target": {"q1": np.array([[1.0, 2.0], [np.inf, 0.0]])}, "masks": np.zeros((2, 2), bool)}}
    with pytest.raises(callbacks.NonFiniteError, match=r"NaN/inf in critic/target/q1 \(seed 1\) by env step 320 "
                                                       r"\(evaluation period 2, gradient update 160\)"):
        callbacks.check_finite(entry, SimpleNamespace(agent=agent), num_seeds=2, period_index=2)
    entry[1]["training/actor_loss"] = [None, 0.5]
    with pytest.raises(callbacks.NonFiniteError, match=r"actor loss is NaN/inf \(seed 0\)"):
        callbacks.check_finite(entry, SimpleNamespace(agent=agent), num_seeds=2, period_index=2)
