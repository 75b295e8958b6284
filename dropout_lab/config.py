"""The one config schema: every default, its unit and its meaning, plus loading and `--set` overrides.

Convention: `p` is always the *drop* probability. The paper writes p for the *retention* probability,
so the paper's p is our 1 - p.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """Bad input: the message is one line naming the key, the value and what is allowed."""


class _Strict(BaseModel):
    # strict: a string is not silently a number; extra='forbid': a typo is an error, not a default;
    # allow_inf_nan=False: no key gives infinity a meaning, and `lr: .inf` (or 1e400) would only diverge
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, allow_inf_nan=False)


MAX_P = 0.999  # the largest drop probability a config may ask for (the paper's smallest retention is 0.1)


class DropoutConfig(_Strict):
    kind: Literal["none", "bernoulli", "gaussian"] = "bernoulli"  # gaussian: r ~ N(1, p/(1-p)), paper section 10
    p_input: float = 0.2  # drop probability of input pixels (paper: retention 0.8)
    p_hidden: float = 0.5  # drop probability of hidden units (paper: retention 0.5)
    # inverted: scale kept units by 1/(1-p) in training, identity at test.
    # weight: keep units unscaled in training, multiply by (1-p) at test (the paper's original rule).
    # Gaussian noise has mean 1 and needs no test-time scaling, so it ignores this key.
    scaling: Literal["inverted", "weight"] = "inverted"

    @field_validator("p_input", "p_hidden")
    @classmethod
    def _drop_probability(cls, p: float) -> float:
        if not 0.0 <= p < 1.0:
            raise ValueError("must be in [0, 1): p is the drop probability (the paper's retention is 1-p)")
        if p > MAX_P:  # accepted, it would train a net that sees nothing and end "diverged"
            raise ValueError(f"must be at most {MAX_P}: a larger p keeps fewer than 1 unit in 1,000, which no net "
                             "learns from (and the 16-bit masks keep at least 1 in 65,536 whatever p is)")
        return p


class ModelConfig(_Strict):
    hidden: list[int] = Field(default_factory=lambda: [1024, 1024])  # hidden widths, input to output
    activation: Literal["relu", "logistic", "tanh"] = "relu"  # the hidden units' nonlinearity
    # fixed: n units per hidden layer; scaled: round(n / (1 - p_hidden)), the paper's rule that a
    # dropout net needs n/(1-p) units to keep n of them on average (section 7.3, Figure 9b).
    width_rule: Literal["fixed", "scaled"] = "fixed"
    # How a layer's weights are drawn (biases start at 0), each layer W ~ N(0, std^2) with
    #   normal:  std = init_std;
    #   fan_in:  std = init_std / sqrt(n_in), the layer's fan-in;
    #   fan_out: std = init_std / sqrt(n_out). This is what deepnet's DENSE_GAUSSIAN_SQRT_FAN_IN computes
    #            for a dense layer: parameter.py divides sigma by sqrt(dimensions[1]), and an edge's
    #            dimensions are [n_in, n_out] (edge.py), so the width it divides by is the layer's output.
    init: Literal["normal", "fan_in", "fan_out"] = "normal"
    # the std (normal) or the gain sigma (fan_in, fan_out); null = He init sqrt(2/fan_in) for relu,
    # sqrt(1/fan_in) otherwise, whatever `init` says
    init_std: float | None = 0.01
    # the first layer's std or sigma; null = init_std. deepnet's example model (examples/ff/
    # model_dropout.pbtxt) gives its first edge no sigma, so the proto default 0.001 applies there
    init_std_first: float | None = None
    dropout: DropoutConfig = Field(default_factory=DropoutConfig)

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, hidden: list[int]) -> list[int]:
        if not hidden:
            raise ValueError("needs at least one hidden layer")
        for n in hidden:
            if n <= 0:
                raise ValueError(f"widths must be positive integers, got {n}")
        return hidden

    @field_validator("init_std", "init_std_first")
    @classmethod
    def _positive_std(cls, s: float | None) -> float | None:
        if s is not None and s <= 0:
            raise ValueError("must be > 0, or null (init_std: He init; init_std_first: the same as init_std)")
        return s


class DataConfig(_Strict):
    dataset: Literal["mnist", "spiral"] = "mnist"  # MNIST (verified by checksum), or a 2-D spiral for tests
    # examples trained on: a stratified random subset of the training set, drawn from the run's seed
    # (paper Figure 10); null = all of it (60,000 for MNIST, less validation_size)
    train_size: int | None = Field(default=None, gt=0)
    validation_size: int = Field(default=0, ge=0)  # examples held out of training for val_error


def _max_norm_c(c: float | None) -> float | None:
    """max_norm's one rule, in every schema that has the key."""
    if c is not None and c <= 0:
        raise ValueError("must be > 0, or null for no max-norm constraint")
    return c


