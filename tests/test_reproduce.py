"""The reproduction grid: every cell's config, the budget scaling, and the aggregated figures."""
import dataclasses
import os
import shutil

import numpy as np
import pytest

from experiments.reproduce import aggregate, grid
from sparse_rl_jax import presets, run_logging, validation

SMALL, PAPER = grid.TIERS["small"], grid.TIERS["paper"]


def test_every_cell_of_every_tier_validates():
    for tier in (SMALL, PAPER):
        assert len(set(tier.cells)) == len(tier.cells)
        for cell in tier.cells:
            validation.validate(grid.make_config(cell, tier))
            assert cell.reference in tier.cells, cell.key  # every cell has its dense run in the grid


def test_small_tier_is_the_issue_grid():
    keys = {c.key for c in SMALL.cells}
    for m in ("dense", "static", "rigl", "rlx2", "rlx2+importance", "ds", "ds+importance",
              "ds@rlx2_sparsity", "ds+importance@rlx2_sparsity"):
        assert f"halfcheetah/td3/{m}" in keys
    for m in ("dense", "ds", "ds+importance", "rlx2", "rlx2+importance"):
        assert f"hopper/td3/{m}" in keys
    for m in ("dense", "rlx2", "rlx2+importance"):
        assert f"halfcheetah/sac/{m}" in keys
    # dense references come before every cell compared with them
    order = [c.key for c in SMALL.cells]
    for c in SMALL.cells:
        assert order.index(c.reference.key) <= order.index(c.key)


def test_small_tier_scales_schedules_by_the_budget_ratio():
    ds = grid.make_config(grid.parse_cell("halfcheetah/td3/ds"), SMALL)
    paper_ds = presets.make_config("ds", "td3", "halfcheetah")
    assert grid.scale(grid.parse_cell("halfcheetah/td3/ds"), SMALL) == pytest.approx(0.1)
    assert (ds.total_env_steps, ds.topology.period, ds.topology.stop_margin) == (100_000, 100, 5_000)
    assert ds.sparsity.er_lambdas == paper_ds.sparsity.er_lambdas == (7, 64)
    assert (ds.agent.actor_lr, ds.agent.batch_size) == (1e-3, 100)  # not step counts: the paper's
    rlx2 = grid.make_config(grid.parse_cell("hopper/td3/rlx2"), SMALL)
    assert (rlx2.topology.period, rlx2.replay.nstep_delay, rlx2.replay.check_every) == (333, 10_000, 333)
    assert (rlx2.replay.capacity, rlx2.replay.min_size) == (33_333, 3_333)
    assert (rlx2.sparsity.actor, rlx2.sparsity.critic) == presets.RLX2_SPARSITY["td3"]["hopper"]
    for cell in SMALL.cells:  # the same warm-up and evaluation cadence everywhere
        c = grid.make_config(cell, SMALL)
        assert (c.warmup_env_steps, c.eval_every, c.total_env_steps) == (5_000, 5_000, 100_000)


def test_regimes():
    hi = grid.make_config(grid.parse_cell("halfcheetah/td3/ds+importance@rlx2_sparsity"), SMALL)
    ds = grid.make_config(grid.parse_cell("halfcheetah/td3/ds+importance"), SMALL)
    assert hi.sparsity.er_lambdas is None and (hi.sparsity.actor, hi.sparsity.critic) == (0.9, 0.85)
    assert dataclasses.replace(hi.sparsity, er_lambdas=(7, 64), actor=0.0, critic=0.0) == ds.sparsity
    assert hi.topology == ds.topology and hi.agent == ds.agent
    dense_ds = grid.make_config(grid.parse_cell("hopper/td3/dense@ds_settings"), PAPER)
    assert (dense_ds.agent.actor_lr, dense_ds.agent.weight_decay, dense_ds.agent.weight_decay_mode,
            dense_ds.agent.batch_size, dense_ds.total_env_steps) == (1e-3, 2e-4, "coupled", 100, 1_000_000)
    assert dense_ds.sparsity.actor == dense_ds.sparsity.critic == 0.0
    assert grid.parse_cell("hopper/td3/ds").reference == grid.parse_cell("hopper/td3/dense@ds_settings")
    assert grid.parse_cell("hopper/td3/rlx2").reference == grid.parse_cell("hopper/td3/dense")
    assert grid.parse_cell("ant/sac/ds").reference == grid.parse_cell("ant/sac/dense")
    with pytest.raises(ValueError, match="rlx2_sparsity is for DS"):
        grid.overrides(grid.Cell("hopper", "td3", "rlx2", "rlx2_sparsity"), SMALL)


def test_paper_tier_is_the_paper_presets():
    for cell in PAPER.cells:
        if cell.regime == "paper":
            assert grid.make_config(cell, PAPER) == presets.make_config(cell.method, cell.algo, cell.task), cell.key


def test_cell_selection_errors():
    assert [c.key for c in grid.select(SMALL, ["hopper/td3/rlx2", "halfcheetah/td3/dense"])] == [
        "halfcheetah/td3/dense", "hopper/td3/rlx2"]  # grid order
    with pytest.raises(ValueError, match="not in the small tier"):
        grid.select(SMALL, ["ant/td3/rlx2"])
    with pytest.raises(ValueError, match="expected <task>/<algo>"):
        grid.parse_cell("hopper/rlx2")
    with pytest.raises(ValueError, match="regime must be one of"):
        grid.parse_cell("hopper/td3/rlx2@fast")


