"""Plots are valid PNGs; `python -m experiments.plot` overlays runs and compares them with the dense run."""
import json
import os

import matplotlib.image
import numpy as np
import pytest

import sparse_rl_jax as srj
from sparse_rl_jax import config as cfg_lib
from sparse_rl_jax import plotting, run_logging


def _valid_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    return True


def _history(final, seeds=2, chunks=5, nstep_from=3):
    rng = np.random.default_rng(int(final))
    history = []
    for c in range(1, chunks + 1):
        ret = final * c / chunks
        history.append([c * 1000, {
            "eval/episode_reward": [ret + float(rng.normal()) for _ in range(seeds)],
            "training/critic_loss": [1.0 / c] * seeds,
            "buffer/size": [min(c * 1000, 3000)] * seeds,
            "nstep": 3 if c >= nstep_from else 1,
            "density/actor/dense_0": [0.2] * seeds, "density/critic/q1/dense_1": [0.1 + 0.01 * c] * seeds,
        }])
    history[0][1]["eval/episode_reward"][0] = None  # a missing value must not break anything
    return history


def _fake_run(folder, method, final, seeds=2, summary=True):
    """A work dir as experiments.train leaves it (config.json, metrics, summary.json)."""
    config = srj.make_config(method, "td3")
    os.makedirs(folder, exist_ok=True)
    run_logging.write_json(os.path.join(folder, "config.json"), cfg_lib.to_dict(config))
    log = run_logging.RunLog(folder, seeds, history=_history(final, seeds), tensorboard=False)
    log.close()
    if summary:
        mean = {"final_return": final, "best_return": final, "auc": final / 2, "sparsity_actor": 0.9,
                "sparsity_critic": 0.85, "total_size": 0.14, "train_flops": 0.15, "inference_flops": 0.1}
        run_logging.write_json(os.path.join(folder, "summary.json"), {"mean": mean, "seeds": []})
    return str(folder)


def test_run_plots_are_valid_pngs(tmp_path):
    history = _history(100.0)
    masks = {"actor/dense_0": np.random.default_rng(0).random((4, 16)) < 0.2,
             "critic/q1/dense_2": np.ones((16, 1), bool)}
    paths = plotting.run_plots(str(tmp_path), history, masks, "rlx2 TD3", rlx2_panels=True)
    assert [os.path.basename(p) for p in paths] == [
        "learning_curve.png", "layer_density.png", "final_masks.png", "plasticity.png", "buffer_nstep.png"]
    assert all(_valid_png(p) for p in paths)


def test_metric_files_round_trip_to_history(tmp_path):
    folder = _fake_run(tmp_path, "ds", 50.0, summary=False)
    back = run_logging.read_history(folder)  # scalars come back as per-seed lists
    for seed in (0, 1):
        assert run_logging.seed_rows(back, seed) == run_logging.seed_rows(_history(50.0), seed)
    with open(os.path.join(folder, "metrics", "seed_0.csv")) as f:
        header = f.readline().strip().split(",")
    assert header[:2] == ["env_steps", "eval/episode_reward"]


def test_auc_is_mean_height_of_the_curve():
    assert run_logging.area_under_curve(np.array([0.0, 10.0]), np.array([0.0, 100.0])) == pytest.approx(50.0)
    assert run_logging.area_under_curve(np.array([5.0]), np.array([7.0])) == 7.0
    assert run_logging.area_under_curve(np.array([]), np.array([])) is None


def test_plot_cli_overlays_runs_and_compares_to_dense(tmp_path, capsys):
    from experiments import plot

    dense = _fake_run(tmp_path / "dense", "dense", 200.0)
    ds = _fake_run(tmp_path / "ds", "ds", 150.0)
    rlx2 = _fake_run(tmp_path / "rlx2", "rlx2", 100.0, summary=False)  # unfinished: numbers from metrics
    out = str(tmp_path / "cmp.png")
    assert plot.main(["plot", dense, ds, rlx2, f"--out={out}"]) == 0
    text = capsys.readouterr().out
    assert _valid_png(out)
    lines = {line.split()[0]: line for line in text.splitlines() if line.split()[:1] in (["dense"], ["ds"], ["rlx2"])}
    assert "100.0%" in lines["dense"] and "75.0%" in lines["ds"]
    assert "% dense = return / the dense run's return" in text


def test_plot_cli_bad_input(tmp_path, capsys):
    from experiments import plot

    assert plot.main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a training work dir" in err and len(err.strip().splitlines()) == 1
    assert plot.main(["plot"]) == 2
    run = _fake_run(tmp_path / "a", "ds", 10.0)
    assert plot.main(["plot", run, "--labels=x,y"]) == 2
    assert "one label per DIR" in capsys.readouterr().err
    assert json.load(open(os.path.join(run, "config.json")))["method"] == "ds"