class OptimConfig(_Strict):
    name: Literal["sgd", "adam"] = "sgd"  # the optimiser
    epochs: int = Field(default=20, gt=0)  # passes over the training set
    batch_size: int = Field(default=100, gt=0)  # examples per weight update
    lr: float = Field(default=0.1, gt=0)  # epsilon_0
    # constant: eps_0; exponential: eps_0 * lr_decay^epoch; inverse_t: eps_0 / (1 + step/lr_half_life)
    lr_schedule: Literal["constant", "exponential", "inverse_t"] = "exponential"
    lr_decay: float = Field(default=0.998, gt=0, le=1)  # per-epoch factor of `exponential`
    lr_half_life: float = Field(default=10_000, gt=0)  # steps at which `inverse_t` halves the lr
    # momentum goes from start to end over momentum_ramp_epochs T (epochs; fractional allowed), by
    #   linear:      m = start + (end - start) * min(t / T, 1)      (the 2012 arXiv paper, Appendix A.2)
    #   exponential: m = end - (end - start) * exp(-t / T)          (deepnet parameter.py,
    #                GetMomentumAndEpsilon: T is its momentum_change_steps, here in epochs)
    # with t the epochs done before the update; T = 0 means m = end from the first update
    momentum_start: float = Field(default=0.5, ge=0, lt=1)
    momentum_end: float = Field(default=0.99, ge=0, lt=1)  # the final momentum (see momentum_start)
    momentum_ramp_epochs: float = Field(default=500, ge=0)  # T, in epochs (see momentum_start)
    momentum_schedule: Literal["linear", "exponential"] = "linear"  # the approach (see momentum_start)
    # hinton:    dw <- m*dw - (1-m)*lr*g;  w <- w + dw  (the 2012 arXiv rule; steady-state step lr*g)
    # classical: dw <- m*dw - lr*g;        w <- w + dw  (steady-state step lr*g/(1-m))
    # deepnet:   D  <- m*D + g;            w <- w - lr*D (the authors' code, deepnet parameter.py Update:
    #            lr multiplies the whole accumulated D, so a decaying lr shrinks old gradients too)
    # g is the batch-mean gradient plus weight_decay*w and l1*sign(w); max-norm follows the update.
    momentum_rule: Literal["hinton", "classical", "deepnet"] = "hinton"
    # c: after every update each unit's incoming weight vector is rescaled to L2 norm <= c; null = off
    max_norm: float | None = 3.5
    weight_decay: float = Field(default=0.0, ge=0)  # L2 coefficient on weights (not biases)
    l1: float = Field(default=0.0, ge=0)  # L1 coefficient on weights (not biases): adds l1 * sign(w) to the gradient
    # updates done before L1 switches on (paper Table 9: "L2 + L1 applied towards the end of training").
    # deepnet's apply_l1decay_after = A applies L1 on steps t > A (t from 0), which is l1_after = A + 1 here
    l1_after: int = Field(default=0, ge=0)
    # sparsity penalty on each hidden unit's batch-mean activation rho_hat (paper Table 9), weighted by
    # kl_sparsity (0 = off). Logistic units: KL(kl_target || rho_hat). Other units, whose mean is not a
    # probability: (rho_hat - kl_target)^2 / 2, whose gradient rho_hat - kl_target is the one deepnet
    # uses for every unit type but logistic (layer.py GetSparsityGradient with GetSparsityDivisor = 1)
    kl_sparsity: float = Field(default=0.0, ge=0)
    kl_target: float = Field(default=0.05, gt=0, lt=1)  # rho: the wanted mean activation of a hidden unit
    adam_beta1: float = Field(default=0.9, ge=0, lt=1)  # used only by name: adam
    adam_beta2: float = Field(default=0.999, ge=0, lt=1)  # Adam's second-moment decay
    adam_eps: float = Field(default=1e-8, gt=0)  # Adam's epsilon

    _positive_c = field_validator("max_norm")(_max_norm_c)


