"""Figures 7/8: hidden-layer statistics against an explicit per-model loop and hand-counted cases, the weight
tiles, and the experiment end to end on the spiral toy."""

import json

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from dropout_lab.beyond import features
from dropout_lab.config import ConfigError, load
from dropout_lab.training import data as data_mod
from dropout_lab.training.train import StackTrainer

from conftest import ROOT, tiny_config


def pair_trainer(*overrides, epochs_done=0):
    """The control and the dropout net of a tiny spiral config in one stack, as train_pair builds it."""
    cfg = tiny_config("model.hidden=[16]", "data.train_size=300", *overrides)
    tr = StackTrainer([cfg.control(), cfg.run_config()], data_mod.load("spiral"))
    for _ in range(epochs_done):
        tr.train_epoch()
    return tr


@pytest.mark.parametrize("scaling", ["inverted", "weight"])
def test_hidden_stats_match_a_per_model_loop(scaling):
    tr = pair_trainer("model.dropout.p_input=0.2", f"model.dropout.scaling={scaling}", epochs_done=1)
    with torch.no_grad():  # a spread of biases: some units mostly off, one dead in model 1
        for b in tr.model.biases[0]:
            b.copy_(torch.linspace(-1.0, 0.5, b.shape[-1]))
        tr.model.biases[0][1, 0, 3] = -100.0
    tr.model.train()  # hidden_stats must switch the noise off itself
    x = tr.x_test[:500]
    W = tr.model.weights[0].mT.detach().double().numpy()  # (K, n_in, H)
    B = tr.model.biases[0].detach().double().numpy()
    xs = x.double().numpy()
    acts = []
    for k, cfg in enumerate(tr.cfgs):
        keep = 1 - cfg.model.dropout.p_input if (scaling == "weight" and cfg.has_dropout) else 1.0
        acts.append(np.maximum((xs * keep) @ W[k] + B[k], 0.0))  # (N, H)
    low = float(np.median(acts[0].mean(axis=0)))  # some units on each side of the threshold

    s = features.hidden_stats(tr, x, low=low, bins=20)
    assert s["labels"] == ["no dropout", "dropout (retain 0.8 input, 0.5 hidden)"]
    assert s["n_images"] == 500 and s["unit_mean"].shape == (2, 16) and s["hist_counts"].shape == (2, 20)
    edges = s["hist_edges"]
    assert edges[0] == 0.0 and edges[-1] == pytest.approx(max(a.max() for a in acts), rel=1e-6)
    for k, a in enumerate(acts):
        np.testing.assert_allclose(s["unit_mean"][k], a.mean(axis=0), rtol=1e-5, atol=1e-6)
        assert s["mean_activation"][k] == pytest.approx(a.mean(), rel=1e-5)
        assert s["frac_zero"][k] == pytest.approx((a == 0).mean(), abs=1e-6)
        assert s["frac_low_units"][k] == pytest.approx((a.mean(axis=0) < low).mean(), abs=1e-6)
        assert s["frac_dead_units"][k] == pytest.approx((a == 0).all(axis=0).mean(), abs=1e-6)
        counts, _ = np.histogram(a, bins=edges)
        assert np.abs(s["hist_counts"][k] - counts).sum() <= 2  # float32 against float64 at bin edges
        assert s["hist_counts"][k].sum() == a.size
    assert s["frac_dead_units"][1] >= 1 / 16  # the unit with bias -100
    assert 0 < s["frac_low_units"][0] < 1 and 0 < s["frac_zero"][0] < 1


def test_sparsity_numbers_of_a_hand_built_layer():
    tr = pair_trainer("model.hidden=[4]", "model.dropout.p_input=0")
    with torch.no_grad():
        tr.model.weights[0][0] = torch.tensor([[1.0, -1.0, 0.0, 0.05], [0.0, 0.0, -1.0, 0.05]]).t()
        tr.model.biases[0][0] = 0.0
        tr.model.weights[0][1] = 0.0  # model 1: every unit 0.5 on every image
        tr.model.biases[0][1] = 0.5
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # model 0, rows = images: [1, 0, 0, .05], [0, 0, 0, .05], [1, 0, 0, .1]
    s = features.hidden_stats(tr, x, low=0.1, bins=4)
    np.testing.assert_allclose(s["unit_mean"][0], [2 / 3, 0, 0, 0.2 / 3], atol=1e-7)
    np.testing.assert_allclose(s["mean_activation"], [2.2 / 12, 0.5], atol=1e-7)
    np.testing.assert_allclose(s["frac_zero"], [7 / 12, 0.0])
    np.testing.assert_allclose(s["frac_low_units"], [3 / 4, 0.0])  # units 1, 2 (silent) and 3 (mean 0.067)
    np.testing.assert_allclose(s["frac_dead_units"], [2 / 4, 0.0])
    np.testing.assert_allclose(s["hist_edges"], [0, 0.25, 0.5, 0.75, 1.0])
    assert s["hist_counts"].tolist() == [[10, 0, 0, 2], [0, 0, 12, 0]]


