"""The learning gate's bookkeeping (experiments/bench/brax_gate.py), without Brax's environment: per-seed
resume of Brax's trainer, the pair's statistics and verdict, and the record it writes once."""
import json
import os

import numpy as np
import pytest

from experiments.bench import brax_gate

STEPS = (90_000, 95_000, 100_000)


def _result(per_seed_final, spread=0.0):
    """A variant's result whose last three evaluations average to ``per_seed_final`` for each seed."""
    final = np.asarray(per_seed_final, float)
    return {s: list(final + spread * d) for s, d in zip(STEPS, (-1.0, 0.0, 1.0))}


def test_brax_seeds_resume_after_an_interruption(tmp_path):
    gate = brax_gate.Gate(seeds=3, env_steps=10_000, evals=2, workdir=str(tmp_path))
    calls = []

    def learn(args, fail_at=None):
        calls.append(args["seed"])
        if args["seed"] == fail_at:
            raise RuntimeError("the machine went away")
        assert args["warmup"] == brax_gate.STUDY_WARMUP and not args["normalize"]
        return [{"env_steps": 0, "eval_return": -1.0},  # the trainer's evaluation before training: not kept
                {"env_steps": 5_000, "eval_return": 10.0 * args["seed"]},
                {"env_steps": 10_000, "eval_return": 100.0 + args["seed"]}]

    with pytest.raises(RuntimeError):
        brax_gate.run_brax("brax_study", gate, lambda args: learn(args, fail_at=1))
    assert calls == [0, 1] and os.path.exists(tmp_path / "brax_study_seed_0.json")
    assert not os.path.exists(tmp_path / "brax_study_seed_1.json")
    kept = json.loads((tmp_path / "brax_study_seed_0.json").read_text())
    assert kept["provenance"]["commit"] and kept["provenance"]["ended"] and len(kept["rows"]) == 3
    calls.clear()
    out = brax_gate.run_brax("brax_study", gate, learn)
    assert calls == [1, 2]  # seed 0 was kept, not rerun
    assert out == {5_000: [0.0, 10.0, 20.0], 10_000: [100.0, 101.0, 102.0]}


def test_final_scores_are_the_mean_of_the_last_three_evaluations():
    result = {5_000: [0.0, 0.0], **_result([100.0, 200.0], spread=30.0)}
    assert brax_gate.final_scores(result) == pytest.approx([100.0, 200.0])


@pytest.mark.parametrize("ours,verdict", [
    (1000 + 10 * np.arange(-5, 5), "holds"),  # 10 seeds, tight, equal means: within 10%
    (500 + 10 * np.arange(-5, 5), "does not hold"),  # half of Brax's
    (np.array([400.0, 1000.0, 1600.0]), "inconclusive"),  # equal mean, too spread out to tell
])
def test_the_pairs_verdict_is_computed(ours, verdict):
    brax = 1000 + 10 * np.arange(-5, 5)
    c = brax_gate.compare(_result(ours), _result(brax))
    assert c["verdict"] == verdict, c
    assert c["ratio"] == pytest.approx(np.mean(ours) / np.mean(brax)) and c["ratio_lo"] < c["ratio"] < c["ratio_hi"]
    line = brax_gate.describe("ours_study", "brax_study", c)
    assert f"within 10% of Brax's: {verdict}" in line and "(95% CI)" in line


def test_main_reports_finished_variants_and_writes_its_record_once(tmp_path, capsys):
    work, record = tmp_path / "gate", tmp_path / "records" / "gate.json"
    work.mkdir()
    ours, brax = _result(900 + 10 * np.arange(-3, 2)), _result(1000 + 10 * np.arange(-3, 2))
    for name, result in (("ours_study", ours), ("brax_study", brax)):  # finished earlier: not rerun
        (work / f"{name}.json").write_text(json.dumps({str(k): v for k, v in result.items()}))
    argv = ["brax_gate", f"--workdir={work}", "--variants=ours_study,brax_study", "--seeds=5", "--evals=3",
            f"--record={record}"]
    assert brax_gate.main(argv) == 0
    out = capsys.readouterr().out
    assert "| ours_study | 890 ± 16 @ 90,000 | 890 ± 16 @ 95,000 | 890 ± 16 @ 100,000 |" in out  # sample std
    saved = json.loads(record.read_text())
    pair = saved["pairs"]["ours_study/brax_study"]
    assert pair["ours"] == pytest.approx(list(900 + 10 * np.arange(-3, 2)))
    assert pair["verdict"] in ("holds", "does not hold", "inconclusive") and pair["verdict"] in out
    assert saved["eval_returns"]["brax_study"]["100000"] == brax[100_000]
    assert saved["provenance"]["commit"] and saved["provenance"]["command"] == argv
    assert saved["provenance"]["versions"]["ours"]["jax"]
    before = record.read_text()
    assert brax_gate.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "records are never replaced" in err[0]
    assert record.read_text() == before


@pytest.mark.parametrize("variant", sorted(brax_gate.STUDY_VARIANTS))
def test_the_study_variants_are_the_study_cell_but_for_their_keys(variant, tmp_path):
    """The gate tests the SAC the study runs: ``ours_study`` is the study's dense SAC cell itself, and each
    ablation differs from it in its own keys only."""
    from experiments import train
    from experiments.reproduce import choices, grid
    from experiments.reproduce import config as study_config
    from sparse_rl_jax import config as cfg_lib
    from sparse_rl_jax import launch

    gate = brax_gate.Gate(seeds=5, env_steps=100_000, evals=20, workdir=str(tmp_path))
    fv, config = train.parse_flags(brax_gate.ours_args(variant, gate))
    tier_name, key = brax_gate.STUDY_CELL.split(",")
    tier, cell = grid.TIERS[tier_name], grid.parse_cell(key)
    study = grid.make_config(cell, tier, choices.of(study_config.RESULTS, tier, cell))
    a, b = launch.flatten(cfg_lib.to_dict(config)), launch.flatten(cfg_lib.to_dict(study))
    assert {k for k in set(a) | set(b) if a.get(k) != b.get(k)} == set(brax_gate.STUDY_VARIANTS[variant])
    assert all(a[k] == v for k, v in brax_gate.STUDY_VARIANTS[variant].items())
    assert fv["seeds"].value == 5 and fv["workdir"].value == str(tmp_path / variant)