class EvalConfig(_Strict):
    # epochs between test (and validation) passes; the last epoch always has one. Other epochs' rows
    # keep their training numbers and leave the test columns empty (nan)
    every: int = Field(default=1, gt=0)
    # after training: test error of the Monte-Carlo average of k thinned nets' predictions, for each k
    # here (paper Figure 11), next to weight scaling; [] = off
    mc_samples: list[int] = Field(default_factory=list)
    mc_repeats: int = Field(default=10, gt=0)  # independent repeats of each k, for its mean ± std

    @field_validator("mc_samples")
    @classmethod
    def _positive_k(cls, ks: list[int]) -> list[int]:
        if any(k <= 0 for k in ks):
            raise ValueError("every k must be a positive number of sampled nets")
        return sorted(set(ks))


class SweepConfig(_Strict):
    """What to sweep. Expanded by sweep.expand(); every expanded point is validated as a Config."""

    description: str = ""  # one line, listed by `dropout-lab sweep` with no argument
    grid: dict[str, list[Any]] = Field(default_factory=dict)  # dotted key -> values; Cartesian product
    zip: list[dict[str, list[Any]]] = Field(default_factory=list)  # each: keys whose values advance together
    seeds: list[int] | None = None  # repeats of every point, for mean ± std; null = the config's seed


# folder names the project writes into results/ itself: a config of that name would write into them
RESERVED_NAMES = ("report", "bench", "beyond")
SCALE_SUFFIXES = ("-quick", "-medium")  # <name>-quick, <name>-medium: a shrunk sweep's folder (scale.py)


class Config(_Strict):
    # results go to <out>/<name>/; a config file without one is named after the file (configs/foo.yaml: foo)
    name: str = "mnist"
    seed: int = Field(default=0, ge=0)  # init, data order, subset and dropout masks all derive from it
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda if available, else cpu
    # arithmetic of the training GEMMs (step.py): fp32; bf16 operands and products with fp32 weights,
    # optimiser state, update and loss; tf32 (CUDA only). Evaluation is fp32 in every case
    precision: Literal["fp32", "bf16", "tf32"] = "fp32"
    baseline: bool = True  # also train the no-dropout control (dropout off, max-norm off)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    # full: as configured; quick | medium: every run shrunk by the stated factors of scale.py (labelled,
    # never mixed with another scale)
    scale: Literal["full", "quick", "medium"] = "full"
    label: str = ""  # the run's row in a paper table (report.py); a name, not part of what is trained
    # a running stack saves model, optimiser and RNG state at most this often (seconds of wall time),
    # so a killed run loses at most this much work; 0 = after every step (tests)
    checkpoint_seconds: float = Field(default=60.0, ge=0)
    sweep: SweepConfig | None = None  # used by `dropout-lab sweep`; a run's own config has none

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError("must be a folder name: ASCII letters a-z and A-Z, digits, '_', '.', '-', "
                             "starting with a letter or digit")
        if name.lower() in RESERVED_NAMES or name.lower().endswith(".md"):
            raise ValueError(f"is reserved: results/ holds the project's own {', '.join(RESERVED_NAMES)} folders "
                             "and REPORT.md; choose another name")
        return name

    # ----- derived facts, kept here so every module agrees on them -----
    @property
    def has_dropout(self) -> bool:
        d = self.model.dropout
        return d.kind != "none" and (d.p_input > 0 or d.p_hidden > 0)

    def widths(self) -> list[int]:
        """Hidden widths after the width rule."""
        if self.model.width_rule == "fixed":
            return list(self.model.hidden)
        keep = 1.0 - self.model.dropout.p_hidden
        return [max(1, round(n / keep)) for n in self.model.hidden]

    def control(self) -> Config:
        """The no-dropout control: dropout and max-norm dropped, everything else shared."""
        c = self.model_copy(deep=True)
        c.model.dropout = DropoutConfig(kind="none", p_input=0.0, p_hidden=0.0)
        c.optim.max_norm = None
        if c.model.width_rule == "scaled":  # n/(1-0) = n: one control for either rule
            c.model.width_rule = "fixed"
        c.baseline = False
        c.sweep = None
        return c

    def run_config(self) -> Config:
        """The config of the dropout run itself (a run is one model; its control is another run)."""
        c = self.model_copy(deep=True)
        c.baseline = False
        c.sweep = None
        if c.model.dropout.kind == "none":  # all 'no dropout' spellings share one resolved form
            c.model.dropout = DropoutConfig(kind="none", p_input=0.0, p_hidden=0.0)
        return c

    def run_id(self) -> str:
        """Readable slug + 8 hex digits of the resolved config, so a config always maps to one folder.

        name, device, checkpoint_seconds, sweep and label are left out of the hash: they say where, on
        what and how, not what is trained. Keys added after results were first published are left out
        while at their defaults, so those results keep their ids and still resume.
        """
        d = self.model_dump(mode="json", exclude={"name", "device", "checkpoint_seconds", "sweep", "label"})
        for path, default in _LATER_KEYS.items():
            *parents, leaf = path.split(".")
            node = d
            for part in parents:
                node = node[part]
            if node[leaf] == default:
                del node[leaf]
        digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
        drop = self.model.dropout
        if self.has_dropout:
            tag = f"{drop.kind[:4]}-pi{drop.p_input:g}-ph{drop.p_hidden:g}"
        else:
            tag = "nodrop"
        shape = "x".join(str(n) for n in self.widths())
        precision = "" if self.precision == "fp32" else f"-{self.precision}"
        return f"{tag}-{self.model.activation}-{shape}{precision}-s{self.seed}-{digest}"


