"""experiments/sweep.py: one compiled program per (env, method) group equals the separate runs; resumable;
aggregated tables with returns as % of dense."""
import json
import os

import numpy as np
import pytest

from experiments import sweep
from tests.conftest import TINY

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
    from sparse_rl_jax import runner

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


def _fake_cell(root, cell, final, auc):
    wd = cell.workdir(root)
    os.makedirs(wd)
    mean = {"final_return": final, "auc": auc, "sparsity_actor": cell.actor_sparsity,
            "sparsity_critic": cell.critic_sparsity, "total_size": 1.0, "train_flops": 1.0}
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


def test_grid_and_batches():
    cells = sweep.build_grid("td3", ["static", "rigl"], ["e"], sweep.parse_sparsities("0.5,0.9:0.8"),
                             drop_fractions=[0.3, 0.5])
    assert len(cells) == 1 + 2 + 4  # dense, static x 2 levels (no drop fraction), rigl x 2 x 2
    assert sweep.parse_sparsities("0.9:0.8")[0] == (0.9, 0.8)
    assert sweep._batches(list(range(5)), 2, 1) == [[0, 1], [2, 3], [4, 4]]
    assert sweep._batches(list(range(5)), 0, 4) == [[0, 1, 2, 3, 4, 4, 4, 4]]
    assert sweep.parse_overrides(["agent.hidden=(64,64)", "env.backend=spring"]) == {
        "agent.hidden": (64, 64), "env.backend": "spring"}
