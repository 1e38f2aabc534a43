"""The study: every cell's config, fair pairs, the scaling rule, choices, records, statistics and report."""
import json
import math
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps

from experiments.reproduce import __main__ as runner
from experiments.reproduce import choices, grid, records, report, stats
from sparse_rl_jax import launch, presets, run_logging, validation

SMALL, PAPER = grid.TIERS["small"], grid.TIERS["paper"]
CHOICES = ({"buffer": "scaled", "period": "paper", "second_task": "walker2d"},
           {"buffer": "full", "period": "scaled", "second_task": "walker2d"})


def _runs(cell, tier, chosen):
    """Whether ``cell`` runs under ``chosen`` (a candidate second task that was not chosen never does)."""
    try:
        grid.overrides(cell, tier, chosen)
    except grid.NotChosen:
        return False
    return True


def _config(key, tier=SMALL, chosen=CHOICES[0]):
    return grid.make_config(grid.parse_cell(key), tier, chosen)


def test_every_cell_of_every_tier_validates():
    for tier in (SMALL, PAPER):
        assert len(set(tier.cells)) == len(tier.cells)
        for cell in tier.cells:
            for chosen in CHOICES:
                if _runs(cell, tier, chosen):
                    validation.validate(grid.make_config(cell, tier, chosen))


def _matched(tier, cmp_name, other, task, algo, chosen):
    """A comparison's name as the report resolves it: "dense" the recipe-matched dense of the other side's
    family, a family's own method the arm of the chosen period rule."""
    if cmp_name != "dense":
        return grid.resolve(tier, task, algo, cmp_name, chosen["period"])
    fam = grid.parse_name(task, algo, other).family
    return grid.Cell(task, algo, "dense", (fam, chosen["buffer"]))


def test_fair_pairs_differ_only_in_the_methods_own_keys():
    """Every comparison the report makes, on every task and algorithm of both tiers where both cells run:
    the two configs differ only in the keys the comparison is about, and never in buffer capacity."""
    checked = 0
    for tier in (SMALL, PAPER):
        groups = {(c.task, c.algo) for c in tier.cells}
        for task, algo in groups:
            for cmp, chosen in ((c, ch) for c in grid.COMPARISONS for ch in CHOICES):
                a = _matched(tier, cmp.a, cmp.b, task, algo, chosen)
                b = _matched(tier, cmp.b, cmp.a, task, algo, chosen)
                if a in tier.cells and b in tier.cells and _runs(a, tier, chosen) and _runs(b, tier, chosen):
                    ca, cb = grid.make_config(a, tier, chosen), grid.make_config(b, tier, chosen)
                    bad = [k for k in grid.differing_keys(ca, cb) if not grid.allowed(k, cmp.allowed)]
                    assert not bad, f"{tier.name} {a.key} vs {b.key}: also differ in {bad}"
                    assert ca.replay.capacity == cb.replay.capacity
                    checked += 1
    assert checked > 150


def test_fair_pair_check_can_fail():
    rigl, ds = _config("halfcheetah/td3/rigl"), _config("halfcheetah/td3/ds+importance")
    bad = [k for k in grid.differing_keys(rigl, ds) if not grid.allowed(k, ("method",))]
    assert "agent.actor_lr" in bad and "agent.batch_size" in bad


def test_periods_stay_and_run_length_fractions_scale():
    rlx2 = _config("halfcheetah/td3/rlx2@paper_period")
    assert (rlx2.total_env_steps, rlx2.topology.period, rlx2.replay.check_every) == (100_000, 10_000, 10_000)
    assert rlx2.replay.nstep_delay == 10_000  # 300k of 3M -> 10k of 100k
    assert _config("halfcheetah/td3/rlx2@scaled_period").topology.period == 333
    ds = _config("halfcheetah/td3/ds@paper_period")
    assert (ds.topology.period, ds.topology.stop_margin) == (1000, 5_000)  # DS's last 50k of 1M -> 5k
    assert _config("halfcheetah/td3/ds@scaled_period").topology.period == 100
    for name in ("rigl", "set", "rlx2+importance"):  # RLx2's baselines follow the family's period rule
        assert _config(f"halfcheetah/td3/{name}").topology.period == 10_000
        assert _config(f"halfcheetah/td3/{name}", chosen=CHOICES[1]).topology.period == 333


