"""sparse_rl_jax.sweep: one compiled program per (env, method) group equals the separate runs; resumable;
aggregated tables with returns as % of dense. experiments/sweep.py: its flags, bad input (exit 2, one line,
nothing compiled or written) and a SIGTERM stop."""
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import scaling_claims
from experiments import sweep as sweep_cli
import sparse_rl_jax as srj
from sparse_rl_jax import callbacks, runner, sweep
from sparse_rl_jax import config as cfg_lib
from tests.conftest import TIMING, TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# one evaluation period: 32 warm-up + 48 training iterations (192 updates, topology updates every 10)
OVERRIDES = {**TINY, "total_env_steps": 320, "eval_every": 320}
COMPARED = ("eval/episode_reward", "training/critic_loss", "training/actor_loss", "training/q",
            "topology/critic/mask_change", "topology/actor/mask_change", "sparsity/actor", "sparsity/critic",
            "topology/critic/drop_fraction", "buffer/size")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sweep"))
    cells = sweep.build_grid("td3", ["rigl"], ["inverted_pendulum"], [(0.5, 0.5), (0.8, 0.7)],
                             drop_fractions=[0.3, 0.5], lrs=[3e-4, 1e-3], dense=False)
    logs = []
    sweep.run(root, "td3", cells, [0], OVERRIDES, log=logs.append)
    return root, cells, logs


