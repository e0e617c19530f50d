"""The ensemble: conformance (two small member sets), the normalisations, weights and fusions against
closed forms and numpy, that fit sees only the images it is given, and the hyperparameter checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from autovi_plugin_ensemble import detector as ensemble_module
from autovi_plugin_ensemble.detector import Ensemble, resolve_members
from autovi_plugin_ensemble.normalise import (
    IQR_TO_SD,
    MAD_TO_SD,
    Fusion,
    Normaliser,
    fuse,
    inverse_spread_weights,
    leave_one_out_spread,
    quantile_map,
)

from autovi_core.detector import LabelledDefects
from autovi_core.errors import CombinationError, ConfigError, DataError
from autovi_core.registry import get_registry
from autovi_core.testing import DetectorConformance
from autovi_core.testing.detector import ConformanceData

README = Path(__file__).resolve().parents[1] / "README.md"
SIZE = 64
MEMBERS = ["padim", "patchcore"]
"""Two cheap members at a 64-px input: the checks test the ensemble's code paths, not its members."""
SMALL = {"padim": {"resize": SIZE}, "patchcore": {"resize": SIZE}}

pytestmark = pytest.mark.skipif(
    not set(MEMBERS) <= set(get_registry().detectors), reason=f"the tests' members {MEMBERS} are not all installed"
)


class TestEnsembleConformance(DetectorConformance):
    detector = "ensemble"
    readme = README
    overrides: ClassVar[dict[str, Any]] = {"members": MEMBERS, "member_overrides": SMALL}
    image_size = SIZE
    min_auroc = 0.9
    min_pixel_auroc = 0.9

    def test_state_holds_each_member_under_its_prefix(self, fitted: Ensemble) -> None:
        state = fitted.state_dict()
        for name, member in zip(fitted.member_names, fitted.members):
            own = {key.removeprefix(f"{name}."): value for key, value in state.items() if key.startswith(f"{name}.")}
            expected = member.state_dict()
            assert set(own) == set(expected), name
            for key, value in expected.items():
                np.testing.assert_array_equal(own[key], value, err_msg=f"{name}.{key}")
        ours = {key for key in state if key.startswith("ensemble.")}
        assert ours == {"ensemble.weights", *(f"ensemble.{n}.{part}" for n in MEMBERS for part in ("map", "score"))}
        assert all(value.dtype != object for value in state.values())
        np.testing.assert_allclose(state["ensemble.weights"], [0.5, 0.5])

    def test_loading_rebuilds_the_members_through_the_registry(self, fitted: Ensemble, tmp_path: Path) -> None:
        loaded = Ensemble.load(fitted.save(tmp_path / "model"))
        registry = get_registry()
        assert loaded.member_names == MEMBERS
        for name, member, original in zip(MEMBERS, loaded.members, fitted.members):
            assert type(member) is registry.detector_class(name) and member.fitted
            assert member.hparams == original.hparams and member.provenance == json.loads(json.dumps(original.provenance))
        assert not (tmp_path / "model" / "members").exists(), "padim and patchcore write no extra files"

    def test_a_missing_member_at_load_names_its_pip_install(self, fitted: Ensemble, tmp_path: Path) -> None:
        path = fitted.save(tmp_path / "model")
        config = json.loads((path / "config.json").read_text())
        config["hparams"]["members"] = ["padim", "no_such_member"]
        (path / "config.json").write_text(json.dumps(config))
        with pytest.raises(DataError, match="pip install autovi-plugin-no-such-member"):
            Ensemble.load(path)

    def test_provenance_records_members_split_and_weights(self, fitted: Ensemble) -> None:
        prov = fitted.provenance
        assert prov["member_names"] == MEMBERS
        # no held-out goods given: 12 goods, 20 % -> 3 held out
        assert prov["goods"] == {"calibration": "split", "members": 9, "held_out": 3, "members_refitted_on": None}
        assert prov["members_reused"] == []
        assert set(prov["members"]) == set(MEMBERS)
        assert prov["members"]["patchcore"]["hparams"]["resize"] == SIZE
        assert all(prov["members"][name]["provenance"]["device"] == "cpu" for name in MEMBERS)
        assert set(prov["score_spread"]) == set(prov["weights"]) == set(MEMBERS)