def test_tile_shapes_and_mosaic():
    assert features.tile_shape(784) == (28, 28)
    assert features.tile_shape(2) == (2, 1)
    assert features.tile_shape(10) == (4, 3)  # 12 cells, the last 2 blank
    assert features.tile_shape(1) == (1, 1)

    w = np.random.default_rng(0).normal(size=(784, 120))
    m = features.tile_mosaic(w)  # 100 of the 120 units, 10 x 10 tiles of 28 x 28 with 1-pixel gaps
    assert m.shape == (10 * 29 - 1, 10 * 29 - 1)
    for i in (0, 9, 10, 57, 99):
        r, c = divmod(i, 10)
        tile = m[r * 29:r * 29 + 28, c * 29:c * 29 + 28]
        v = w[:, i]
        np.testing.assert_allclose(tile, ((v - v.min()) / (v.max() - v.min())).reshape(28, 28))
    assert np.isnan(m[28, :]).all() and np.isnan(m[:, 28]).all()

    w = np.arange(50.0).reshape(10, 5)
    w[:, 4] = 7.0  # a constant unit is drawn mid-gray, not a division by zero
    m = features.tile_mosaic(w)  # 5 units: 3 columns x 2 rows of 4 x 3 tiles
    assert m.shape == (2 * 5 - 1, 3 * 4 - 1)
    first = m[:4, :3].ravel()
    np.testing.assert_allclose(first[:10], np.linspace(0, 1, 10))
    assert np.isnan(first[10:]).all()
    np.testing.assert_allclose(m[5:9, 4:7].ravel()[:10], 0.5)
    assert np.isnan(m[5:9, 8:11]).all()  # the sixth cell of the grid is empty


def test_train_pair_is_the_control_and_the_dropout_net_in_one_stack():
    cfg = tiny_config("model.hidden=[16]", "data.train_size=300", "optim.epochs=2")
    tr = features.train_pair(cfg)
    assert tr.K == 2 and tr.epoch == 2
    assert not tr.cfgs[0].has_dropout and tr.cfgs[0].optim.max_norm is None
    assert tr.cfgs[1].has_dropout and tr.cfgs[1].optim.max_norm == 2.0
    # the control inside the pair is the control trained alone
    alone = StackTrainer([cfg.control()], data_mod.load("spiral"))
    for _ in range(2):
        alone.train_epoch()
    for a, b in zip(tr.model.weights, alone.model.weights):
        torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(tr.model.weights[0][0], tr.model.weights[0][1], atol=1e-3)  # dropout mattered


@pytest.mark.parametrize("override, message", [
    ("model.dropout.kind=none", "no dropout"),
    ("model.width_rule=scaled", "one stack"),
    ("sweep={grid: {seed: [0, 1]}}", "sweep"),
])
def test_train_pair_refuses_what_is_not_a_pair(override, message):
    with pytest.raises(ConfigError, match=message):
        features.train_pair(tiny_config(override))


def test_fig8_config_is_the_paper_setup():
    cfg = load(ROOT / "configs/paper/fig8.yaml")
    assert cfg.name == "fig8" and cfg.sweep is None and cfg.data.dataset == "mnist"
    assert cfg.model.hidden == [256] and cfg.model.activation == "relu"
    d = cfg.model.dropout
    assert (d.kind, d.p_input, d.p_hidden) == ("bernoulli", 0.0, 0.5)


def test_experiment_writes_json_and_both_plots(tmp_path):
    sets = ["data.dataset=spiral", "data.train_size=600", "model.hidden=[24]", "optim.epochs=3",
            "device=cpu"]
    out = tmp_path / "features"
    cmd = "dropout-lab beyond features configs/paper/fig8.yaml"
    result = features.experiment(ROOT / "configs/paper/fig8.yaml", out, sets, command=cmd)
    assert sorted(p.name for p in out.iterdir()) == ["features.json", "sparsity.png", "tiles.png"]  # no temp files
    assert json.loads((out / "features.json").read_text()) == result
    assert result["config"]["model"]["hidden"] == [24]
    ctrl, drop = result["models"]["no_dropout"], result["models"]["dropout"]
    assert ctrl["run_id"].startswith("nodrop-relu-24-s0") and drop["run_id"].startswith("bern-pi0-ph0.5-relu-24-s0")
    for m in (ctrl, drop):
        assert 0 <= m["test_error"] <= 1 and 0 <= m["train_error"] <= 1
        assert m["provenance"]["command"] == cmd and m["provenance"]["device"] == "cpu"
        assert len(m["unit_mean"]) == 24 and sum(m["hist_counts"]) == 24 * 3000  # all spiral test points
        assert np.mean(m["unit_mean"]) == pytest.approx(m["mean_activation"], abs=1e-5)
        assert 0 <= m["frac_dead_units"] <= m["frac_low_units"] <= 1 and 0 <= m["frac_zero"] <= 1
    assert len(result["hist_edges"]) == features.BINS + 1
    for name in ("sparsity.png", "tiles.png"):
        img = imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500