def test_buffers_scale_with_the_recipe_and_baselines_share_rlx2s_schedule():
    scaled, full = _config("halfcheetah/td3/dense@rlx2.scaled"), _config("halfcheetah/td3/dense@rlx2.full")
    assert (scaled.replay.capacity, full.replay.capacity) == (33_333, 100_000)
    rlx2 = _config("walker2d/td3/rlx2", chosen=CHOICES[1])
    assert (rlx2.replay.capacity, rlx2.replay.min_size, rlx2.replay.oldest) == (100_000, 10_000, 205)
    assert _config("walker2d/td3/rlx2").replay.oldest == 68  # 8 x 256 x 33,333 / 1M
    rigl, static, sset = (_config(f"halfcheetah/td3/{m}") for m in ("rigl", "static", "set"))
    paper = presets.make_config("rlx2", "td3", "halfcheetah")
    for c in (rigl, static, sset):
        assert c.sparsity == paper.sparsity and c.sparsity.mask_init == "magnitude"
        assert (c.replay.nstep, c.replay.dynamic) == (1, False)
    assert rigl.topology == sset.topology == _config("walker2d/td3/rlx2").topology
    vl = _config("halfcheetah/td3/dense@vl")
    assert (vl.replay.nstep, vl.replay.dynamic, vl.sparsity.actor) == (3, True, 0.0)
    ds_dense = _config("hopper/td3/dense@ds.scaled", PAPER)
    assert (ds_dense.agent.actor_lr, ds_dense.agent.weight_decay, ds_dense.agent.weight_decay_mode,
            ds_dense.agent.batch_size, ds_dense.total_env_steps) == (1e-3, 2e-4, "coupled", 100, 1_000_000)
    assert ds_dense.replay.capacity == 1_000_000 == _config("halfcheetah/td3/dense@ds.scaled").replay.capacity * 10


def test_every_cell_of_a_tier_is_a_distinct_experiment():
    """No two cells of a tier run the same config (they would spend a cell's compute on the same seeds for
    the same numbers): where a paper's buffer holds its whole run (DS; RLx2's SAC) the whole-history
    recipe is its scaled one, and the tier keeps one of them."""
    for tier in (SMALL, PAPER):
        for chosen in CHOICES:
            seen = {}
            for cell in tier.cells:
                if _runs(cell, tier, chosen):
                    c = grid.make_config(cell, tier, chosen)
                    assert c not in seen.values(), f"{tier.name}: {cell.key} is {[k for k, v in seen.items() if v == c]}"
                    seen[cell.key] = c
    dropped = [grid.parse_cell(k) for k in ("halfcheetah/td3/dense@ds.full", "halfcheetah/sac/dense@rlx2.full")]
    for tier in (SMALL, PAPER):
        assert not set(dropped) & set(tier.cells)
        assert grid.parse_cell("halfcheetah/td3/dense@rlx2.full") in tier.cells  # 33k (1M at the paper's) != all
        assert [c.name for c in grid.recipes(tier, "halfcheetah", "td3", "ds")] == ["dense@ds.scaled"]


def test_cells_wait_for_their_familys_choices():
    rigl = grid.parse_cell("halfcheetah/td3/rigl")
    with pytest.raises(grid.MissingChoice, match="buffer choice"):
        grid.make_config(rigl, SMALL, {})
    with pytest.raises(grid.MissingChoice, match="period rule"):
        grid.make_config(rigl, SMALL, {"buffer": "full"})
    grid.make_config(grid.parse_cell("halfcheetah/td3/rlx2@paper_period"), SMALL, {"buffer": "full"})  # an arm
    grid.make_config(grid.parse_cell("hopper/td3/rlx2"), PAPER, {"buffer": "full"})  # no scaling, no rule
    grid.make_config(grid.parse_cell("halfcheetah/td3/dense@rlx2.full"), SMALL, {})  # a recipe
    for bad in ("hopper/rlx2", "hopper/td3/rlx2@fast"):
        with pytest.raises(ValueError, match="invalid cell"):
            grid.parse_cell(bad)
    with pytest.raises(ValueError, match="not in the small tier"):
        grid.select(SMALL, ["ant/sac/rlx2"])