class TestEnsembleQuantileWeighted(DetectorConformance):
    """The other paths: quantile mapping, weighted fusion and members refitted on all the goods."""

    detector = "ensemble"
    overrides: ClassVar[dict[str, Any]] = {
        "members": MEMBERS,
        "member_overrides": SMALL,
        "normalisation": "quantile",
        "fusion": "weighted",
        "refit_members": True,
    }
    image_size = SIZE
    min_auroc = 0.9
    min_pixel_auroc = 0.9

    def test_weights_are_the_inverse_leave_one_out_spreads(self, fitted: Ensemble) -> None:
        spreads = [fitted.provenance["score_spread"][name] for name in MEMBERS]
        np.testing.assert_allclose(fitted.weights, inverse_spread_weights(spreads))
        assert fitted.weights.sum() == pytest.approx(1.0)
        assert fitted.provenance["goods"]["members_refitted_on"] == 12


# --- normalisation ---------------------------------------------------------------------------------
def test_robust_z_scores_of_known_numbers() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0])  # median 3; |x - 3| = 2, 1, 0, 1, 97 -> MAD 1; IQR 4 - 2 = 2
    mad = Normaliser.fit("mad", values)
    np.testing.assert_allclose(mad.params, [3.0, MAD_TO_SD])
    np.testing.assert_allclose(mad(np.array([3.0, 3.0 + MAD_TO_SD, 100.0])), [0.0, 1.0, 97.0 / MAD_TO_SD])
    iqr = Normaliser.fit("iqr", values)
    np.testing.assert_allclose(iqr.params, [3.0, 2.0 / IQR_TO_SD])
    np.testing.assert_allclose(iqr(np.array([5.0, 1.0])), [IQR_TO_SD, -IQR_TO_SD])
    assert MAD_TO_SD == pytest.approx(1.4826, abs=1e-4) and IQR_TO_SD == pytest.approx(1.349, abs=1e-3)


def test_robust_z_of_gaussian_goods_is_standard() -> None:
    values = np.random.default_rng(0).normal(5.0, 2.0, size=200_000)
    for kind in ("mad", "iqr"):
        center, scale = Normaliser.fit(kind, values).params
        assert center == pytest.approx(5.0, abs=0.02) and scale == pytest.approx(2.0, rel=0.01), kind


def test_a_zero_scale_falls_back_to_the_standard_deviation_then_one() -> None:
    tied = np.array([5.0, 5.0, 5.0, 5.0, 9.0])  # MAD 0 and IQR 0
    for kind in ("mad", "iqr"):
        np.testing.assert_allclose(Normaliser.fit(kind, tied).params, [5.0, np.std(tied)])
        np.testing.assert_allclose(Normaliser.fit(kind, np.full(4, 7.0)).params, [7.0, 1.0])


def test_quantile_mapping_sends_the_goods_quantiles_to_uniform() -> None:
    goods = np.random.default_rng(1).gamma(2.0, 3.0, size=20_000)
    knots = 101
    normaliser = Normaliser.fit("quantile", goods, knots)
    levels = np.linspace(0.0, 1.0, knots)
    np.testing.assert_allclose(normaliser.params, np.quantile(goods, levels))
    np.testing.assert_allclose(normaliser(normaliser.params), levels, atol=1e-12)
    mapped = normaliser(goods)
    assert mapped.min() == 0.0 and mapped.max() == 1.0
    ecdf = np.array([np.mean(mapped <= p) for p in levels])
    assert np.abs(ecdf - levels).max() <= 1.0 / (knots - 1) + 1.0 / goods.size


def test_quantile_mapping_is_monotone_and_linear_beyond_the_goods() -> None:
    goods = np.random.default_rng(2).normal(size=500)
    normaliser = Normaliser.fit("quantile", goods, 51)
    low, high = goods.min(), goods.max()
    width = high - low
    x = np.sort(np.random.default_rng(3).uniform(low - 2 * width, high + 2 * width, size=5_000))
    assert np.all(np.diff(normaliser(x)) > 0), "strictly increasing where the goods have no ties"
    np.testing.assert_allclose(normaliser(np.array([low - width, high + width, high + 2 * width])), [-1.0, 2.0, 3.0])