def _history(returns, walltime=10.0):
    """A canonical history with one evaluation per 5k steps; ``returns[t][seed]``."""
    return [[5_000 * (t + 1), {run_logging.RETURN_KEY: list(r), "training/walltime": [walltime] * len(r)}]
            for t, r in enumerate(returns)]


def test_aggregate_figures_by_hand(tmp_path):
    dense = grid.parse_cell("hopper/td3/dense@ds_settings")
    ds = grid.parse_cell("hopper/td3/ds")
    summary = {"mean": {"sparsity_actor": 0.5, "sparsity_critic": 0.4, "total_size": 0.55, "train_flops": 0.6,
                        "inference_flops": 0.5}}
    dense_returns = [[10, 20], [100, 200], [300, 300], [400, 400], [500, 500]]
    ds_returns = [[50, 70], [400, 500], [600, 600], [700, 800], [900, 1000]]
    runs = {dense: {"history": _history(dense_returns), "summary": summary},
            ds: {"history": _history(ds_returns), "summary": summary}}
    rows = {r["cell"]: r for r in aggregate.cell_rows(runs)}
    # final: mean of the last 3 evaluations per seed, then over seeds
    assert rows["dense@ds_settings"]["final_return"] == pytest.approx(400.0)
    ds_final = np.mean([(600 + 700 + 900) / 3, (600 + 800 + 1000) / 3])
    assert rows["ds"]["final_return"] == pytest.approx(ds_final)
    assert rows["ds"]["pct_dense"] == pytest.approx(100 * ds_final / 400)
    assert rows["ds"]["steps_to_dense"] == 10_000  # seed mean 450 >= 400 at the second evaluation
    assert rows["dense@ds_settings"]["steps_to_dense"] == 20_000
    assert rows["ds"]["wall_time_s"] == pytest.approx(50.0)
    assert rows["ds"]["env_steps"] == 25_000 and rows["ds"]["seeds"] == 2
    # a shorter cell is compared with the reference's evaluations up to its own last step
    short = {dense: runs[dense], ds: {"history": _history(ds_returns[:3]), "summary": summary}}
    row = [r for r in aggregate.cell_rows(short) if r["cell"] == "ds"][0]
    assert row["pct_dense"] == pytest.approx(100 * row["final_return"] / np.mean([(10 + 100 + 300) / 3,
                                                                                     (20 + 200 + 300) / 3]))


def test_aggregate_writes_tables_curves_and_plots(tmp_path):
    """The files of a tier, from run directories laid out as the launcher writes them."""
    root, results = str(tmp_path / "runs"), str(tmp_path / "results")
    cells = [grid.parse_cell("halfcheetah/sac/dense"), grid.parse_cell("halfcheetah/sac/rlx2")]
    for cell, scale in zip(cells, (1.0, 0.9)):
        workdir = grid.cell_dir(root, SMALL, cell)
        log = run_logging.RunLog(workdir, 2, tensorboard=False)
        for steps, m in _history([[100 * scale * t, 120 * scale * t] for t in range(1, 5)]):
            log.append(steps, m)
        log.close()
        run_logging.write_json(os.path.join(workdir, "summary.json"), {"mean": {"total_size": 0.2}})
    rows = aggregate.write(root, results, SMALL)
    assert [r["cell"] for r in rows] == ["dense", "rlx2"]
    out = os.path.join(results, "small")
    assert rows[1]["pct_dense"] == pytest.approx(90.0)
    table = open(os.path.join(out, "table.md")).read()
    assert "| halfcheetah | sac | rlx2 | 2 |" in table and "Not finished yet (17 of 19)" in table
    assert os.path.getsize(os.path.join(out, "halfcheetah_sac.png")) > 0
    curve = open(os.path.join(out, "curves", "halfcheetah_sac_rlx2.csv")).read().splitlines()
    assert curve[0] == "env_steps,seed_0,seed_1,mean" and len(curve) == 5
    # the committed records alone (run directories lost with the machine) give the same table
    for cell in cells:
        aggregate.keep_record(grid.cell_dir(root, SMALL, cell), results, SMALL, cell)
    shutil.rmtree(root)
    assert aggregate.write(root, results, SMALL) == rows
    assert os.path.exists(os.path.join(out, "runs", "halfcheetah", "sac", "rlx2", "metrics", "seed_1.jsonl"))


def test_claim_verdicts():
    def row(cell, final, std, steps_to=None):
        return {"task": "hopper", "algo": "td3", "cell": cell, "final_return": final, "final_return_std": std,
                "steps_to_dense": steps_to, "env_steps": 100_000}

    rows = [row("dense@ds_settings", 1000, 10), row("ds", 1100, 10, steps_to=40_000),
            row("ds+importance", 1105, 30), row("dense", 1000, 10), row("rlx2", 975, 5)]
    got = {c["claim"]: c["verdict"] for c in aggregate.claims(rows)}
    assert got["DS-TD3 at DS's ~50% ER densities >= dense TD3 (DS's settings)"] == "holds"
    assert got["importance scoring improves DS at DS's densities"] == "not separable"
    assert got["RLx2 within 3% of dense at its sparsities"] == "not separable"  # 975 vs 970 +- 11
    assert got["DS reaches dense's final return within 40-50% of the steps"] == "holds"
    rows[-1] = row("rlx2", 900, 5)
    got = {c["claim"]: c["verdict"] for c in aggregate.claims(rows)}
    assert got["RLx2 within 3% of dense at its sparsities"] == "does not hold"
    assert "RLx2 above RigL at the same sparsity" not in got  # no rigl cell: not tested