def test_choices_are_made_from_data_once(tmp_path):
    results = str(tmp_path)
    rigl = grid.parse_cell("halfcheetah/td3/rigl")
    walker = grid.parse_cell("walker2d/td3/rigl")
    finals = {"halfcheetah/td3/dense@rlx2.scaled": np.array([100., 110, 120]),
              "halfcheetah/td3/dense@rlx2.full": np.array([150., 140, 160])}
    final = lambda c: finals.get(c.key)  # noqa: E731
    assert choices.choose(results, SMALL, rigl, final) == {"buffer": "full"}  # the ablation is not done yet
    finals.update({"halfcheetah/td3/rlx2@paper_period": np.array([100., 101, 99, 100]),
                   "halfcheetah/td3/rlx2@scaled_period": np.array([101., 100, 102, 99])})
    assert choices.choose(results, SMALL, rigl, final) == {"buffer": "full", "period": "paper"}  # not better
    # the period rule is the family's, on every task; the buffer is each task's own
    assert choices.of(results, SMALL, walker) == {"period": "paper"}
    finals["halfcheetah/td3/dense@rlx2.scaled"] = np.array([900., 900, 900])  # made choices never change
    assert choices.choose(results, SMALL, rigl, final)["buffer"] == "full"
    made = json.load(open(choices.path(results, SMALL)))
    assert made["halfcheetah/td3/rlx2"]["buffer"]["mean_final_return"] == {"scaled": 110.0, "full": 150.0}
    assert made["family/rlx2"]["period"]["decided_on"] == "halfcheetah/td3"
    finals["halfcheetah/td3/rlx2@scaled_period"] = np.array([200., 210, 190, 205])  # clearly better
    assert choices.choose(str(tmp_path / "other"), SMALL, rigl, final)["period"] == "scaled"
    # a family with one recipe (DS: its scaled buffer is the whole run) takes it once it has finished
    ds = grid.parse_cell("halfcheetah/td3/ds+importance")
    assert "buffer" not in choices.choose(results, SMALL, ds, final)
    finals["halfcheetah/td3/dense@ds.scaled"] = np.array([50., 60, 70])
    assert choices.choose(results, SMALL, ds, final)["buffer"] == "scaled"
    assert "one recipe" in json.load(open(choices.path(results, SMALL)))["halfcheetah/td3/ds"]["buffer"]["rule"]


def test_the_second_task_is_the_probe_that_clearly_learns(tmp_path):
    """Hopper's dense TD3 rises far above its untrained policy, walker2d's a little, ant's not at all:
    hopper is chosen, the others' cells never run, and hopper's probe goes on to the tier's seeds."""
    results = str(tmp_path)
    probes = {"hopper": ([10., 12, 11], [900., 950, 1000]), "walker2d": ([100., 120, 110], [300., 200, 400]),
              "ant": ([-50., -40, -60], [-55., -30, -70])}

    def pick(i):
        return lambda c: (np.array(probes[c.task][i]) if c.task in probes and c.name == grid.PROBE else None)

    rigl = {t: grid.parse_cell(f"{t}/td3/rigl") for t in probes}
    with pytest.raises(grid.MissingChoice, match="second-task choice"):
        grid.make_config(rigl["hopper"], SMALL, {"buffer": "full", "period": "paper"})
    assert "second_task" not in choices.choose(results, SMALL, rigl["ant"], lambda c: None, pick(0))  # no probes yet
    chosen = choices.choose(results, SMALL, rigl["ant"], pick(1), pick(0))
    assert chosen["second_task"] == "hopper"
    made = json.load(open(choices.path(results, SMALL)))["tier"]["second_task"]
    assert made["probes"]["hopper"]["p"] < stats.ALPHA < made["probes"]["ant"]["p"] and made["seeds"] == 3
    assert made["probes"]["hopper"]["t"] > made["probes"]["walker2d"]["t"]
    full = {**chosen, "buffer": "full", "period": "paper"}
    grid.make_config(rigl["hopper"], SMALL, full)
    for task in ("walker2d", "ant"):
        with pytest.raises(grid.NotChosen):
            grid.make_config(rigl[task], SMALL, full)
        assert grid.seeds_wanted(SMALL, grid.parse_cell(f"{task}/td3/{grid.PROBE}"), 10, full) == 3
    assert grid.seeds_wanted(SMALL, grid.parse_cell(f"hopper/td3/{grid.PROBE}"), 10, full) == 10
    assert grid.seeds_wanted(SMALL, rigl["hopper"], 10, full) == 10
    assert choices.of(results, SMALL, rigl["walker2d"])["second_task"] == "hopper"  # a tier-wide choice


