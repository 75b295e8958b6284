"""The config contract: defaults, overrides, run ids, and one-line errors with exit 2."""

import pytest
import yaml

from dropout_lab.config import Config, ConfigError, load, to_yaml, validate

from conftest import ROOT, cli


def test_defaults_and_shipped_configs_validate():
    cfg = Config()
    assert cfg.model.dropout.p_hidden == 0.5 and cfg.optim.momentum_rule == "hinton"
    for path in (ROOT / "configs").glob("*.yaml"):
        load(path)


def test_yaml_round_trip_and_run_id_are_stable():
    cfg = load(ROOT / "configs" / "mnist.yaml", ["optim.epochs=3"])
    again = validate(yaml.safe_load(to_yaml(cfg)))
    assert again == cfg and again.run_id() == cfg.run_id()
    assert load(None, ["optim.lr=0.2"]).run_id() != load(None, ["optim.lr=0.3"]).run_id()
    assert load(None, ["name=a", "device=cpu"]).run_id() == load(None, ["name=b"]).run_id()


def test_control_drops_dropout_and_max_norm_and_is_shared_across_p():
    a = load(None, ["model.dropout.p_hidden=0.3"]).control()
    b = load(None, ["model.dropout.p_hidden=0.6", "optim.max_norm=4"]).control()
    assert not a.has_dropout and a.optim.max_norm is None
    assert a.run_id() == b.run_id()


def test_overrides_parse_yaml_values():
    cfg = load(None, ["model.hidden=[512, 256]", "optim.max_norm=null", "optim.lr=1e-2", "baseline=false"])
    assert cfg.model.hidden == [512, 256] and cfg.optim.max_norm is None
    assert cfg.optim.lr == 0.01 and cfg.baseline is False


def test_width_rule():
    assert load(None, ["model.width_rule=scaled", "model.hidden=[100]", "model.dropout.p_hidden=0.6"]).widths() == [250]


@pytest.mark.parametrize("overrides,needle", [
    (["model.hiden=[3]"], "unknown key 'model.hiden'"),
    (["optim.epochs=ten"], "optim.epochs"),
    (["optim.epochs=2.5"], "optim.epochs"),
    (["model.dropout.p_hidden=1.0"], "model.dropout.p_hidden"),
    (["model.hidden=[64, 0]"], "model.hidden"),
    (["data.dataset=cifar"], "data.dataset"),
    (["optim.lr"], "KEY=VALUE"),
    (["model.init=fan_middle"], "model.init"),
    (["optim.momentum_rule=nesterov"], "optim.momentum_rule"),
    (["optim.l1_after=-1"], "optim.l1_after"),
])
def test_bad_values_raise_one_line(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load(None, overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


BAD_INPUTS = [
    ("unknown key in the file", "name: x\noptim: {epoch: 3}\n", [], "optim.epoch"),
    ("unknown key in --set", None, ["--set", "model.activaton=relu"], "model.activaton"),
    ("wrong type", None, ["--set", "optim.batch_size=big"], "optim.batch_size"),
    ("p = 1", None, ["--set", "model.dropout.p_hidden=1"], "model.dropout.p_hidden"),
    ("p < 0", None, ["--set", "model.dropout.p_input=-0.2"], "model.dropout.p_input"),
    ("non-positive width", None, ["--set", "model.hidden=[128,-4]"], "model.hidden"),
    ("unknown dataset", None, ["--set", "data.dataset=imagenet"], "data.dataset"),
    ("malformed YAML", "model: {hidden: [1, 2\n", [], "malformed YAML"),
    ("missing file", "MISSING", [], "not found"),
    ("set without =", None, ["--set", "optim.lr"], "KEY=VALUE"),
    ("train subset too large", None, ["--set", "data.dataset=spiral", "--set", "data.train_size=5000"],
     "data.train_size"),
]


@pytest.mark.parametrize("what,text,args,needle", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, what, text, args, needle):
    config = tmp_path / "c.yaml"
    if text is None:
        config.write_text("name: bad\ndata: {dataset: spiral}\n")
    elif text != "MISSING":
        config.write_text(text)
    out = tmp_path / "results"
    r = cli("run", config, "--out", out, *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()
