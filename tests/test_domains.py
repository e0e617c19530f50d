"""Hyperparameter and option domains (autovi_core.domains, autovi_core.options), the declaration on
Detector, ``autovi describe``, the generated README tables, and the refusals of ``autovi run``."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_runner import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.describe import TABLE_BEGIN, TABLE_END, describe, markdown_table, sync_readme
from autovi_core.domains import (
    AnyJSON,
    Bool,
    Choice,
    DomainError,
    Float,
    Int,
    ListOf,
    OneOf,
    Optional,
    Param,
    Pattern,
    Text,
    domain_from_profiles,
)
from autovi_core.errors import CombinationError, ConfigError, DataError
from autovi_core.layer_preset import FEATURE_LAYERS, check_backbone_layers, layer_stride
from autovi_core.options import EVALUATE, REPORT, RUN, check_options

REPO = Path(__file__).resolve().parents[1]
PROPERTY = settings(max_examples=40, deadline=None, database=None)

DOMAINS = [
    Int(),
    Int(1),
    Int(0, 10),
    Int(8, multiple_of=8),
    Int(1, odd=True),
    Int(-5, 5, multiple_of=3, odd=True),
    Float(),
    Float(0.0),
    Float(0.0, 1.0, low_open=True),
    Float(0.0, 1.0, low_open=True, high_open=True),
    Bool(),
    Choice("l1", "l2"),
    Text(),
    Pattern(r"cuda(:[0-9]+)?", "cuda or cuda:N"),
    Optional(Int(1), none_means="all"),
    ListOf(Text(), 1, 3),
    ListOf(Float(0.0), 0),
    ListOf(Int(0), 3, 3),
    OneOf(Text(), ListOf(Text())),
    AnyJSON(),
]
IDS = [d.describe() for d in DOMAINS]


@pytest.mark.parametrize("domain", DOMAINS, ids=IDS)
@PROPERTY
@given(data=st.data())
def test_values_drawn_inside_a_domain_pass_and_keep_their_value(domain: Any, data: Any) -> None:
    value = data.draw(domain.valid([3, 7]))
    checked = domain.check(value)
    assert domain.check(checked) == checked  # idempotent
    if not isinstance(value, (list, tuple, float)):
        assert checked == value


@pytest.mark.parametrize("domain", DOMAINS, ids=IDS)
@PROPERTY
@given(data=st.data())
def test_values_drawn_outside_a_domain_are_refused_with_its_description(domain: Any, data: Any) -> None:
    value = data.draw(domain.invalid())
    with pytest.raises(DomainError) as info:
        domain.check(value)
    assert "expects" in str(info.value) and "\n" not in str(info.value)


PARSED = [d for d in DOMAINS if not isinstance(d, AnyJSON)]


@pytest.mark.parametrize("domain", PARSED, ids=[d.describe() for d in PARSED])
@PROPERTY
@given(data=st.data())
def test_set_strings_of_valid_values_parse_back(domain: Any, data: Any) -> None:
    value = domain.check(data.draw(domain.valid([3, 7])))
    assert domain.parse(json.dumps(value)) == value


@pytest.mark.parametrize(
    ("domain", "value", "expected"),
    [
        (Float(0.0, 1.0, low_open=True), 1, 1.0),  # an int is widened
        (Int(), 4.0, 4),  # an integral float is an int
        (ListOf(Text()), ("a", "b"), ["a", "b"]),  # a tuple becomes a list
        (Optional(Int(1)), None, None),
        (OneOf(Text(), ListOf(Text())), "x", "x"),
    ],
)
def test_check_normalises(domain: Any, value: Any, expected: Any) -> None:
    got = domain.check(value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("domain", "value", "message"),
    [
        (Float(0.0, 1.0, low_open=True), 0.0, "expects a number in (0, 1], got 0"),
        (Float(0.0, 1.0, low_open=True), -1, "expects a number in (0, 1], got -1"),
        (Float(), math.nan, "got nan"),
        (Float(), math.inf, "got inf"),
        (Int(1), 0, "expects an integer >= 1, got 0"),
        (Int(8, multiple_of=8), 12, "a multiple of 8, got 12"),
        (Int(1, odd=True), 4, "expects an odd integer >= 1, got 4"),
        (Int(), True, "got bool True"),
        (Bool(), 1, "expects true or false"),
        (Choice("l1", "l2"), "l3", "expects one of 'l1', 'l2', got 'l3'"),
        (Text(), "", "expects a non-empty string"),
        (ListOf(Int(0), 3, 3), [1, 2], "expects a list of 3 (an integer >= 0), got 2 item(s)"),
        (ListOf(Int(0)), [1, -2], "an item expects an integer >= 0, got -2"),
        (Optional(Int(1), none_means="all"), 0, "expects an integer >= 1, or none (all), got 0"),
    ],
)
def test_refusals_say_what_the_domain_is(domain: Any, value: Any, message: str) -> None:
    with pytest.raises(DomainError, match=re.escape(message)):
        domain.check(value)


@pytest.mark.parametrize(
    ("domain", "text", "expected"),
    [
        (Float(0.0), "0.5", 0.5),
        (Float(0.0), "3", 3.0),
        (Int(1), "12", 12),
        (Bool(), "yes", True),
        (Bool(), "OFF", False),
        (Text(), "wide_resnet50_2", "wide_resnet50_2"),
        (Text(), '"a b"', "a b"),
        (Optional(Int(1)), "none", None),
        (Optional(Int(1)), "null", None),
        (ListOf(Text()), "layer2, layer3", ["layer2", "layer3"]),
        (ListOf(Text()), '["layer2"]', ["layer2"]),
        (ListOf(Float()), "1, 0.5", [1.0, 0.5]),
        (OneOf(Text(), ListOf(Text())), "a,b", "a,b"),
        (OneOf(Text(), ListOf(Text())), '["a", "b"]', ["a", "b"]),
    ],
)
def test_set_strings_parse_to_the_domain(domain: Any, text: str, expected: Any) -> None:
    assert domain.parse(text) == expected


@pytest.mark.parametrize(
    ("domain", "text"), [(Float(0.0), "abc"), (Int(1), "1.5"), (Bool(), "maybe"), (ListOf(Int()), "[1,"), (Int(1), "none")]
)
def test_unparseable_set_strings_are_refused(domain: Any, text: str) -> None:
    with pytest.raises(DomainError):
        domain.parse(text)


@pytest.mark.parametrize(
    ("values", "types", "accepts", "refuses"),
    [
        ([1.0, 2.0], None, 3, "x"),
        ([8, None], None, None, 2.5),
        ([None, None], None, {"any": [1]}, math.nan),
        (["a", "b"], (str, list), ["x"], 3),
        ([["a"], ["b", "c"]], None, ["z"], [1]),
    ],
)
def test_domains_of_undeclared_detectors_follow_the_profile_types(values: list, types: Any, accepts: Any, refuses: Any) -> None:
    domain = domain_from_profiles(values, types)
    domain.check(accepts)
    with pytest.raises(DomainError):
        domain.check(refuses)


# --- the declaration on Detector --------------------------------------------------------------------
class Declared(Detector):
    """A detector declared with params, with one impossible combination."""

    name = "declared_domains"
    params = {
        "ratio": Param(Float(0.0, 1.0, low_open=True), paper=0.1, fast=0.5, meaning="share kept", source="paper §3"),
        "size": Param(Int(8, multiple_of=8), paper=256, fast=64, meaning="input size (pixels)", source="paper §4"),
        "crop": Param(Optional(Int(8), none_means="no crop"), paper=224, fast=None, meaning="centre crop", source="paper §4"),
        "layers": Param(ListOf(Text(), 1, 3), paper=["a", "b"], fast=["a"], meaning="feature layers", source="official code"),
    }
    capabilities = Capabilities()

    @classmethod
    def check_hparams(cls, hparams: Any) -> None:
        if hparams["crop"] is not None and hparams["crop"] > hparams["size"]:
            raise ConfigError(f"detector {cls.name!r}: crop={hparams['crop']} refused: larger than size={hparams['size']}")

    def learn(self, images: Any, labelled: LabelledDefects | None = None) -> None:
        self.mean_ = float(np.mean([img.mean() for img in images]))

    def infer(self, images: Any, output_size: tuple[int, int]) -> Prediction:
        return Prediction(scores=np.zeros(len(images)), maps=np.zeros((len(images), *output_size), np.float32))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"mean": np.array(self.mean_)}

    def load_state_dict(self, state: Any) -> None:
        self.mean_ = float(state["mean"])


def test_params_make_the_profiles() -> None:
    assert Declared.profiles == {
        "paper": {"ratio": 0.1, "size": 256, "crop": 224, "layers": ["a", "b"]},
        "fast": {"ratio": 0.5, "size": 64, "crop": None, "layers": ["a"]},
    }
    assert Declared("paper").hparams["crop"] == 224


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ratio": -1}, "detector 'declared_domains': ratio=-1 refused: expects a number in (0, 1], got -1"),
        ({"ratio": "abc"}, "ratio='abc' refused: expects a number in (0, 1], got str 'abc'"),
        ({"size": 60}, "size=60 refused: expects an integer >= 8, a multiple of 8, got 60"),
        ({"layers": []}, "layers=[] refused: expects a list of 1 to 3 (a non-empty string), got 0 item(s)"),
        ({"crop": 512}, "detector 'declared_domains': crop=512 refused: larger than size=256"),
        ({"nope": 1}, "has no hyperparameter 'nope'"),
    ],
)
def test_out_of_domain_values_and_impossible_combinations_are_one_line_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Declared.resolve_hparams("paper", overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_combinations_are_refused_as_combination_errors() -> None:
    with pytest.raises(CombinationError):
        Declared("paper", crop=512)
    assert Declared("paper", crop=None, size=64).hparams["size"] == 64


def test_set_strings_are_parsed_by_the_declared_domains() -> None:
    assert Declared.parse_overrides({"ratio": "0.25", "crop": "none", "layers": "a, b", "size": "128"}) == {
        "ratio": 0.25,
        "crop": None,
        "layers": ["a", "b"],
        "size": 128,
    }
    with pytest.raises(ConfigError, match=r"detector 'declared_domains': --set ratio=abc refused: expects a number in \(0, 1\]"):
        Declared.parse_overrides({"ratio": "abc"})


def test_declarations_are_checked_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="sets both params and profiles"):
        type("Both", (Declared,), {"params": dict(Declared.params), "profiles": {"paper": {}, "fast": {}}})
    bad = {**Declared.params, "ratio": Param(Float(0.0, 1.0), paper=2.0, fast=0.5, meaning="m", source="s")}
    with pytest.raises(TypeError, match="the paper value of 'ratio' is outside its own domain"):
        type("Bad", (Declared,), {"params": bad})


# --- autovi describe and the README tables ------------------------------------------------------------
def test_describe_lists_every_hyperparameter_with_its_declaration() -> None:
    info = describe(Declared)
    assert [p["name"] for p in info["hyperparameters"]] == ["ratio", "size", "crop", "layers"]
    ratio = info["hyperparameters"][0]
    assert ratio == {
        "name": "ratio",
        "domain": {"kind": "float", "text": "a number in (0, 1]", "low": 0.0, "high": 1.0, "low_open": True, "high_open": False},
        "paper": 0.1,
        "fast": 0.5,
        "meaning": "share kept",
        "source": "paper §3",
    }
    table = markdown_table(Declared).splitlines()
    assert table[2] == "| `ratio` | `0.1` | `0.5` | a number in (0, 1] | share kept | paper §3 |"
    assert table[4] == "| `crop` | `224` | `null` | an integer >= 8, or none (no crop) | centre crop | paper §4 |"


def test_sync_readme_rewrites_only_the_generated_region(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{TABLE_BEGIN}\nold table\n{TABLE_END}\nafter\n")
    assert not sync_readme(Declared, readme, check=True)
    assert "old table" in readme.read_text()
    assert not sync_readme(Declared, readme)
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"{TABLE_END}\nafter\n") and markdown_table(Declared) in text
    assert sync_readme(Declared, readme, check=True)
    readme.write_text("no markers\n")
    with pytest.raises(ConfigError, match="no generated table"):
        sync_readme(Declared, readme)


PLUGIN_READMES = sorted([*REPO.glob("plugins/autovi-plugin-*/README.md"), *REPO.glob("examples/autovi-plugin-*/README.md")])


@pytest.mark.parametrize("readme", PLUGIN_READMES, ids=[p.parent.name for p in PLUGIN_READMES])
def test_plugin_readme_tables_are_generated_from_the_declarations(readme: Path) -> None:
    from autovi_core.registry import get_registry

    name = readme.parent.name.removeprefix("autovi-plugin-").replace("-", "_")
    registry = get_registry()
    if name not in registry.detectors:
        pytest.skip(f"plugin {name} is not installed")
    cls = registry.detector_class(name)
    assert cls.params, f"{name} declares no params"
    assert sync_readme(cls, readme, check=True), f"{readme} drifted from {name}'s params: run autovi describe {name} --readme {readme}"


def test_describe_command_prints_the_table_and_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    info = json.loads(run_cli(capsys, monkeypatch, "describe", "pixel_gaussian", "--json")[1])
    assert info["name"] == "pixel_gaussian" and info["declared"] is True
    assert {p["name"] for p in info["hyperparameters"]} == {"size", "blur", "min_std", "map_sigma"}
    code, out, _ = run_cli(capsys, monkeypatch, "describe", "pixel_gaussian")
    assert code == 0 and "min_std" in out and "a number > 0" in out and "unsupervised" in out


# --- known backbones' feature layers ------------------------------------------------------------------
def test_known_feature_layers_and_strides_are_timms() -> None:
    timm = pytest.importorskip("timm")
    import torch

    for backbone, layers in FEATURE_LAYERS.items():
        with torch.device("meta"):  # no weights allocated: the layer table is all that is read
            info = timm.create_model(backbone, pretrained=False, features_only=True).feature_info
        assert tuple(info.module_name()) == layers, backbone
        assert [layer_stride(backbone, name) for name in layers] == list(info.reduction()), backbone
    assert layer_stride("wide_resnet50_2", "blocks.2") is None and layer_stride("other", "layer2") is None


def test_missing_layers_of_a_known_backbone_are_refused_without_torch() -> None:
    check_backbone_layers("d", "wide_resnet50_2", ["layer2", "layer3"])
    check_backbone_layers("d", "some_other_net", ["anything"])  # checked when its extractor is built
    check_backbone_layers("d", "wide_resnet50_2", None)  # the preset's
    with pytest.raises(ConfigError, match=r"layers=\['blocks.2'\] refused: backbone 'wide_resnet50_2' has no \['blocks.2'\]"):
        check_backbone_layers("d", "wide_resnet50_2", ["blocks.2"])


# --- command-line options -------------------------------------------------------------------------------
@pytest.mark.parametrize("table", [RUN, EVALUATE, REPORT], ids=["run", "evaluate", "report"])
@PROPERTY
@given(data=st.data())
def test_option_values_are_accepted_inside_and_refused_outside_their_domains(table: Any, data: Any) -> None:
    option = data.draw(st.sampled_from(sorted(table)))
    check_options(table, {option: data.draw(table[option].valid([1.0]))})
    value = data.draw(table[option].invalid())
    with pytest.raises(ConfigError) as info:
        check_options(table, {option: value})
    assert str(info.value).startswith(f"{option} ") and "refused" in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "size=abc"], "detector 'pixel_gaussian': --set size=abc refused: expects an integer >= 8"),
        (["--set", "min_std=-1"], "detector 'pixel_gaussian': --set min_std=-1 refused: expects a number > 0"),
        (["--set", "coreset=0.1"], "detector 'pixel_gaussian' has no hyperparameter 'coreset'"),
        (["--timeout", "-1"], "--timeout -1.0 refused: expects a number > 0, or none (no limit)"),
        (["--seed", "-3"], "--seed -3 refused: expects an integer in [0, 4294967295]"),
        (["--device", "gpu"], "--device 'gpu' refused: expects auto, cpu, cuda or cuda:N"),
        (["--spro-mode", "fast"], "--spro-mode 'fast' refused: expects one of 'exact', 'official'"),
        (["--memory-limit", "0"], "--memory-limit 0.0 refused"),
        (["--executor", "slurm"], "--executor 'slurm' refused"),
        (["--category", "nope"], "unknown category 'nope'"),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--profile", "slow"], "--profile 'slow' refused: expects one of 'paper', 'fast'"),
    ],
)
def test_run_refuses_bad_values_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, example_plugin: Any, args: list[str], message: str
) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, monkeypatch, "run", "-d", "pixel_gaussian", "-c", "clip_assembly", "--output", str(out), *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@PROPERTY
@given(name=st.text(min_size=1, max_size=12))
def test_unknown_category_names_are_refused_by_the_dataset(name: str) -> None:
    from autovi_core.registry import get_registry

    provider = get_registry().dataset("synthetic")
    root = provider.resolve_root(None)
    if name in provider.categories(root):
        return
    with pytest.raises(DataError, match="unknown category"):
        provider.check_category(root, name)