# ------------------------------------------------------------------------------------------ stats
def test_welch_matches_scipy_and_ratio_interval_covers():
    rng = np.random.default_rng(0)
    a, b = rng.normal(10, 2, 10), rng.normal(8, 3, 12)
    d = stats.welch(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert d.p_greater == pytest.approx(ref.pvalue) and d.p_less == pytest.approx(1 - ref.pvalue)
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (d.lo, d.hi) == (pytest.approx(ci.low), pytest.approx(ci.high))
    # Fieller's interval covers the true ratio about 95% of the time
    hits = 0
    for _ in range(400):
        x, y = rng.normal(90, 20, 10), rng.normal(100, 20, 10)
        r = stats.ratio(x, y)
        hits += r.lo <= 0.9 <= r.hi
    assert 0.91 <= hits / 400 <= 0.99
    assert stats.ratio([1., 2, 3], [-1., 0, 1]).lo == -math.inf  # reference not away from zero


def test_equivalence_holm_and_verdicts():
    rng = np.random.default_rng(1)
    ref = rng.normal(1000, 10, 10)
    same = stats.equivalence(ref + rng.normal(0, 5, 10), ref, 0.03)
    assert same.p < 0.05 and same.smallest_margin < 0.03
    far = stats.equivalence(ref * 0.8, ref, 0.03)
    assert far.p > 0.5 and far.p_outside < 0.05 and far.smallest_margin > 0.15
    noisy = stats.equivalence(rng.normal(1000, 400, 3), rng.normal(1000, 400, 3), 0.03)
    assert noisy.p > 0.05 and noisy.p_outside > 0.05  # neither: inconclusive
    assert stats.holm([0.01, 0.04, 0.03, float("nan")])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(stats.holm([0.01, float("nan")])[1])
    # a planned family of 4 with two tested: the two untested count at p = 1
    assert stats.holm([0.04, 0.01], family=4) == pytest.approx([0.12, 0.04])
    assert stats.holm([0.04, 0.01], family=4) == pytest.approx(stats.holm([0.04, 0.01, 1.0, 1.0])[:2])
    assert stats.verdict(0.01, 0.9) == "holds" and stats.verdict(0.9, 0.01) == "does not hold"
    assert stats.verdict(0.2, 0.3) == "inconclusive"


def test_rliable_aggregates_are_reproducible_and_leave_numpys_generator_alone():
    rng = np.random.default_rng(2)
    scores = {"a": rng.normal(1.0, 0.1, (10, 2)), "b": rng.normal(0.8, 0.1, (10, 2))}
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    one = stats.rl_aggregates(scores, [("a", "b")], reps=500)
    assert np.array_equal(np.random.get_state()[1], before)
    two = stats.rl_aggregates(scores, [("a", "b")], reps=500)
    assert one.iqm == two.iqm and one.improvement == two.improvement
    iqm, lo, hi = one.iqm["a"]
    assert lo < iqm < hi and abs(iqm - 1.0) < 0.1
    assert one.improvement[("a", "b")][0] > 0.8
    # a method's interval is its own: adding a cell to the study leaves the others' intervals where they were
    more = stats.rl_aggregates({"c": rng.normal(0.5, 0.1, (10, 2)), **scores}, [("a", "b")], reps=500)
    assert more.iqm["a"] == one.iqm["a"] and more.mean["b"] == one.mean["b"]
    assert more.improvement == one.improvement
    assert all(np.array_equal(more.profiles[k][1], one.profiles[k][1]) for k in scores)


# ---------------------------------------------------------------------------------------- records
def _batch(results, cell, first, returns, train_flops=0.5, tier=SMALL, total_size=None, sps=100.0):
    """A finished batch's record as the runner keeps it: ``returns[t][seed]`` at 5k-step evaluations, the
    program at ``sps`` env steps per second (its first period, which compiles, at a tenth of it)."""
    run = os.path.join(results, "_run", cell.dirname, records.batch_name(first, len(returns[0])))
    log = run_logging.RunLog(run, len(returns[0]), tensorboard=False)
    for t, r in enumerate(returns):
        log.append(5_000 * (t + 1), {run_logging.RETURN_KEY: list(map(float, r)),
                                     "training/walltime": [10.0] * len(r),
                                     "training/sps": [sps / (10 if t == 0 else 1)] * len(r)})
    log.close()
    run_logging.write_json(os.path.join(run, "config.json"), {"method": cell.method})
    run_logging.write_json(os.path.join(run, records.PROVENANCE), {"commit": "abcdef0123"})
    run_logging.write_json(os.path.join(run, "summary.json"), {"mean": {"train_flops": train_flops,
                                                                       "total_size": total_size}})
    return records.keep(run, results, tier, cell)


def test_batches_add_seeds_and_are_never_replaced(tmp_path):
    results = str(tmp_path)
    cell = grid.parse_cell("walker2d/td3/rlx2")
    _batch(results, cell, 0, [[1, 2], [3, 4], [5, 6]])
    with pytest.raises(records.RecordExists):
        _batch(results, cell, 0, [[9, 9], [9, 9], [9, 9]])
    _batch(results, cell, 2, [[7, 8, 9], [7, 8, 9], [7, 8, 9]])
    data = records.load(results, SMALL, cell)
    assert data.seeds == [0, 1, 2, 3, 4] and data.returns.shape == (3, 5)
    assert data.returns[-1].tolist() == [5, 6, 7, 8, 9]
    assert records.next_seed(results, str(tmp_path / "none"), SMALL, cell) == 5


def test_launch_args_start_a_batch_with_its_first_seed_and_resume_it(tmp_path):
    cell = grid.parse_cell("halfcheetah/td3/rigl")
    batch = str(tmp_path / "seeds_10-19")
    cmd = runner.launch_args(SMALL, cell, batch, 10, 10, "docs/results", ["total_env_steps=20000"])
    assert "--config.seed=10" in cmd and cmd[cmd.index("--seeds") + 1] == "10"
    assert any(a.endswith(f":small,{cell.key},{os.path.abspath('docs/results')}") for a in cmd)
    os.makedirs(os.path.join(batch, "checkpoints"))
    assert runner.launch_args(SMALL, cell, batch, 10, 10, "r", [])[-1] == "--resume"
    assert runner.partial_batch(str(tmp_path)) == batch


def test_a_level_group_is_one_config_at_its_levels():
    """The sparsity curve's cells of a method run in one program (`--sparsity_levels`): the launcher runs
    the group's first config with each entry at its level, so every cell's config must be exactly that
    config at its level."""
    checked = 0
    for tier in (SMALL, PAPER):
        for cell in (c for c in tier.cells if grid.level_of(c) is not None):
            group = grid.level_group(tier, cell)
            assert [grid.level_of(c) for c in group] == list(grid.LEVELS.values()) and cell in group
            for chosen in CHOICES:
                first = grid.make_config(group[0], tier, chosen)
                assert grid.make_config(cell, tier, chosen) == launch.level_config(first, grid.level_of(cell))
                checked += 1
    assert checked == 2 * 2 * len(grid.CURVE_METHODS) * len(grid.LEVELS)
    assert grid.level_group(SMALL, grid.parse_cell("halfcheetah/td3/rlx2@paper_period")) == ()


def _levels_run(batch, levels, seeds, sps=30.0, periods=6):
    """What `experiments.train --sparsity_levels` leaves in ``batch`` when it ends (`launch`): each level's
    run in ``level_<level>/``, the levels file, then the run's summary."""
    for i, level in enumerate(levels):
        log = run_logging.RunLog(launch.level_dir(batch, level), seeds, tensorboard=False)
        for t in range(periods):
            log.append(5_000 * (t + 1), {run_logging.RETURN_KEY: [100.0 * (i + 1) + s for s in range(seeds)],
                                         "training/walltime": [60.0] * seeds, "training/sps": [sps] * seeds})
        log.close()
        run_logging.write_json(os.path.join(launch.level_dir(batch, level), "config.json"), {"level": level})
        run_logging.write_json(os.path.join(launch.level_dir(batch, level), "summary.json"), {"mean": {}})
    run_logging.write_json(os.path.join(batch, launch.LEVELS_FILE), {"sparsity_levels": list(levels)})
    run_logging.write_json(os.path.join(batch, "summary.json"), {"mean": {}})


def test_a_level_group_runs_in_one_program_and_each_level_is_recorded(tmp_path, monkeypatch):
    """The runner starts one batch for a curve group, with ``--sparsity_levels``; each level's run becomes
    its cell's record (with the program's provenance, marked shared), the group's other cells then have
    their seeds, and the program's wall time and rate count once, not once per level."""
    results, root = str(tmp_path / "results"), str(tmp_path / "runs")
    group = grid.level_group(SMALL, grid.parse_cell("halfcheetah/td3/static@s95"))
    levels = [grid.level_of(c) for c in group]
    started = []

    def fake_batch(cmd, batch):
        started.append(cmd)
        os.makedirs(batch, exist_ok=True)
        run_logging.write_json(os.path.join(batch, records.PROVENANCE), {"commit": "abc", "cpu_model": "x"})
        _levels_run(batch, levels, int(cmd[cmd.index("--seeds") + 1]))
        return 0

    monkeypatch.setattr(runner, "run_batch", fake_batch)
    monkeypatch.setattr(runner, "FLAGS", SimpleNamespace(set=[]))
    monkeypatch.setattr(runner, "_markdown", lambda: None)
    monkeypatch.setattr(report, "write", lambda *args: 0)
    monkeypatch.setattr(choices, "choose", lambda *args: dict(CHOICES[0]))
    assert runner._run_cell(SMALL, group[1], 10, results, root, [], SMALL.cells) == 0
    (cmd,) = started
    assert cmd[cmd.index("--sparsity_levels") + 1] == "0.8,0.95,0.98"
    assert any(a.endswith(f":small,{group[0].key},{os.path.abspath(results)}") for a in cmd)
    assert os.path.dirname(cmd[cmd.index("--workdir") + 1]) == grid.group_dir(root, SMALL, group)
    for i, cell in enumerate(group):
        data = records.load(results, SMALL, cell)
        assert data.seeds == list(range(10)) and data.returns[-1][0] == 100.0 * (i + 1)
        assert data.configs == [{"level": levels[i]}]
        prov = json.load(open(os.path.join(data.batches[0], records.PROVENANCE)))
        assert prov["commit"] == "abc" and prov[records.SHARED]["level"] == levels[i]
        assert runner.state_of(results, root, SMALL, cell, 10) == "done (10 seeds)"
        assert runner._run_cell(SMALL, cell, 10, results, root, [], SMALL.cells) is None
    assert len(started) == 1
    spent = report.compute_spent(report.load(results, SMALL))
    assert spent["batches"] == 1 and spent["hours"] == pytest.approx(6 * 60.0 / 3600)
    assert report.seed_step_rates(report.load(results, SMALL).cells) == {"td3/rlx2": [pytest.approx(30.0 * 10 * 3)] * 3}
    # selected alone, or with records of different seeds, a level runs on its own
    assert runner.level_group(results, root, SMALL, group[0], [group[0]]) == ()
    _batch(results, group[0], 10, _curves(900, n=2))
    assert runner.level_group(results, root, SMALL, group[1], SMALL.cells) == ()


# ----------------------------------------------------------------------------------------- report
def _curves(final, n=10, seed=0, scale=30.0):
    """Evaluation returns [T=6][n] rising to about ``final`` per seed."""
    rng = np.random.default_rng(seed)
    ends = final + rng.normal(0, scale, n)
    return [list(ends * f) for f in (0.1, 0.3, 0.5, 1.0, 1.0, 1.0)]


def test_report_from_records(tmp_path, monkeypatch):
    """Claims, verdicts with Holm, references and files, from committed records alone."""
    monkeypatch.setattr(stats, "BOOTSTRAP_REPS", 2_000)
    results = str(tmp_path / "results")
    cells = {"dense@rlx2.scaled": 800, "dense@rlx2.full": 1000, "dense@ds.scaled": 700,
             "rlx2@paper_period": 1000, "rlx2@scaled_period": 950, "rigl": 700, "static": 690, "rlx2+importance": 1300,
             "rlx2@s95": 700, "rlx2@s98": 400}
    sizes = {"rlx2@paper_period": 0.13, "rlx2@s95": 0.05, "rlx2@s98": 0.02}
    for i, (name, final) in enumerate(cells.items()):
        _batch(results, grid.parse_name("halfcheetah", "td3", name), 0, _curves(final, seed=i),
               train_flops=0.8 if "importance" in name else 0.4, total_size=sizes.get(name))
    json.dump({"halfcheetah/td3/rlx2": {"buffer": {"value": "full"}}, "family/rlx2": {"period": {"value": "paper"}}},
              open(choices.path(results, SMALL), "w"))
    md = tmp_path / "RESULTS.md"
    md.write_text("intro\n<!-- study:small begin -->\nSTALE TEXT\n<!-- study:small end -->\noutro\n")
    assert report.write(results, SMALL, markdown=str(md)) == 10
    study = report.load(results, SMALL)
    assert study.reference("halfcheetah", "td3").name == "dense@rlx2.full"
    rows = {(r["claim"], r["against"]): r for r in report.claim_rows(study)}
    assert rows[("RLx2 above RigL at the same sparsity and schedule", "-")]["verdict"] == "holds"
    assert rows[("importance scoring improves RLx2", "-")]["verdict"] == "holds"
    within = rows[("RLx2 within 3% of dense at its sparsities", "recipe-matched")]
    assert within["b"] == "dense@rlx2.full" and within["verdict"] in stats.VERDICTS
    assert ("RLx2 within 3% of dense at its sparsities", "reference") not in rows  # the same cell: one row
    ds_rows = [r for r in rows.values() if r["a"].startswith("ds")]
    assert not ds_rows  # no DS cell ran: nothing about DS is claimed
    flops = rows[("importance scoring improves RLx2, at equal training FLOPs", "-")]
    assert "50% of a's FLOPs" in flops["interval"]
    assert flops["a_mean"] < rows[("importance scoring improves RLx2", "-")]["a_mean"]
    holm = stats.holm([r["p_holds"] for r in report.claim_rows(study)], report.planned_family(SMALL))
    assert [r["p_holds_holm"] for r in report.claim_rows(study)] == pytest.approx(holm)
    assert f"planned family of {report.planned_family(SMALL)} claim rows" in md.read_text()
    text = md.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "STALE" not in text
    assert "| halfcheetah | td3 | RLx2 above RigL" in text and "**holds**" in text
    out = os.path.join(results, "small")
    for name in ("cells.csv", "claims.csv", "cells.md", "aggregates.md", "profile.png", "iqm.png",
                 "halfcheetah_td3.png", "report.md", "curve.csv", "sparsity_curve_halfcheetah_td3.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    curve = open(os.path.join(out, "curves", "halfcheetah_td3_rlx2__paper_period.csv")).read().splitlines()
    assert curve[0].startswith("env_steps,seed_0,") and curve[0].endswith("mean,ci_lo,ci_hi")
    cells_rows = {r["cell"]: r for r in report.cell_rows(study)}
    rlx2 = cells_rows["rlx2@paper_period"]
    assert rlx2["matched_dense"] == "dense@rlx2.full" and rlx2["commits"] == "abcdef01"
    assert rlx2["wall_time_s"] == pytest.approx(60.0)  # 6 periods of 10 s
    assert report.compute_spent(study)["hours"] == pytest.approx(len(cells) * 60.0 / 3600)
    assert rlx2["pct_ref_lo"] < rlx2["pct_ref"] < rlx2["pct_ref_hi"]
    assert rows[("RLx2 above RigL at the same sparsity and schedule", "-")]["a"] == "rlx2@paper_period"
    # the sparsity curve: the paper-level cell (the chosen period's arm) and the level cells, in % of dense
    points = {p["cell"]: p for p in report.curve_rows(study, report.cell_rows(study))}
    assert set(points) == {"rlx2@paper_period", "rlx2@s95", "rlx2@s98", "static"}  # static: its paper level
    assert points["rlx2@s98"]["pct_ref"] == pytest.approx(400 / 1000, rel=0.1)
    assert points["rlx2@s98"]["pct_ref_lo"] < points["rlx2@s98"]["pct_ref"] < points["rlx2@s98"]["pct_ref_hi"]
    assert "### Sparsity curve" in text and "| halfcheetah TD3 | rlx2 | rlx2@s95 |" in text


def test_holms_family_is_the_tiers_planned_claims():
    """Counted by hand from `report.CLAIMS` and the small grid: halfcheetah TD3 yields 21 rows (claims
    against dense twice: recipe-matched and reference; importance claims twice more: at equal FLOPs), the
    second task's TD3 cells 4 (RLx2 within dense x2, above RigL, above static) and halfcheetah SAC 6."""
    assert report.planned_family(SMALL) == 21 + 4 + 6
    assert report.planned_family(PAPER) > report.planned_family(SMALL)


def test_claims_against_the_reference_wait_for_all_its_recipes(tmp_path):
    """The reference (best dense recipe) can change until every recipe has run: until then the claims
    against it are not tested, the aggregates (normalised by it) leave the task out and the cells table
    calls it provisional; recipe-matched claims go ahead."""
    results = str(tmp_path)
    finals = {"dense@rlx2.scaled": 800, "dense@rlx2.full": 1000, "rlx2@paper_period": 790}
    for i, (name, final) in enumerate(finals.items()):
        _batch(results, grid.parse_name("halfcheetah", "td3", name), 0, _curves(final, seed=i))
    json.dump({"halfcheetah/td3/rlx2": {"buffer": {"value": "scaled"}},
               "family/rlx2": {"period": {"value": "paper"}}}, open(choices.path(results, SMALL), "w"))

    def against():
        return {r["against"] for r in report.claim_rows(report.load(results, SMALL))
                if r["claim"] == "RLx2 within 3% of dense at its sparsities"}

    assert against() == {"recipe-matched"}
    assert report.normalised_scores(report.load(results, SMALL), [report.REF, "rlx2"]) == {}  # aggregates wait
    assert "(provisional" in report.cells_markdown(report.cell_rows(report.load(results, SMALL)),
                                                   report.load(results, SMALL))
    _batch(results, grid.parse_name("halfcheetah", "td3", "dense@ds.scaled"), 0, _curves(900, seed=9))
    assert against() == {"recipe-matched", "reference"}
    assert report.normalised_scores(report.load(results, SMALL), [report.REF, "rlx2"])["rlx2"].shape == (10, 1)
    assert "(provisional" not in report.cells_markdown(report.cell_rows(report.load(results, SMALL)),
                                                       report.load(results, SMALL))


def test_list_estimates_whats_left_from_the_recorded_rates(tmp_path):
    """A 10-seed batch at 30 env steps/s is 300 seed-steps/s; one 10-seed 100k cell left is 1M seed-steps,
    0.9 hours; the second task's candidates count as one task until it is chosen; rates are per algorithm
    and family (DS's batch of 100 runs faster than RLx2's 256), with the algorithm's as a fallback."""
    results, root = str(tmp_path / "results"), str(tmp_path / "runs")
    done = grid.parse_cell("halfcheetah/td3/dense@rlx2.scaled")
    _batch(results, done, 0, _curves(800), sps=30.0)
    assert report.seed_step_rates(report.load(results, SMALL).cells) == {"td3/rlx2": [pytest.approx(300.0)]}
    line = runner.estimate(results, root, SMALL, [done, grid.parse_cell("halfcheetah/td3/dense@rlx2.full")], 10)
    assert line.startswith("remaining: 1 cells, 1.0M seed-steps, about 0.9 hours of wall time") and \
        "td3/rlx2 300 seed-steps/s (median of 1 batches)" in line
    candidates = [grid.parse_cell(f"{t}/td3/rlx2") for t in SMALL.second_tasks]
    assert runner.estimate(results, root, SMALL, candidates, 10).startswith("remaining: 1 cells, 1.0M seed-steps")
    sac = runner.estimate(results, root, SMALL, [grid.parse_cell("halfcheetah/sac/rlx2")], 10)
    assert "sac/rlx2 300 seed-steps/s (no batch yet: the others' rate)" in sac
    ds = grid.parse_cell("halfcheetah/td3/ds@paper_period")
    assert "td3/ds 300 seed-steps/s (no batch yet: its algorithm's rate)" in runner.estimate(results, root, SMALL, [ds], 10)
    _batch(results, grid.parse_cell("halfcheetah/td3/dense@ds.scaled"), 0, _curves(1500), sps=60.0)
    both = runner.estimate(results, root, SMALL, [ds, grid.parse_cell("halfcheetah/td3/rigl")], 10)
    assert both.startswith("remaining: 2 cells, 2.0M seed-steps, about 1.4 hours") and "td3/ds 600" in both
    rigl = grid.parse_cell("halfcheetah/td3/rigl")  # 3 of its 10 seeds on record: 7 left
    _batch(results, rigl, 0, _curves(900, n=3), sps=30.0)
    assert runner.estimate(results, root, SMALL, [rigl], 10).startswith("remaining: 1 cells, 0.7M seed-steps")
    # the report states what `--list` estimates for the cells not run yet and the one short of its seeds
    study = report.load(results, SMALL)
    left = next(line for line in report.cells_markdown(report.cell_rows(study), study).splitlines()
                if line.startswith("Left to run"))
    everything = runner.estimate(results, root, SMALL, list(SMALL.cells), SMALL.seeds)
    cells, steps = everything.split(" cells, ")[0].split()[-1], everything.split(" cells, ")[1].split()[0]
    hours = float(everything.split("about ")[1].split(" hours")[0])
    assert left == (f"Left to run (the 41 not run yet, 1 short of 10 seeds, of which {cells} run (the second "
                    f"task's candidates count once)): {steps} seed-steps, about {hours:.0f} hours of wall time at "
                    "the recorded rates (`--list` gives the breakdown).")


def test_every_attempt_at_a_batch_is_on_record(tmp_path):
    """A batch's provenance keeps its start, then one entry per attempt with the commit it ran from; an
    attempt cut off (no end) stays on record beside the ones that ended."""
    batch = str(tmp_path / "seeds_0-1")
    fail = [sys.executable, "-c", "import sys; sys.exit(3)"]
    assert runner.run_batch(fail, batch) == 3
    records.start_attempt(batch, runner.REPO, fail)  # an attempt whose machine went away
    assert runner.run_batch([sys.executable, "-c", ""], batch) == 0
    prov = json.load(open(os.path.join(batch, records.PROVENANCE)))
    assert prov["command"] == fail and len(prov["commit"]) == 40
    first, cut, last = prov["runs"]
    assert first["exit_code"] == 3 and "ended" not in cut and last["exit_code"] == 0
    assert all(len(r["commit"]) == 40 and "started" in r for r in (first, cut, last))


def test_faster_claim_when_some_bootstrap_draws_never_reach_the_target():
    """DS reaches dense's final return within half the steps: a cell whose seeds reach it only on some
    resamples gives a finite lower bound and 'not reached' as the upper one (an interpolating quantile
    made it nan and the report crashed)."""
    steps = np.arange(1, 11) * 10_000.0
    tier = grid.TIERS["small"]
    a_cell = grid.parse_cell("halfcheetah/td3/ds@paper_period")
    b_cell = grid.parse_cell("halfcheetah/td3/dense@ds.scaled")
    reach = np.where(np.arange(10)[:, None] >= 3, 100.0, 0.0)  # 100 from the 4th evaluation on
    a_returns = np.concatenate([np.repeat(reach, 7, axis=1), np.zeros((10, 3))], axis=1)  # 3 of 10 seeds never
    b_returns = np.full((10, 10), 60.0)
    data = lambda cell, r: records.CellData(cell, steps, r, list(range(10)), [], [], [], [])  # noqa: E731
    study = report.Study(tier, {a_cell: data(a_cell, a_returns), b_cell: data(b_cell, b_returns)}, {}, "")
    row = report._faster(study, a_cell, b_cell, 0.5)
    assert "reached at 40,000 of 100,000 steps" in row["interval"], row
    assert "bootstrap 95%: 40,000 to not reached" in row["interval"], row
    assert 0 < row["p_holds"] < 1 and row["p_holds"] + row["p_fails"] == pytest.approx(1.0)