def test_quantile_mapping_with_tied_goods_stays_monotone() -> None:
    goods = np.r_[np.zeros(600), np.random.default_rng(4).exponential(size=400)]  # 60 % of the pixels are 0
    knots = Normaliser.fit("quantile", goods, 101).params
    x = np.sort(np.r_[np.linspace(-1, 8, 2_000), 0.0, 0.0])
    assert np.all(np.diff(quantile_map(x, knots)) >= 0)
    assert quantile_map(np.array([0.0]), knots)[0] == pytest.approx(0.3, abs=0.01)  # the tie sits at its mean level


# --- weights and fusion ----------------------------------------------------------------------------
def test_leave_one_out_spread_equals_a_direct_computation() -> None:
    scores = np.random.default_rng(5).lognormal(size=9)
    expected = []
    for i in range(scores.size):
        rest = np.delete(scores, i)
        median = np.median(rest)
        expected.append((scores[i] - median) / (1.4826022185056018 * np.median(np.abs(rest - median))))
    assert leave_one_out_spread(scores, "mad") == pytest.approx(np.std(expected, ddof=1), rel=1e-12)


@pytest.mark.parametrize("kind", ["mad", "iqr", "quantile"])
def test_spread_ignores_a_members_own_units(kind: str) -> None:
    """Rescaling or shifting a member's scores changes nothing: only how its goods stray counts."""
    scores = np.random.default_rng(6).gamma(3.0, size=8)
    assert leave_one_out_spread(7.0 * scores + 3.0, kind) == pytest.approx(leave_one_out_spread(scores, kind), rel=1e-9)


def test_a_member_whose_goods_stray_gets_less_weight() -> None:
    rng = np.random.default_rng(7)
    steady = rng.normal(size=12)
    straying = steady.copy()
    straying[0] += 15.0  # one good far from the others: out of sample, it sticks out
    spreads = [leave_one_out_spread(steady, "mad"), leave_one_out_spread(straying, "mad")]
    weights = inverse_spread_weights(spreads)
    assert weights[0] > weights[1]
    np.testing.assert_allclose(weights, (1 / np.array(spreads)) / (1 / np.array(spreads)).sum())


def test_inverse_spread_weights_closed_form() -> None:
    np.testing.assert_allclose(inverse_spread_weights([1.0, 2.0, 4.0]), [4 / 7, 2 / 7, 1 / 7])
    np.testing.assert_allclose(inverse_spread_weights([0.0, 2.0, 4.0]), [0.4, 0.4, 0.2])  # zero counts as 2
    np.testing.assert_allclose(inverse_spread_weights([0.0, 0.0]), [0.5, 0.5])


