"""Sweep plots on synthetic results folders: the numbers drawn, the axes they are drawn on, the files written."""

import csv
import json
import os

import numpy as np
import pytest
import yaml

from dropout_lab.config import load, to_yaml
from dropout_lab.plots import heatmap, plot, sweep_plot
from dropout_lab.store import sweep_index
from dropout_lab.store.readback import METRIC_COLUMNS

BASE = ["data.dataset=mnist", "model.hidden=[64,64]", "optim.epochs=3", "data.train_size=1000"]
INDEX_TAIL = ["seed", "dropout", "final_test_error", "best_test_error", "final_train_error", "final_max_norm_bound",
              "epochs_completed", "wall_seconds"]


def _value(cfg, key):
    node = cfg.model_dump(mode="json")
    for part in key.split("."):
        node = node[part]
    return node


def _cell(v):
    if v is None:
        return ""
    return json.dumps(v) if isinstance(v, list) else str(v)


def write_run(folder, cfg, test, train, status="completed"):
    """A run folder as the runner leaves it; returns its summary."""
    d = folder / cfg.run_id()
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(to_yaml(cfg))
    (d / "env.json").write_text(json.dumps({"device": "cpu"}))
    tests = [test + 0.1, test + 0.02, test]
    with open(d / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        w.writeheader()
        for e, t in enumerate(tests, 1):
            w.writerow({"epoch": e, "step": 10 * e, "lr": 0.1, "momentum": 0.5, "train_loss": 1.0 / e,
                        "train_error": train + 0.1 * (3 - e), "test_loss": 1.0 / e, "test_error": t,
                        "val_error": "", "seconds": e})
    summary = {"run_id": d.name, "status": status, "final_test_error": test, "best_test_error": min(tests),
               "final_train_error": train, "final_max_norm_bound": None, "epochs_completed": 3, "wall_seconds": 1.0,
               "dropout": cfg.has_dropout}
    (d / "summary.json").write_text(json.dumps(summary))
    return summary


def make_sweep(folder, keys, points, seeds=(0, 1), baseline=True, error=None, extra=()):
    """A sweep folder: a dropout run per point and seed, controls (shared where equal), index.csv and sweep.yaml.

    error(cfg) gives (test, train) error fractions; returns {run_id: (cfg, summary)} of all runs written.
    """
    error = error or (lambda cfg: (0.02 + 0.01 * cfg.seed, 0.01))
    runs = {}
    for point in points:
        for seed in seeds:
            overrides = [*BASE, f"seed={seed}", *(f"{k}={json.dumps(v)}" for k, v in zip(keys, point))]
            cfg = load(None, overrides).run_config()
            for c in [cfg, cfg.control()] if baseline else [cfg]:
                runs[c.run_id()] = (c, write_run(folder, c, *error(c)))
    rows = []
    for cfg, s in runs.values():
        rows.append({"run_id": s["run_id"], "status": s["status"], **{k: _cell(_value(cfg, k)) for k in keys},
                     "seed": cfg.seed, "dropout": cfg.has_dropout, **{k: s[k] for k in INDEX_TAIL[2:]}})
    rows += extra
    with open(folder / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["run_id", "status", *keys, *INDEX_TAIL])
        w.writeheader()
        w.writerows(rows)
    sweep = {"name": folder.name, "description": f"synthetic sweep of {', '.join(keys)}",
             "config": f"configs/{folder.name}.yaml", "keys": list(keys), "grid": {}, "zip": [],
             "seeds": list(seeds), "baseline": baseline, "runs": len(rows)}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    return runs


def p_error(cfg):
    """Test error with a minimum at retention 0.5, worse for the fixed width rule, noisy over seeds."""
    p = cfg.model.dropout.p_hidden
    if not cfg.has_dropout:
        return 0.03 + 0.004 * cfg.seed, 0.0
    return 0.015 + 0.02 * (p - 0.5) ** 2 + 0.003 * (cfg.model.width_rule == "fixed") + 0.002 * cfg.seed, 0.01 * p


@pytest.fixture
def p_sweep(tmp_path):
    folder = tmp_path / "fig9"
    folder.mkdir()
    pending = {"run_id": "pending", "status": "new", "model.dropout.p_hidden": "0.5", "model.width_rule": "fixed",
               "seed": 7, "dropout": True, "final_test_error": "", "best_test_error": "", "final_train_error": "",
               "epochs_completed": "", "wall_seconds": ""}
    failed = {**pending, "run_id": "broken", "status": "failed", "final_test_error": "0.9"}  # must not be averaged
    points = [(p, rule) for p in (0.2, 0.5, 0.8) for rule in ("fixed", "scaled")]
    runs = make_sweep(folder, ["model.dropout.p_hidden", "model.width_rule"], points, error=p_error,
                      extra=[pending, failed])
    return folder, runs


def test_p_sweep_plots_retention_and_seed_statistics(p_sweep):
    folder, runs = p_sweep
    series, axis = sweep_index.sweep_series(folder)  # default x: the drop probability
    assert axis.key == "model.dropout.p_hidden"
    assert "retaining a hidden unit" in axis.label and "1 - drop probability" in axis.label
    lines = [s for s in series if not s.control]
    assert [("fixed n" in s.label, "pn fixed" in s.label) for s in lines] == [(True, False), (False, True)]
    for s, rule in zip(lines, ("fixed", "scaled")):
        np.testing.assert_allclose(s.x, [0.2, 0.5, 0.8])  # retention 1-p of p = 0.8, 0.5, 0.2
        for x, mean, std, n in zip(s.x, s.mean, s.std, s.n):
            errs = [100 * summ["final_test_error"] for cfg, summ in runs.values() if cfg.has_dropout
                    and cfg.model.width_rule == rule and abs(1 - cfg.model.dropout.p_hidden - x) < 1e-9]
            assert n == len(errs) == 2
            assert mean == pytest.approx(np.mean(errs)) and std == pytest.approx(np.std(errs, ddof=1))
        assert "2 seeds" in s.label
    (control,) = [s for s in series if s.control]
    ctrl = [100 * summ["final_test_error"] for cfg, summ in runs.values() if not cfg.has_dropout]
    assert control.reference and len(ctrl) == 2  # one control for both width rules, not a point at retention 1
    assert control.mean[0] == pytest.approx(np.mean(ctrl)) and control.std[0] == pytest.approx(np.std(ctrl, ddof=1))
    assert "no dropout (control)" in control.label and "2 seeds" in control.label


def test_p_sweep_metrics_and_files(p_sweep, tmp_path):
    folder, runs = p_sweep
    train, _ = sweep_index.sweep_series(folder, y="train_error")
    expect = 100 * np.array([0.008, 0.005, 0.002])  # 0.01 * p at retention 0.2, 0.5, 0.8
    np.testing.assert_allclose(train[0].mean, expect)
    best, _ = sweep_index.sweep_series(folder, x="model.dropout.p_hidden", y="best_test_error")
    test, _ = sweep_index.sweep_series(folder)
    np.testing.assert_allclose(best[0].mean, test[0].mean)  # synthetic runs end at their best
    out = tmp_path / "out"
    paths = sweep_plot.plot_sweep(folder, out)
    assert [p.name for p in paths] == ["sweep_p_hidden.png", "sweep_p_hidden.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    one = sweep_plot.plot_sweep(folder, out, y="best_test_error")
    assert [p.name for p in one] == ["sweep_p_hidden_best_test_error.png", "sweep_p_hidden_best_test_error.svg"]
    sweep, rows = sweep_index.read_index(folder)
    note = sweep_plot.subtitle(folder, sweep, rows, sweep["keys"])
    assert note[0] == "synthetic sweep of model.dropout.p_hidden, model.width_rule (sweep of configs/fig9.yaml)"
    assert note[1] == "mnist 1,000 training examples, 3 epochs, cpu run, fp32"  # swept keys are on the axes
    assert note[2] == "2 of 16 runs not completed, not plotted: 1 new, 1 failed"
    first = sweep_index.run_dirs(folder)[0] / "config.yaml"  # a shrunk run says so, with the widths it trained
    cfg = {**yaml.safe_load(first.read_text()), "scale": "medium"}
    first.write_text(yaml.safe_dump(cfg))
    hidden = "-".join(map(str, cfg["model"]["hidden"]))
    assert sweep_plot.subtitle(folder, sweep, rows, sweep["keys"])[1] == (
        f"medium scale, {hidden} hidden units, mnist 1,000 training examples, 3 epochs, cpu run, fp32")
    assert heatmap.plot_heatmap(folder, out) == []  # width_rule is not numeric: no grid to draw


def test_unknown_x_or_y_is_a_one_line_error(p_sweep, tmp_path):
    folder, _ = p_sweep
    with pytest.raises(ValueError, match=r"unknown x='optim.lr'.*swept: model.dropout.p_hidden, model.width_rule"):
        plot.plot_folder(folder, x="optim.lr")
    with pytest.raises(ValueError, match=r"unknown metric y='val_error' \(allowed: test_error, train_error"):
        sweep_plot.plot_sweep(folder, tmp_path, y="val_error")
    assert not (folder / "plots").exists()  # checked before anything was drawn
    plain = tmp_path / "plain"
    plain.mkdir()
    write_run(plain, load(None, BASE), 0.02, 0.01)
    with pytest.raises(ValueError, match="not a sweep folder"):
        plot.plot_folder(plain, x="model.dropout.p_hidden")
    assert [p.name for p in plot.plot_folder(plain)] == ["curves.png", "curves.svg"]


def test_max_norm_sweep_puts_off_first(tmp_path):
    folder = tmp_path / "maxnorm"
    folder.mkdir()
    c_err = {None: 0.03, 2.0: 0.02, 3.5: 0.01}
    make_sweep(folder, ["optim.max_norm"], [(None,), (3.5,), (2.0,)],
               error=lambda cfg: ((c_err[cfg.optim.max_norm] if cfg.has_dropout else 0.04) + 0.001 * cfg.seed, 0.0))
    series, axis = sweep_index.sweep_series(folder)
    assert axis.key == "optim.max_norm" and axis.labels == ["off", "2", "3.5"]
    drop, control = series
    np.testing.assert_allclose(drop.x, [0, 1, 2])
    np.testing.assert_allclose(drop.mean, [3.05, 2.05, 1.05])
    assert control.reference and control.mean[0] == pytest.approx(4.05)  # a control has no c of its own
    paths = sweep_plot.plot_sweep(folder, tmp_path / "out")
    assert [p.name for p in paths] == ["sweep_max_norm.png", "sweep_max_norm.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_train_size_sweep_is_log_scale_with_control_line(tmp_path):
    folder = tmp_path / "fig10"
    folder.mkdir()
    make_sweep(folder, ["data.train_size"], [(100,), (1000,), (10000,)],
               error=lambda cfg: ((0.5 if cfg.has_dropout else 0.6) / cfg.data.train_size ** 0.5, 0.0))
    series, axis = sweep_index.sweep_series(folder)
    assert axis.log and axis.label == "training set size (examples, log scale)"
    drop, control = series
    assert not control.reference and control.control
    np.testing.assert_allclose(control.x, [100, 1000, 10000])
    np.testing.assert_allclose(drop.mean, 50 / np.sqrt([100, 1000, 10000]))
    np.testing.assert_allclose(control.mean, 60 / np.sqrt([100, 1000, 10000]))
    np.testing.assert_allclose(drop.std, 0)
    paths = sweep_plot.plot_sweep(folder, tmp_path / "out")
    assert [p.name for p in paths] == ["sweep_train_size.png", "sweep_train_size.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)


def grid_error(cfg):
    o = cfg.optim
    if not cfg.has_dropout:
        return 0.5, 0.0  # controls would dominate every cell if they were averaged in
    return 0.01 + 0.1 * (o.momentum_end - 0.9) + 0.05 * (1 - o.lr_decay) + 0.001 * cfg.seed \
        + 0.005 * (cfg.model.activation == "tanh"), 0.0


def test_heatmap_of_two_numeric_keys_with_a_panel_per_third(tmp_path):
    folder = tmp_path / "grid"
    folder.mkdir()
    keys = ["optim.momentum_end", "optim.lr_decay", "model.activation"]
    points = [(m, d, a) for m in (0.9, 0.95, 0.99) for d in (0.9, 0.98) for a in ("relu", "tanh")]
    make_sweep(folder, keys, points, error=grid_error)
    data = heatmap.heatmap_data(folder)
    assert data.keys == ("optim.momentum_end", "optim.lr_decay")
    assert data.labels == (["0.9", "0.95", "0.99"], ["0.9", "0.98"])
    assert [title for title, *_ in data.panels] == ["activation relu", "activation tanh"]
    _, mean, std, n = data.panels[1]
    assert mean.shape == (2, 3) and (n == 2).all()
    for i, d in enumerate((0.9, 0.98)):
        for j, m in enumerate((0.9, 0.95, 0.99)):
            errs = [100 * (0.01 + 0.1 * (m - 0.9) + 0.05 * (1 - d) + 0.001 * s + 0.005) for s in (0, 1)]
            assert mean[i, j] == pytest.approx(np.mean(errs)) and std[i, j] == pytest.approx(np.std(errs, ddof=1))
    with pytest.raises(ValueError, match="unknown x='optim.lr'"):
        heatmap.heatmap_data(folder, keys=["optim.lr", "optim.lr_decay"])
    paths = plot.plot_folder(folder)
    names = [p.name for p in paths]
    assert names == ["curves.png", "curves.svg", "sweep_momentum_end.png", "sweep_momentum_end.svg",
                     "heatmap_momentum_end_lr_decay.png", "heatmap_momentum_end_lr_decay.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_many_curves_get_a_compact_legend(tmp_path):
    folder = tmp_path / "wide"
    folder.mkdir()
    points = [(p, rule) for p in (0.1, 0.3, 0.5, 0.7, 0.9) for rule in ("fixed", "scaled")]
    make_sweep(folder, ["model.dropout.p_hidden", "model.width_rule"], points, error=p_error)
    groups = plot._groups(folder)
    assert len(groups) == 11  # 10 dropout lines and their shared control
    cfgs = [members[0][0] for members in groups.values()]
    styles, handles = plot._family(folder, cfgs)
    labels = [h.get_label() for h in handles]
    assert labels == ["retain hidden 0.1", "retain hidden 0.3", "retain hidden 0.5", "retain hidden 0.7",
                      "retain hidden 0.9", "fixed n (Fig. 9a)", "pn fixed: n scaled by 1/p (Fig. 9b)",
                      "no dropout (control)"]
    by_p = {}
    for cfg, (color, ls) in zip(cfgs, styles):
        if cfg["model"]["dropout"]["kind"] == "none":
            assert ls == "--"
            continue
        by_p.setdefault(cfg["model"]["dropout"]["p_hidden"], set()).add(tuple(color))
        assert ls == ("-" if cfg["model"]["width_rule"] == "fixed" else "-.")
    assert all(len(c) == 1 for c in by_p.values()) and len({c.pop() for c in by_p.values()}) == 5
    paths = plot.plot_curves(folder, tmp_path / "out")
    assert all(p.stat().st_size > 1000 for p in paths)


def test_stale_until_plotted_and_again_after_a_run_changes(p_sweep):
    folder, _ = p_sweep
    assert plot.stale(folder)
    plot.plot_folder(folder)
    assert not plot.stale(folder)
    summary = next(folder.glob("*/summary.json"))
    os.utime(summary, ns=(1, 1))  # a copy or a checkout reorders times: the bytes decide, not the clock
    assert not plot.stale(folder)
    summary.write_text(summary.read_text().replace('"status"', '"status" '))  # same time, other bytes
    os.utime(summary, ns=(1, 1))
    assert plot.stale(folder)
    plot.plot_folder(folder)
    assert not plot.stale(folder)
    (folder / "plots" / "sweep_p_hidden.png").unlink()
    assert plot.stale(folder)  # a missing plot is stale whatever its inputs
    plot.plot_folder(folder)
    (folder / "plots" / "inputs.json").write_text("{")  # a damaged record: redraw rather than trust it
    assert plot.stale(folder)


def test_curve_bands_are_the_sample_std_over_seeds():
    """Curves, sweep plots, the sweep table and the report all give the same spread: ddof 1, 0 for one seed."""
    runs = [[{"epoch": e, "test_error": err} for e, err in zip((1, 2, 3), errs)]
            for errs in ((0.10, 0.05, 0.04), (0.12, 0.06, 0.02), (0.11, 0.04))]  # the last stopped early
    x, mean, std = plot._mean_band(runs, "test_error")
    np.testing.assert_array_equal(x, [1, 2])
    np.testing.assert_allclose(mean, [11.0, 5.0])
    np.testing.assert_allclose(std, [1.0, 1.0])  # population std would give 0.816
    assert list(plot._mean_band(runs[:1], "test_error")[2]) == [0.0, 0.0, 0.0]


def test_sweep_plots_go_log_when_the_errors_span_a_factor_of_5():
    """Retention 0.1 (13%) next to 0.5 (1.8%) would squash the flat part of Figure 9a on a linear axis."""
    import matplotlib.pyplot as plt

    def axis(*means, std=0.1):
        ax = plt.figure().add_subplot()
        s = sweep_index.Series("s", np.arange(len(means), dtype=float), np.array(means), np.full(len(means), std),
                              np.full(len(means), 3))
        sweep_plot._draw_series(ax, [s])
        sweep_plot._style_y(ax, [s])
        plt.close(ax.figure)
        return ax
    assert axis(13.2, 1.8, 2.0).get_yscale() == "log"
    assert axis(8.0, 2.0, 1.8).get_yscale() == "linear" and axis(3.0, 2.0, std=4).get_ylim()[0] == 0
    assert axis(31.0, 0.0, 1.5).get_yscale() == "symlog"  # a train error of 0 stays on the plot
    ax = axis(13.2, 1.8)
    assert "log scale" in ax.get_ylabel() and ax.get_ylim()[0] > 1 and 1.5 in ax.get_yticks()


def test_a_zipped_key_that_pools_rows_is_not_the_default_x(tmp_path):
    """Table 2 zips its rows: c = 2 on three of them. Plotted against c they would pool into one point."""
    folder = tmp_path / "table2"
    folder.mkdir()
    rows = [("a", None, [16]), ("b", 2.0, [16]), ("c", 2.0, [8])]
    err = {"a": 0.03, "b": 0.02, "c": 0.01}
    keys = ["label", "optim.max_norm", "model.hidden"]
    make_sweep(folder, keys, rows, error=lambda cfg: (err[cfg.label] + 0.001 * cfg.seed, 0.0))
    sweep = yaml.safe_load((folder / "sweep.yaml").read_text())
    sweep["zip"] = [{k: [r[i] for r in rows] for i, k in enumerate(keys)}]
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    series, axis = sweep_index.sweep_series(folder)
    assert axis.key == "label" and axis.labels == ["a", "b", "c"]
    (drop, _control) = series
    np.testing.assert_allclose(drop.mean, [3.05, 2.05, 1.05])
    np.testing.assert_array_equal(drop.n, [2, 2, 2])
    by_c, _ = sweep_index.sweep_series(folder, x="optim.max_norm")  # still there when asked for
    assert list(by_c[0].n) == [2, 4]
