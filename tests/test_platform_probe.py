"""The measurements behind docs/RESULTS.md's platform section (experiments.reproduce.jax39103) count what
they claim to count."""
import json

import numpy as np

from experiments.reproduce import jax39103


def test_ulps_are_float32_steps_across_zero():
    one = np.float32(1.0)
    up = np.nextafter(one, np.float32(2.0))
    assert int(jax39103._ordered(np.array([up]))[0] - jax39103._ordered(np.array([one]))[0]) == 1
    assert jax39103._ordered(np.array([-0.0], np.float32))[0] == jax39103._ordered(np.array([0.0], np.float32))[0]
    tiny = np.float32(1e-45)  # the smallest subnormals, one step either side of zero
    assert int(jax39103._ordered(np.array([tiny]))[0] - jax39103._ordered(np.array([-tiny]))[0]) == 2


def test_compare_dumps_finds_the_changed_entry(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    moved = w.copy()
    moved[1, 2] = np.nextafter(np.nextafter(w[1, 2], np.float32(9)), np.float32(9))  # two ulps up
    np.savez(a / "rlx2_importance_sac.npz", **{".agent.w": w, ".agent.b": np.ones(3, np.float32)})
    np.savez(b / "rlx2_importance_sac.npz", **{".agent.w": moved, ".agent.b": np.ones(3, np.float32)})
    row = jax39103.compare_dumps(str(a), str(b))["rlx2+importance/sac"]
    assert row["max_ulps"] == 2 and row["at"] == ".agent.w"
    assert abs(row["differing_share"] - 1 / 15) < 1e-12 and 0 < row["max_relative"] < 1e-6


def test_shape_grid_flags_a_wrong_row(monkeypatch):
    """A product that returns a wrong last row (what the bug does) is counted; a right one is not."""
    import jax
    real = jax.jit

    def broken(f):
        g = real(f)
        return lambda x, w: g(x, w).at[-1].multiply(1.5)

    monkeypatch.setattr(jax39103, "SHAPES", ((3, 3),))
    monkeypatch.setattr(jax39103, "ROWS", (100,))
    assert [r["wrong_rows"] for r in jax39103.shape_grid()] == [0]
    monkeypatch.setattr(jax, "jit", broken)
    assert [r["wrong_rows"] for r in jax39103.shape_grid()] == [1]
    json.dumps(jax39103.shape_grid())  # records are plain JSON