def _rows(workdir, seed=0):
    with open(os.path.join(workdir, "metrics", f"seed_{seed}.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_sweep_compiles_each_group_once_and_writes_cells(swept):
    root, cells, logs = swept
    assert len(cells) == 8
    assert sum("runs in one program" in line for line in logs) == 1, logs  # 8 cells, one program
    for cell in cells:
        wd = cell.workdir(root)
        config = json.load(open(os.path.join(wd, "config.json")))
        assert config["sparsity"]["actor"] == cell.actor_sparsity
        assert config["topology"]["drop_fraction"] == cell.drop_fraction
        assert config["agent"]["actor_lr"] == cell.lr
        summary = json.load(open(os.path.join(wd, "summary.json")))
        assert summary["num_seeds"] == 1
        assert abs(summary["mean"]["sparsity_actor"] - cell.actor_sparsity) < 0.02


@pytest.mark.slow
def test_vmapped_sweep_cell_equals_its_separate_run(swept):
    root, cells, _ = swept
    # the cell differing from the group's static config in every swept number
    cell = sweep.Cell("inverted_pendulum", "rigl", 0.8, 0.7, 0.5, 1e-3)
    assert cell in cells
    config = sweep.cell_config(cell, "td3", OVERRIDES, seed=0)
    separate = runner.train(config, num_seeds=1).history
    rows = _rows(cell.workdir(root))
    assert len(rows) == len(separate)
    for row, (steps, metrics) in zip(rows, separate):
        assert row["env_steps"] == steps
        for name in COMPARED:
            np.testing.assert_allclose(row[name], np.asarray(metrics[name]).reshape(-1)[0], rtol=1e-4,
                                       atol=1e-5, err_msg=name)
    # the swept numbers really differ between cells
    other = _rows(sweep.Cell("inverted_pendulum", "rigl", 0.8, 0.7, 0.5, 3e-4).workdir(root))
    assert other[-1]["training/critic_loss"] != rows[-1]["training/critic_loss"]


@pytest.mark.slow
def test_rerun_skips_done_cells_and_writes_tables(swept):
    root, cells, _ = swept
    logs = []
    sweep.run(root, "td3", cells, [0], OVERRIDES, log=logs.append)
    assert "8 already done" in logs[0] and not any("runs in one program" in line for line in logs)
    with open(os.path.join(root, "results.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0].split(",")[:3] == ["env", "method", "actor_sparsity"] and len(lines) == 9
    text = open(os.path.join(root, "results.md")).read()
    assert "## inverted_pendulum" in text and text.count("| rigl |") == 8


def _fake_cell(root, cell, final, auc, **extra):
    wd = cell.workdir(root)
    os.makedirs(wd)
    mean = {"final_return": final, "auc": auc, "sparsity_actor": cell.actor_sparsity,
            "sparsity_critic": cell.critic_sparsity, "total_size": 1.0, "train_flops": 1.0, **extra}
    with open(os.path.join(wd, "summary.json"), "w") as f:
        json.dump({"num_seeds": 2, "mean": mean, "std": {**mean, "final_return": 1.0}}, f)


def test_returns_as_percent_of_dense_per_env(tmp_path):
    root = str(tmp_path)
    cells = sweep.build_grid("td3", ["static"], ["a", "b"], [(0.9, 0.9)])
    assert [c.method for c in cells] == ["dense", "static", "dense", "static"]
    for cell, (final, auc) in zip(cells, [(200.0, 100.0), (150.0, 80.0), (50.0, 40.0), (60.0, 10.0)]):
        _fake_cell(root, cell, final, auc)
    rows = {(r["env"], r["method"]): r for r in sweep.write_results(root, cells)}
    assert rows[("a", "static")]["final_pct_dense"] == pytest.approx(75.0)
    assert rows[("a", "static")]["auc_pct_dense"] == pytest.approx(80.0)
    assert rows[("b", "static")]["final_pct_dense"] == pytest.approx(120.0)
    assert rows[("b", "dense")]["final_pct_dense"] == pytest.approx(100.0)
    md = open(os.path.join(root, "results.md")).read()
    assert "## a" in md and "## b" in md and "| 75.0 |" in md


SIMBA_SAC = {**TINY, "agent.hidden": (8, 8), "agent.actor_backbone": "simba", "agent.critic_backbone": "simba"}


def test_scaling_sweep_cells_matched_levels_and_tables(tmp_path):
    """Widths make a scaling sweep: one group per width, each cell's critic that wide; --matched adds the
    levels at which a wider critic has a narrower dense one's weights; scaling.md and scaling.png lay the
    cells out against the critic's weights."""
    base = srj.make_config("static", "sac", recipe="ma2025", **SIMBA_SAC)
    matched = sweep.matched_sparsities(base, [8, 16])
    assert matched[8] == [] and len(matched[16]) == 1
    wide = cfg_lib.replace(base, **{"agent.critic_hidden": (16, 16)})
    assert sweep.critic_weights(wide) * (1 - matched[16][0]) == pytest.approx(
        sweep.critic_weights(cfg_lib.replace(base, **{"agent.critic_hidden": (8, 8)})), rel=2e-3)
    cells = sweep.build_grid("sac", ["static"], ["inverted_pendulum"], [(0.5, 0.5)], widths=[8, 16],
                             extra_sparsities=matched)
    assert [(c.method, c.width, c.critic_sparsity) for c in cells] == [
        ("dense", 8, 0.0), ("dense", 16, 0.0), ("static", 8, 0.5), ("static", 16, 0.5),
        ("static", 16, matched[16][0])]
    assert len(sweep.group_cells(cells)) == 4  # one compiled program per (method, width)
    config = sweep.cell_config(cells[-1], "sac", SIMBA_SAC, recipe="ma2025")
    assert config.agent.critic_hidden == (16, 16) and config.agent.actor_hidden == (128,)
    assert config.agent.single_q and config.sparsity.critic == matched[16][0]
    root = str(tmp_path)
    for cell, final in zip(cells, (100.0, 120.0, 90.0, 130.0, 125.0)):
        weights = sweep.critic_weights(sweep.cell_config(cell, "sac", SIMBA_SAC, recipe="ma2025"))
        _fake_cell(root, cell, final, final / 2, critic_weights=float(weights),
                   critic_active_weights=weights * (1.0 - cell.critic_sparsity))
    rows = sweep.write_results(root, cells)
    series = sweep.scaling_series(rows)
    assert sorted(series) == ["dense", "static @ 0.5", "static @ matched"]
    assert [p[2] for p in series["dense"]] == [100.0, 120.0] and len(series["static @ matched"]) == 1
    text = open(os.path.join(root, "scaling.md")).read()
    assert text.count("| 16 | static |") == 2 and "| 8 | dense |" in text
    with open(os.path.join(root, "scaling.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_grid_and_batches():
    cells = sweep.build_grid("td3", ["static", "rigl"], ["e"], sweep_cli.parse_sparsities("0.5,0.9:0.8"),
                             drop_fractions=[0.3, 0.5])
    assert len(cells) == 1 + 2 + 4  # dense, static x 2 levels (no drop fraction), rigl x 2 x 2
    assert sweep_cli.parse_sparsities("0.9:0.8")[0] == (0.9, 0.8)
    assert sweep._batches(list(range(5)), 2, 1) == [[0, 1], [2, 3], [4, 4]]
    assert sweep._batches(list(range(5)), 0, 4) == [[0, 1, 2, 3, 4, 4, 4, 4]]
    assert sweep_cli.parse_overrides(["agent.hidden=(64,64)", "env.backend=spring"]) == {
        "agent.hidden": (64, 64), "env.backend": "spring"}


# ---------------------------------------------------------------------------- the command line
@pytest.fixture
def no_training(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("training was started for bad input")

    monkeypatch.setattr(runner.Runner, "__init__", forbidden)


BAD = [
    (["--bogus"], "Unknown command line flag 'bogus'"),
    (["--algo=ppo"], "flag --algo=ppo: value should be one of <td3|sac|ddpg>"),
    (["--methods=static,nope"], "invalid --methods='static,nope': unknown method 'nope'; allowed: dense"),
    (["--envs=nope"], "invalid --envs='nope': env name 'nope' is not supported; allowed values are a Brax env (ant"),
    (["--envs=gym/Nope-v5"],
     "invalid --envs='gym/Nope-v5': env name 'gym/Nope-v5' is not supported; allowed values are gym/<task>"),
    (["--sparsities=0.5,abc"], "invalid --sparsities='0.5,abc': expected comma-separated numbers"),
    (["--sparsities=0.5:1.0"], "invalid --sparsities='0.5:1.0': 1 is not a number in [0, 1)"),
    (["--drop_fractions=0.3,2"], "invalid --drop_fractions='0.3,2': 2 is not a number in [0, 1]"),
    (["--lrs=0"], "invalid --lrs='0': 0 is not a number > 0"),
    (["--set", "agent.nope=1"], "invalid --set 'agent.nope=1': no such config field; fields of agent: hidden"),
    (["--set", "noequals"], "invalid --set 'noequals': expected key=value"),
    (["--set", "env.num_envs=0"], "invalid env.num_envs=0: must be an integer >= 1"),
    (["--seeds=0"], "invalid --seeds=0: must be an integer >= 1"),
    (["--data_shards=2"], "invalid --data_shards=2: a sweep shards its runs over the devices"),
    (["--num_processes=2"], "invalid --num_processes=2: needs --coordinator_address"),
    (["--workdir=gs://b/x"], "invalid --workdir='gs://b/x': must be a file-system path"),
    (["--widths=64,x"], "invalid --widths='64,x': expected comma-separated positive integers"),
    (["--widths=0"], "invalid --widths='0': expected comma-separated positive integers"),
    (["--recipe=nope"], "invalid --recipe='nope': allowed values are ma2025"),
    (["--matched"], "invalid --matched: needs --widths with at least two widths"),
    (["--markdown=docs/sparse_scaling.md"], "invalid --markdown: the scaling claims need a scaling sweep (--widths)"),
    (["--widths=8,16", "--markdown=/nonexistent/page.md"],
     "invalid --markdown='/nonexistent/page.md': no such page with a <!-- study:scaling begin --> marker"),
    (["--widths=8,16", "--set", "agent.actor_backbone='simba'", "--set", "agent.hidden=(8,16)"],
     "invalid agent.hidden=(8, 16): a simba body's blocks share one width"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_input_exits_2_with_one_line(extra, message, tmp_path, capsys, no_training):
    workdir = tmp_path / "w"
    status = sweep_cli.main(["sweep", f"--workdir={workdir}", *extra])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and err.startswith("sweep: error: ") and message in err, err
    assert not workdir.exists()


def test_aggregate_only_from_the_real_cli(tmp_path):
    """The whole output of a run that trains nothing: no dependency banners (sparse_rl_jax.quiet)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "experiments.sweep", f"--workdir={tmp_path}", "--aggregate_only",
                           "--methods=rigl", "--sparsities=0.5"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.splitlines() == [
        "[sweep] 2 cells in 2 compiled groups, 3 seeds each; 0 already done",
        f"[sweep] 0/2 cells done; results in {tmp_path / 'results.md'}"]
    assert (tmp_path / "results.csv").read_text().startswith("env,method,")


def test_sigterm_stops_a_group_at_the_end_of_its_period(tmp_path, capsys, monkeypatch):
    """The sweep's period callback stops once SIGTERM asked, after the batch's checkpoint: exit 143 and
    the command to continue."""
    saved = []

    def one_period(self, num_seeds=1, *, callbacks=(), **kwargs):
        signal.raise_signal(signal.SIGTERM)  # arrives during the period
        for callback in callbacks:
            callback(runner.PeriodResult(1, 3, 100, {}, None, [], None))
        raise AssertionError("the stop request did not stop the group")

    monkeypatch.setattr(runner.Runner, "train", one_period)
    monkeypatch.setattr(sweep.BatchCheckpoint, "__call__", lambda self, period: saved.append(period.period))
    guard = signal.signal(signal.SIGTERM, lambda *args: None)  # if the sweep installs no handler: not pytest's end
    try:
        status = sweep_cli.main(["sweep", f"--workdir={tmp_path}", "--methods=static", "--sparsities=0.5",
                                 "--nodense", "--seeds=1", "--set", "total_env_steps=640", "--set", "warmup_env_steps=128"])
    finally:
        signal.signal(signal.SIGTERM, guard)
    err = capsys.readouterr().err.strip()
    assert status == 143, err
    assert saved == [1]  # the period the stop ends was checkpointed: a rerun resumes after it
    assert err.startswith("sweep: terminated (SIGTERM), stopped group inverted_pendulum / static") and \
        "after period 1/3" in err and "continue with: python -m experiments.sweep --workdir" in err
    assert not any(name == "summary.json" for _, _, files in os.walk(tmp_path) for name in files)
    (entry,) = [json.loads(line) for line in open(tmp_path / sweep_cli.PROVENANCE)]  # an interrupted run too
    assert entry["command"][:4] == ["python", "-m", "experiments.sweep", f"--workdir={tmp_path}"]
    assert entry["exit_status"] is None and entry["cells_done_before"] == entry["cells_done_after"] == 0
    assert len(entry["commit"]) == 40 and entry["cpu_count"] == os.cpu_count() and entry["wall_seconds"] >= 0


@pytest.fixture
def compile_cache(tmp_path):
    """A persistent compilation cache for one test: its later sweeps (each builds its own programs) reuse
    what its first compiled."""
    from jax.experimental.compilation_cache import compilation_cache

    names = {"jax_compilation_cache_dir": str(tmp_path / "jax_cache"),
             "jax_persistent_cache_min_compile_time_secs": 0, "jax_persistent_cache_min_entry_size_bytes": 0}
    before = {name: getattr(jax.config, name) for name in names}
    for name, value in names.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()
    yield
    for name, value in before.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


@pytest.mark.slow
def test_a_batch_stopped_mid_run_resumes_from_its_last_period(tmp_path, compile_cache):
    """A batch checkpoints after every period: stopped after its first of two, a rerun resumes there
    (nothing recomputed) and writes what an uninterrupted sweep writes; the checkpoint goes once its
    cells are done."""
    cells = sweep.build_grid("td3", ["static"], ["inverted_pendulum"], [(0.5, 0.5)], dense=False)
    two = {**OVERRIDES, "total_env_steps": 640}  # two evaluation periods
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    sweep.run(full, "td3", cells, [0, 1], two, log=lambda line: None)
    stop = callbacks.StopRequest()
    stop.requested = True  # as SIGTERM sets it: the group stops at the end of its first period
    with pytest.raises(callbacks.Terminated, match="after period 1/2"):
        sweep.run(cut, "td3", cells, [0, 1], two, log=lambda line: None, stop=stop)
    (partial,) = os.listdir(os.path.join(cut, sweep.PARTIAL))
    assert not sweep.is_done(cells[0], cut)
    logs = []
    sweep.run(cut, "td3", cells, [0, 1], two, log=logs.append)
    assert any("resuming after period 1/2" in line for line in logs), logs
    for seed in (0, 1):
        a, b = _rows(cells[0].workdir(full), seed), _rows(cells[0].workdir(cut), seed)
        assert [{k: v for k, v in r.items() if k not in TIMING} for r in a] == \
            [{k: v for k, v in r.items() if k not in TIMING} for r in b]
    assert not os.path.exists(os.path.join(cut, sweep.PARTIAL, partial))


def test_a_batch_checkpoint_belongs_to_its_entries_and_config():
    cell = sweep.Cell("inverted_pendulum", "static", 0.5, 0.5)
    config = srj.make_config("static", "td3", **OVERRIDES)
    at = sweep.partial_dir("/r", [(cell, 0), (cell, 1)], config)
    assert at == sweep.partial_dir("/r", [(cell, 0), (cell, 1)], config) and at.startswith("/r/_partial/")
    assert at != sweep.partial_dir("/r", [(cell, 0), (cell, 2)], config)
    assert at != sweep.partial_dir("/r", [(cell, 0), (cell, 1)], cfg_lib.replace(config, total_env_steps=640))


def test_stop_check_waits_for_a_request():
    stop = callbacks.StopRequest()
    check = callbacks.StopCheck(stop)
    check(runner.PeriodResult(1, 3, 100, {}, None, [], None))  # no request: nothing happens
    stop.requested = True
    check(runner.PeriodResult(3, 3, 300, {}, None, [], None))  # the last period: the run ends anyway
    with pytest.raises(callbacks.Terminated, match="after period 2/3"):
        check(runner.PeriodResult(2, 3, 200, {}, None, [], None))


def _cell_with_curves(root, cell, final, sd=5.0, seeds=10):
    """A done sweep cell: per-seed evaluations rising to about ``final`` (the last three at it)."""
    rng = np.random.default_rng(abs(hash(cell)) % 2**32)
    ends = final + rng.normal(0, sd, seeds)
    log = srj.run_logging.RunLog(cell.workdir(root), seeds, tensorboard=False)
    for t, f in enumerate((0.3, 1.0, 1.0, 1.0)):
        log.append(1_000 * (t + 1), {srj.run_logging.RETURN_KEY: list(map(float, ends * f))})
    log.close()
    mean = {"final_return": float(ends.mean()), "auc": 1.0, "sparsity_actor": cell.actor_sparsity,
            "sparsity_critic": cell.critic_sparsity, "total_size": 1.0, "train_flops": 1.0}
    srj.run_logging.write_json(os.path.join(cell.workdir(root), "summary.json"),
                               {"num_seeds": seeds, "mean": mean, "std": mean})


def test_scaling_claims_are_declared_from_the_grid_and_tested_with_holm(tmp_path):
    """The claims a scaling grid declares (counted by hand below), each tested on per-seed scores with
    Holm over all of them; the three verdicts each come out where the data put them."""
    cells = sweep.build_grid("sac", ["static", "rlx2"], ["e"], [(0.9, 0.9)], widths=[8, 16],
                             extra_sparsities={8: [], 16: [0.75]})
    claims = scaling_claims.plan(cells, {8: [], 16: [0.75]})
    # sparse above dense at 16: 2 methods; matched 16@0.75 above dense 8: 2; sparse rises 8 -> 16: 2;
    # dense rises: 1; rlx2 above static at 8 and 16: 2
    assert len(claims) == 9
    c = lambda m, w, s=0.0: sweep.Cell("e", m, s, s, None, None, w)  # noqa: E731
    finals = {c("dense", 8): 100, c("dense", 16): 100, c("static", 8, 0.9): 100, c("static", 16, 0.9): 200,
              c("static", 16, 0.75): 150, c("rlx2", 8, 0.9): 100, c("rlx2", 16, 0.9): 150,
              c("rlx2", 16, 0.75): 150}
    assert set(finals) == set(cells)
    root = str(tmp_path)
    for cell, final in finals.items():
        if cell != c("rlx2", 8, 0.9):  # one cell not done: the two claims that need it wait
            _cell_with_curves(root, cell, final)
    tested = scaling_claims.rows(root, claims)
    assert len(tested) == 7
    verdict = {(r["claim"], r["a"], r["b"]): r["verdict"] for r in tested}
    assert verdict[("sparse above dense at the widest critic", "static @ 0.9, critic 16", "dense, critic 16")] == "holds"
    assert verdict[("a wide sparse critic above a narrower dense one with the same weights",
                    "static @ 0.75, critic 16", "dense, critic 8")] == "holds"
    assert verdict[("dense return rises with width", "dense, critic 16", "dense, critic 8")] == "inconclusive"
    assert verdict[("a dynamic topology above a static one", "rlx2 @ 0.9, critic 16",
                    "static @ 0.9, critic 16")] == "does not hold"
    assert [r["p_holds_holm"] for r in tested] == pytest.approx(
        stats_holm([r["p_holds"] for r in tested] + [1.0, 1.0]))  # untested claims count at p = 1
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- study:scaling begin -->\nSTALE\n<!-- study:scaling end -->\n")
    scaling_claims.write(root, cells, {8: [], 16: [0.75]}, str(page))
    text = page.read_text()
    assert "STALE" not in text and "| e | a dynamic topology above a static one |" in text
    assert "Holm's correction over the 9 claims the grid declares (7 tested" in text
    assert (tmp_path / "claims.csv").read_text().startswith("env,claim,")


def stats_holm(pvalues):
    from experiments.reproduce import stats
    return stats.holm(pvalues)[:-2]


def test_a_scaling_sweep_writes_its_claims_from_the_cli(tmp_path, capsys, no_training):
    """``experiments.sweep --widths --matched --markdown PAGE``: the grid's claims tested over its done
    cells into claims.md and PAGE's scaling section, with a line saying how many were tested."""
    page = tmp_path / "page.md"
    page.write_text("<!-- study:scaling begin -->\n<!-- study:scaling end -->\n")
    root = tmp_path / "root"
    sets = [a for k, v in SIMBA_SAC.items() for a in ("--set", f"{k}={v!r}")]
    p = sweep_cli.plan(["sweep", f"--workdir={root}", "--algo=sac", "--recipe=ma2025", "--methods=static",
                        "--sparsities=0.5", "--widths=8,16", "--matched", "--aggregate_only", f"--markdown={page}",
                        *sets])
    assert len(p.matched[16]) == 1
    for cell in p.cells:
        _cell_with_curves(str(root), cell, 100.0 + 50 * (cell.width == 16 and cell.method == "static"))
    assert sweep_cli.execute(p) == 0
    out = capsys.readouterr().out
    assert f"[sweep] 4/4 scaling claims tested; verdicts in {root / 'claims.md'}" in out
    assert (root / "claims.md").read_text() in page.read_text()
    assert "| inverted_pendulum | a wide sparse critic above a narrower dense one with the same weights |" in \
        page.read_text()