_LATER_KEYS = {"precision": "fp32", "scale": "full", "optim.l1": 0.0, "optim.kl_sparsity": 0.0, "optim.kl_target": 0.05,
               "eval": EvalConfig().model_dump(mode="json"), "optim.l1_after": 0,
               "optim.momentum_schedule": "linear", "model.init": "normal", "model.init_std_first": None}


# ----------------------------------------------------------------------------------------------
# loading, overrides and one-line errors


CONV_VARIANTS = ("none", "fc", "conv_element", "conv_channel")


class ConvNetConfig(_Strict):
    # 5x5 convolutions with padding 2, each followed by ReLU and 2x2 max-pooling, then one fully connected
    # ReLU layer and the softmax: deepnet's MNIST conv net (examples/convnet/model_conv.pbtxt: 5x5 filters,
    # padding 2, max-pooling, a 1024-unit layer), narrowed to fit a 2-core CPU
    channels: list[int] = Field(default_factory=lambda: [16, 32])  # feature maps of each conv layer
    hidden: int = Field(default=256, gt=0)  # units of the fully connected layer


class ConvConfig(_Strict):
    """`dropout-lab beyond conv`: does dropout help on convolutional layers (beyond.conv)."""

    name: str = "conv"  # results go to results/beyond/<name>/ (unless --out)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])  # each variant and size once per seed
    train_sizes: list[int] = Field(default_factory=lambda: [1000, 5000])  # stratified MNIST subsets
    # none: no dropout; fc: on the fully connected layer only; conv_element: also on every conv layer's
    # output, unit by unit; conv_channel: also on every conv layer's output, whole feature maps (spatial
    # dropout, Tompson et al. 2015), at the same retention
    variants: list[Literal["none", "fc", "conv_element", "conv_channel"]] = Field(
        default_factory=lambda: list(CONV_VARIANTS))
    net: ConvNetConfig = Field(default_factory=ConvNetConfig)
    conv_keep: list[float] = Field(default_factory=lambda: [0.9, 0.75])  # retention after each conv layer
    fc_keep: float = Field(default=0.5, gt=0, le=1)  # retention of the fully connected layer's units
    updates: int = Field(default=3000, gt=0)  # weight updates per run, whatever the training set's size
    batch_size: int = Field(default=100, gt=0)  # examples per weight update
    lr: float = Field(default=0.01, gt=0)  # eps of the deepnet rule D <- m D + g, w <- w - eps D
    momentum: float = Field(default=0.9, ge=0, lt=1)  # m of the deepnet rule, constant
    max_norm: float | None = 4.0  # c on every unit's incoming weights (a conv filter is one unit); null: off
    eval_every: int = Field(default=500, gt=0)  # updates between test passes (and one at the end)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda if available, else cpu

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return Config._folder_name(name)

    @field_validator("seeds", "train_sizes", "variants")
    @classmethod
    def _distinct(cls, values: list) -> list:
        if not values:
            raise ValueError("must name at least one")
        if len(set(values)) != len(values):
            raise ValueError("must not repeat a value: a repeated run would be trained twice and counted twice")
        return values

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if min(seeds) < 0:
            raise ValueError("must be >= 0")
        return seeds

    @field_validator("train_sizes")
    @classmethod
    def _sizes(cls, sizes: list[int]) -> list[int]:
        if min(sizes) < 10 or max(sizes) > 60_000:
            raise ValueError("must be from 10 (one image of each class) to 60,000 (all of MNIST's training set)")
        return sizes

    @field_validator("conv_keep")
    @classmethod
    def _keeps(cls, keeps: list[float]) -> list[float]:
        if any(not 0 < k <= 1 for k in keeps):
            raise ValueError("must be in (0, 1]: the probability of keeping a unit")
        return keeps

    _positive_c = field_validator("max_norm")(_max_norm_c)

    def model_post_init(self, _context) -> None:
        if len(self.conv_keep) != len(self.net.channels):
            raise ValueError(f"conv_keep = {self.conv_keep}: {len(self.conv_keep)} retention(s) for "
                             f"{len(self.net.channels)} conv layers (net.channels): give one per conv layer")
        if any(c <= 0 for c in self.net.channels):
            raise ValueError(f"net.channels = {self.net.channels}: every layer needs at least 1 feature map")
        if len(self.net.channels) > 4:
            raise ValueError(f"net.channels = {self.net.channels}: at most 4 conv layers (each halves the "
                             "28x28 image; a fifth would pool 1x1 maps)")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-3` as a string (its floats need a dot); a config author means a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                 |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                 |[-+]?\.(?:inf|Inf|INF)
                 |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


class Refused(yaml.MarkedYAMLError):
    """YAML that parses but is refused before it is built: its `problem` is the one line the user gets."""


class DuplicateKey(Refused):
    """A mapping that gives one key twice: YAML keeps the last silently, and the first is lost."""


MAX_YAML_BYTES = 1 << 20  # a config is a page of keys; a megabyte is not one
MAX_YAML_DEPTH = 32  # the schema nests 3 deep; recursion in the checks below is bounded by this


def _bounded(text: str) -> None:
    """Refuse, from the event stream and before anything is built, what would expand or recurse without bound:
    aliases (a self-referencing one recurses forever, nested ones double at every level) and deep nesting."""
    if len(text) > MAX_YAML_BYTES:
        raise Refused(problem=f"{len(text):,} characters: a config is at most {MAX_YAML_BYTES:,}")
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):  # noqa: S506 (a SafeLoader subclass)
        if isinstance(event, yaml.AliasEvent):
            raise Refused(problem=f"an alias (*{event.anchor}) at line {event.start_mark.line + 1}: aliases are "
                                  "not allowed in a config (they can expand without bound); write the values out",
                          problem_mark=event.start_mark)
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise Refused(problem=f"nested more than {MAX_YAML_DEPTH} levels deep at line "
                                      f"{event.start_mark.line + 1}", problem_mark=event.start_mark)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _unique_keys(node, path: tuple = ()) -> None:
    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark)
            if key in first:
                dotted = ".".join((*path, key))
                raise DuplicateKey(problem=f"key '{dotted}' is given twice (lines {first[key] + 1} and "
                                           f"{k.start_mark.line + 1}), and the second would replace the first",
                                   problem_mark=k.start_mark)
            first[key] = k.start_mark.line
            _unique_keys(v, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _unique_keys(v, (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",))


def yaml_load(text: str):
    _bounded(text)
    _unique_keys(yaml.compose(text, Loader=_Loader))  # noqa: S506 (a SafeLoader subclass)
    return yaml.load(text, Loader=_Loader)  # noqa: S506


def _format_error(err: ValidationError, allowed_of) -> str:
    e = err.errors()[0]
    loc = [str(x) for x in e["loc"]]
    key = ".".join(loc)
    key = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)  # model.hidden.0 -> model.hidden[0]
    value = e.get("input")
    if e["type"] == "extra_forbidden":
        return f"unknown key '{key}' (allowed here: {', '.join(allowed_of(loc[:-1]))})"
    if e["type"] == "missing":
        return f"missing key '{key}'"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "model_type":
        msg = "must be a section of keys"
    if e["type"] == "literal_error":
        msg = "allowed: " + e["msg"].removeprefix("Input should be ").replace("'", "")
    if e["type"] == "finite_number":  # .inf, .nan, or a number past float range such as 1e400
        msg = "must be a finite number"
    shown = repr(value) if isinstance(value, float) else json.dumps(value, default=str, ensure_ascii=False)
    return f"{key} = {shown}: {msg}"


def _allowed_keys(path: list[str], model: type[BaseModel] = Config) -> list[str]:
    for part in path:
        ann = model.model_fields[part].annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def validate(raw: Any) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping of keys to values, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, _allowed_keys)) from None


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.epochs=3' -> ('optim.epochs', 3); the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set '{text}': expected KEY=VALUE, e.g. --set optim.epochs=3")
    try:
        return key, yaml_load(value)
    except Refused as e:
        raise ConfigError(f"--set {key} = {value[:60]!r}: {e.problem}") from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"--set {key} = {value!r}: not valid YAML ({first})") from None


def apply_override(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"--set {key}: '{where}' is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def read_yaml(path: str | Path) -> dict:
    """A config file's mapping, with `name` (when it gives none) taken from the file's name."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file '{path}' is a folder; give a YAML file, e.g. configs/mnist.yaml")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found")
    try:
        raw = yaml_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file '{path}': not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                          f"{e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"config file '{path}': cannot be read ({e.strerror})") from None
    except Refused as e:
        raise ConfigError(f"config file '{path}': {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file '{path}': malformed YAML{where}: {problem}") from None
    if raw is None:  # all defaults would train the default net into results/mnist/: say what is wanted
        raise ConfigError(f"config file '{path}' is empty: give at least the keys to change "
                          "(configs/mnist.yaml is an example)")
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}': expected a mapping of keys, got {type(raw).__name__}")
    if "name" not in raw:  # unrelated configs must not share the default's folder (see guard.py)
        try:
            Config._folder_name(path.stem)
        except ValueError as e:
            raise ConfigError(f"config file '{path}' gives no name:, and its file name '{path.stem}' cannot be "
                              f"the results folder's: it {e}; add name: to the file") from None
        raw["name"] = path.stem
    return raw


def load_conv(path: str | Path, overrides: list[str] = ()) -> ConvConfig:
    """A `beyond conv` config (ConvConfig), read, overridden and refused as load() does a run config."""
    raw = copy.deepcopy(read_yaml(path))
    for text in overrides:
        apply_override(raw, *parse_override(text))
    try:
        return ConvConfig.model_validate(raw)
    except ValidationError as err:
        if err.errors()[0]["type"] == "value_error" and not err.errors()[0]["loc"]:  # model_post_init's own line
            raise ConfigError(err.errors()[0]["msg"].removeprefix("Value error, ")) from None
        raise ConfigError(_format_error(err, lambda loc: _allowed_keys(loc, ConvConfig))) from None


def load(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or the defaults when path is None), apply `--set` overrides, validate."""
    raw = read_yaml(path) if path is not None else {}
    raw = copy.deepcopy(raw)
    for text in overrides:
        apply_override(raw, *parse_override(text))
    return validate(raw)


def to_yaml(cfg: BaseModel) -> str:
    """A resolved config (a run's Config, or a ConvConfig) as YAML, every default written out."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