def test_fusions_equal_numpy() -> None:
    stack = np.random.default_rng(8).normal(size=(3, 4, 5, 6)).astype(np.float32)
    weights = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(fuse(list(stack), "mean"), stack.mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(fuse(list(stack), "max"), stack.max(axis=0))
    np.testing.assert_allclose(fuse(list(stack), "weighted", weights), np.tensordot(weights, stack, axes=1), rtol=1e-6, atol=1e-6)
    assert fuse(list(stack), "mean").dtype == np.float32
    scores = np.random.default_rng(9).normal(size=(3, 7))
    np.testing.assert_allclose(fuse(list(scores), "weighted", weights), weights @ scores, rtol=1e-12)


def test_fusion_refuses_a_missing_member() -> None:
    fusion = Fusion("mean", [0.5, 0.5])
    fusion.add(np.ones(3), 0)
    with pytest.raises(ValueError, match="2 members received 1"):
        fusion.result()


# --- fit sees only the images it is given ------------------------------------------------------------
@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> ConformanceData:
    return ConformanceData(tmp_path_factory.mktemp("ensemble"), "clip_assembly", SIZE)


def test_fit_uses_only_the_training_images_and_no_labels(small_data: ConformanceData, monkeypatch: pytest.MonkeyPatch) -> None:
    """Members learn from, and the normalisation is fitted on, the training images handed to fit
    only (disjoint shares of them); the test images first reach a member in predict."""
    calls: list[tuple[str, str, set[int], Any]] = []
    registry = get_registry()
    for name in MEMBERS:
        cls = registry.detector_class(name)

        def learn(self: Any, images: Any, labelled: Any = None, _original: Any = cls.learn) -> None:
            calls.append(("learn", self.name, {id(image) for image in images}, labelled))
            _original(self, images, labelled)

        def infer(self: Any, images: Any, output_size: Any, _original: Any = cls.infer) -> Any:
            calls.append(("infer", self.name, {id(image) for image in images}, None))
            return _original(self, images, output_size)

        monkeypatch.setattr(cls, "learn", learn)
        monkeypatch.setattr(cls, "infer", infer)

    train, test = small_data.train, small_data.test
    train_ids, test_ids = {id(image) for image in train}, {id(image) for image in test}
    ensemble = Ensemble("fast", seed=0, members=MEMBERS, member_overrides=SMALL)
    with pytest.raises(ConfigError, match="unsupervised"):
        ensemble.fit(train, LabelledDefects(images=list(test[:2]), masks=[None, None], defect_dirs=["a", "b"]))
    assert calls == []
    ensemble.fit(train)
    assert {kind for kind, *_ in calls} == {"learn", "infer"}
    for name in MEMBERS:
        learned = [ids for kind, member, ids, _ in calls if kind == "learn" and member == name]
        mapped = [ids for kind, member, ids, _ in calls if kind == "infer" and member == name]
        assert len(learned) == 1 and all(labelled is None for kind, member, _, labelled in calls if kind == "learn")
        held_out = set().union(*mapped)
        assert learned[0] | held_out == train_ids and not learned[0] & held_out, name
    assert not test_ids & set().union(*(ids for _, _, ids, _ in calls))
    fitted_calls = len(calls)
    ensemble.predict(test, (SIZE, SIZE))
    assert [ids for *_, ids, _ in calls[fitted_calls:]] == [test_ids] * len(MEMBERS)


def fitted_alone(name: str, images: Any) -> Any:
    """Member ``name`` fitted on its own exactly as ``autovi run`` fits it (seeded first)."""
    from autovi_core.shared_fits import fit_shared

    return fit_shared(get_registry().create_detector(name, "fast", seed=0, **SMALL[name]), images)[0]


def test_given_held_out_goods_calibrate_and_members_are_the_ones_fitted_alone(small_data: ConformanceData) -> None:
    """With held-out goods given (autovi run's calibration hold-out), every member is fitted on all
    the training images and is the very model fitted alone; the given goods fit the statistics."""
    train, held = small_data.train[:9], small_data.train[9:]
    ensemble = Ensemble("fast", seed=0, members=MEMBERS, member_overrides=SMALL).fit(train, held_out=held)
    assert ensemble.provenance["goods"] == {"calibration": "given", "members": 9, "held_out": 3, "members_refitted_on": None}
    for name, member in zip(MEMBERS, ensemble.members):
        alone = fitted_alone(name, train)
        state, expected = member.state_dict(), alone.state_dict()
        assert set(state) == set(expected), name
        for key in expected:
            np.testing.assert_array_equal(state[key], expected[key], err_msg=f"{name}.{key}")
        scores, _ = Ensemble.held_out_values(alone, held)
        np.testing.assert_allclose(ensemble.score_normalisers[MEMBERS.index(name)].params, Normaliser.fit("mad", scores, 1001).params)
    one = Ensemble("fast", seed=0, members=MEMBERS, member_overrides=SMALL).fit(train, held_out=held[:1])
    assert one.provenance["goods"]["calibration"] == "split"  # fewer than 2 given
    split = Ensemble("fast", seed=0, members=MEMBERS, member_overrides=SMALL, calibration_goods="split").fit(train, held_out=held)
    assert split.provenance["goods"] == {"calibration": "split", "members": 7, "held_out": 2, "members_refitted_on": None}


def test_a_member_fitted_alone_in_the_run_is_loaded_not_fitted_again(
    small_data: ConformanceData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a run's shared folder PaDiM fitted alone is reused by the ensemble (PatchCore, not run
    alone, is fitted); the fused output is the one of an ensemble that fitted both itself."""
    from autovi_core.shared_fits import sharing_fits

    train, held, test = small_data.train[:9], small_data.train[9:], small_data.test
    fresh = Ensemble("fast", seed=0, members=MEMBERS, member_overrides=SMALL).fit(train, held_out=held)
    learned: list[str] = []
    for name in MEMBERS:
        cls = get_registry().detector_class(name)
        monkeypatch.setattr(
            cls, "learn", lambda self, images, labelled=None, _o=cls.learn: learned.append(self.name) or _o(self, images, labelled)
        )
    with sharing_fits(tmp_path):
        fitted_alone("padim", train)
        shared = Ensemble("fast", seed=0, members=MEMBERS, member_overrides=SMALL).fit(train, held_out=held)
    assert learned == ["padim", "patchcore"]
    assert shared.provenance["members_reused"] == ["padim"] and "shared_fit" in shared.provenance["members"]["padim"]["provenance"]
    expected, got = fresh.predict(test, (SIZE, SIZE)), shared.predict(test, (SIZE, SIZE))
    np.testing.assert_array_equal(got.scores, expected.scores)
    np.testing.assert_array_equal(got.maps, expected.maps)


def test_split_is_seeded_disjoint_and_covers_the_goods() -> None:
    ensemble = Ensemble("fast", seed=3, members=["padim"])
    members, held = ensemble.split_goods(36)
    assert len(held) == 8 and len(members) == 28  # ceil(0.2 * 36)
    assert sorted(np.r_[members, held].tolist()) == list(range(36))
    again, _ = Ensemble("fast", seed=3, members=["padim"]).split_goods(36)
    other, _ = Ensemble("fast", seed=4, members=["padim"]).split_goods(36)
    assert np.array_equal(members, again) and not np.array_equal(members, other)
    assert [len(h) for h in (ensemble.split_goods(4)[1], ensemble.split_goods(5)[1])] == [2, 2]
    with pytest.raises(DataError, match="needs at least 4 good training images"):
        ensemble.split_goods(3)
    with pytest.raises(DataError, match="held_out_fraction=0.9"):
        Ensemble("fast", members=["padim"], held_out_fraction=0.9).split_goods(10)


# --- members and hyperparameters ---------------------------------------------------------------------
def test_auto_takes_the_installed_default_members(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = get_registry().detectors
    assert resolve_members("auto") == [name for name in ("patchcore", "padim") if name in installed]
    monkeypatch.setattr(ensemble_module, "AUTO_MEMBERS", ("padim", "no_such_a"))
    assert resolve_members("auto") == ["padim"]
    monkeypatch.setattr(ensemble_module, "AUTO_MEMBERS", ("no_such_a", "no_such_b"))
    with pytest.raises(ConfigError) as info:
        resolve_members("auto")
    assert str(info.value) == (
        "detector 'ensemble': members='auto' refused: none of no_such_a, no_such_b is installed "
        "(pip install autovi-plugin-no-such-a; pip install autovi-plugin-no-such-b)"
    )


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ({"members": ["ensemble"]}, "members=['ensemble'] refused: an ensemble cannot be its own member"),
        ({"members": ["padim", "padim"]}, "members=['padim', 'padim'] refused: it lists ['padim'] more than once"),
        ({"members": ["no_such_detector"]}, "members=['no_such_detector'] refused: unknown detector 'no_such_detector'"),
        (
            {"members": ["padim"], "member_overrides": {"patchcore": {}}},
            "member_overrides={'patchcore': {}} refused: names ['patchcore'], which are not among the members ['padim']",
        ),
        ({"member_overrides": {"padim": {"resize": -1}}}, "member_overrides={'padim': {'resize': -1}} refused: detector 'padim': resize="),
        ({"member_overrides": {"padim": {"no_such": 1}}}, "member_overrides={'padim': {'no_such': 1}} refused: detector 'padim' has no"),
    ],
)
def test_impossible_members_are_refused_by_name(overrides: dict[str, Any], refusal: str) -> None:
    with pytest.raises(CombinationError) as info:
        Ensemble.resolve_hparams("fast", overrides)
    message = str(info.value)
    assert message.startswith(f"detector 'ensemble': {refusal}") and "\n" not in message, message


def test_a_missing_member_names_its_pip_install() -> None:
    with pytest.raises(ConfigError, match=r"unknown detector 'no_such_detector'.*\(pip install autovi-plugin-no-such-detector\)$"):
        Ensemble("fast", members=["padim", "no_such_detector"])


def test_a_supervised_member_is_refused() -> None:
    if "segad" not in get_registry().detectors:
        pytest.skip("segad is not installed")
    with pytest.raises(CombinationError, match="members=\\['segad'\\] refused: 'segad' is supervised, and a member must be unsupervised"):
        Ensemble("fast", members=["segad"])


@pytest.mark.parametrize(
    ("key", "value", "domain"),
    [
        ("held_out_fraction", 0.0, "a number in (0, 1)"),
        ("held_out_fraction", 1.0, "a number in (0, 1)"),
        ("normalisation", "zscore", "one of 'mad', 'iqr', 'quantile'"),
        ("fusion", "median", "one of 'mean', 'max', 'weighted'"),
        ("quantile_knots", 1, "an integer >= 2"),
        ("members", [], "'auto', or a list of 1 or more"),
        ("members", "padim", "'auto', or a list of 1 or more"),
        ("member_overrides", ["padim"], "a mapping {member name: {hyperparameter: value}}"),
        ("member_overrides", {"padim": 64}, "a mapping {member name: {hyperparameter: value}}"),
        ("refit_members", "yes", "true or false"),
    ],
)
def test_out_of_domain_values_are_refused_by_name(key: str, value: Any, domain: str) -> None:
    with pytest.raises(ConfigError) as info:
        Ensemble.resolve_hparams("fast", {key: value})
    message = str(info.value)
    assert message.startswith(f"detector 'ensemble': {key}=") and domain in message and "\n" not in message, message
    assert not isinstance(info.value, CombinationError)


def test_set_strings_give_names_lists_and_mappings() -> None:
    parse = Ensemble.parse_overrides
    assert parse({"members": "auto"}) == {"members": "auto"}
    assert parse({"members": "padim"}) == {"members": ["padim"]}
    assert parse({"members": "padim, patchcore"}) == {"members": ["padim", "patchcore"]}
    assert parse({"members": '["padim", "patchcore"]'}) == {"members": ["padim", "patchcore"]}
    assert parse({"member_overrides": json.dumps(SMALL)}) == {"member_overrides": SMALL}
    with pytest.raises(ConfigError, match="--set member_overrides=padim refused"):
        parse({"member_overrides": "padim"})


def test_checking_hyperparameters_imports_no_torch() -> None:
    """Resolving the members through the registry and checking their overrides, as ``autovi run``
    does when it builds its tasks, imports no torch."""
    code = (
        "import sys\n"
        "from autovi_core.registry import get_registry\n"
        "cls = get_registry().detector_class('ensemble')\n"
        f"cls.resolve_hparams('fast', {{'members': {MEMBERS!r}, 'member_overrides': {SMALL!r}}})\n"
        "cls('paper')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_name_that_cannot_be_a_plugin_gets_no_pip_hint_and_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        Ensemble.resolve_hparams("fast", {"members": ["0\n"]})
    message = str(info.value)
    assert "unknown detector '0\\n'" in message and "pip install" not in message and "\n" not in message, message


def test_a_run_fits_a_member_it_also_evaluates_alone_once(tmp_path: Path) -> None:
    """``autovi run -d ensemble -d padim``: PaDiM's row runs first (in its own process) and the
    ensemble loads that fit; its results are those of the ensemble run without PaDiM's row, and the
    shared fits are gone when the run ends."""
    from autovi_core.results import load_results

    def run(out: Path, *detectors: str) -> dict[str, dict[str, Any]]:
        flags = [arg for name in detectors for arg in ("-d", name)]
        command = [sys.executable, "-m", "autovi_core.cli", "run", *flags, "--category", "clip_assembly", "--train-images", "10"]
        result = subprocess.run([*command, "--output", str(out)], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        assert not (out / "shared-fits").exists()
        return {record["detector"]: record for record in load_results(out)[0]}

    both = run(tmp_path / "both", "ensemble", "padim")
    alone = run(tmp_path / "alone", "ensemble")
    assert list(both) == ["padim", "ensemble"]
    assert both["ensemble"]["provenance"]["members_reused"] == ["padim"] and not both["padim"]["timing"]["fit_reused"]
    assert alone["ensemble"]["provenance"]["members_reused"] == []
    assert both["ensemble"]["provenance"]["goods"] == {"calibration": "given", "members": 10, "held_out": 4, "members_refitted_on": None}
    assert both["ensemble"]["metrics"] == alone["ensemble"]["metrics"]
