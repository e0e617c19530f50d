"""Conformance suite for dataset plugins (:class:`DatasetConformance`).

Subclass it in your plugin's tests, name the dataset and point it at a category::

    from autovi_core.testing import DatasetConformance

    class TestMyDataset(DatasetConformance):
        dataset = "my_dataset"            # the registered name
        category = "bottle"               # optional: default is the first of categories(root)

        @classmethod
        def build_root(cls, directory):   # write a tiny tree in your layout under directory
            ...
            return directory

It checks what :class:`~autovi_core.dataset.DatasetProvider` and
:class:`~autovi_core.dataset.Category` promise: the provider is registered under its name,
``categories(root)`` lists the category, an unknown category is rejected with a one-line
:class:`~autovi_core.errors.AutoviError` naming it, ``load_category`` gives a defect-free train
split and a test split labelled 0/1 (``good`` = 0) with unique keys, images decode as
:data:`~autovi_core.dataset.IMAGE_LAYOUT` at their ground-truth shape, defective samples' channels
are boolean masks of the image's shape (none at all when the category has no masks), good test
samples have no mask, and loading twice gives equal samples and pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from ..dataset import IMAGE_LAYOUT, Category, DatasetProvider, DefectConfig, Sample
from ..errors import AutoviError

UNKNOWN_CATEGORY = "no_such_category_xyz"


class DatasetConformance:
    """Mix-in test class: set ``dataset`` (registered name); override :meth:`build_root` to write a
    tiny on-disk tree (default: the provider's own root) and :meth:`make_provider` to test a
    smaller configuration of the provider than the registered one."""

    dataset: ClassVar[str] = ""
    category: ClassVar[str | None] = None
    """The category to load (default: the first of ``categories(root)``)."""
    max_images: ClassVar[int] = 24
    """How many images (and their masks) the decoding checks read, spread over the splits."""

    # --- hooks ------------------------------------------------------------------------------------
    @classmethod
    def build_root(cls, directory: Path) -> Path | None:
        """Write the dataset's files under ``directory`` and return the root to pass to the provider
        (None: the provider's default root)."""
        return None

    @classmethod
    def make_provider(cls) -> DatasetProvider:
        """The provider under test (default: the registered one)."""
        from ..registry import get_registry

        return get_registry().dataset(cls.dataset)

    # --- fixtures ---------------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def root(cls, tmp_path_factory: pytest.TempPathFactory) -> Path | None:
        return cls.build_root(tmp_path_factory.mktemp(f"dataset-{cls.dataset}"))

    @pytest.fixture(scope="class")
    @classmethod
    def provider(cls) -> DatasetProvider:
        return cls.make_provider()

    @pytest.fixture(scope="class")
    @classmethod
    def category_name(cls, provider: DatasetProvider, root: Path | None) -> str:
        if cls.category is not None:
            return cls.category
        found = provider.categories(root)
        assert found, f"dataset {cls.dataset!r} lists no category under {root}"
        return found[0]

    @pytest.fixture(scope="class")
    @classmethod
    def loaded(cls, provider: DatasetProvider, root: Path | None, category_name: str) -> Category:
        return provider.load_category(root, category_name)

    def picked(self, category: Category) -> list[Sample]:
        """Up to ``max_images`` samples: train, good test and defective test ones, interleaved."""
        groups = [category.train, [s for s in category.test if s.label == 0], [s for s in category.test if s.label == 1]]
        chosen: list[Sample] = []
        for i in range(max(len(g) for g in groups)):
            chosen += [g[i] for g in groups if i < len(g)]
        return chosen[: self.max_images]

    # --- declaration ------------------------------------------------------------------------------
    def test_registered_under_its_name(self, provider: DatasetProvider) -> None:
        from ..registry import get_registry

        registry = get_registry()
        assert self.dataset in registry.datasets, f"{self.dataset!r} is not registered; found {sorted(registry.datasets)}"
        registered = registry.dataset(self.dataset)
        assert isinstance(registered, DatasetProvider) and registered.name == self.dataset
        assert isinstance(provider, type(registered)) and provider.name == self.dataset

    def test_lists_its_categories(self, provider: DatasetProvider, root: Path | None, category_name: str) -> None:
        found = provider.categories(root)
        assert isinstance(found, list) and all(isinstance(c, str) for c in found)
        assert len(set(found)) == len(found), f"categories listed twice: {found}"
        assert category_name in found, f"{category_name!r} not in categories(root) = {found}"

    def test_unknown_category_is_rejected(self, provider: DatasetProvider, root: Path | None) -> None:
        resolved = provider.resolve_root(root)
        for call in (lambda: provider.check_category(resolved, UNKNOWN_CATEGORY), lambda: provider.load_category(root, UNKNOWN_CATEGORY)):
            with pytest.raises(AutoviError) as info:
                call()
            message = str(info.value)
            assert UNKNOWN_CATEGORY in message, f"the error does not name the category: {message!r}"
            assert "\n" not in message.strip(), f"the error is not one line: {message!r}"

    # --- the category -----------------------------------------------------------------------------
    def test_splits_and_labels(self, loaded: Category, category_name: str) -> None:
        assert isinstance(loaded, Category)
        assert loaded.name == category_name and loaded.dataset == self.dataset
        assert loaded.train, "no training images"
        for s in loaded.train:
            assert (s.label, s.defect_dir, s.channels) == (0, "good", ()), f"{s.path}: training images are defect-free"
        assert loaded.test, "no test images"
        labels = {s.label for s in loaded.test}
        assert labels <= {0, 1}, f"test labels must be 0 or 1, got {sorted(labels)}"
        assert labels == {0, 1}, "the test split needs good and defective images"
        for s in loaded.test:
            assert (s.label == 0) == (s.defect_dir == "good"), f"{s.path}: label {s.label} in folder {s.defect_dir!r}"
            assert Path(s.path).is_file(), f"{s.path}: indexed but not a file"

    def test_keys_are_unique(self, loaded: Category) -> None:
        for split in ("train", "test"):
            keys = [s.key for s in loaded.samples if s.split == split]
            assert len(set(keys)) == len(keys), f"{split} keys are not unique: {sorted(k for k in set(keys) if keys.count(k) > 1)}"

    def test_images_are_hwc_uint8_rgb(self, loaded: Category) -> None:
        assert IMAGE_LAYOUT == "HWC uint8 RGB"
        for s in self.picked(loaded):
            image = loaded.load_image(s)
            kind = f"{type(image).__name__} {getattr(image, 'dtype', '')}"
            assert isinstance(image, np.ndarray) and image.dtype == np.uint8, f"{s.path}: {kind}, not uint8"
            assert image.ndim == 3 and image.shape[2] == 3, f"{s.path}: shape {image.shape} is not (H, W, 3)"
            assert tuple(loaded.ground_truth_shape(s)) == image.shape[:2], f"{s.path}: ground-truth shape differs from the image's"
        images = loaded.load_images(loaded.train[:2])
        assert len(images) == len(images.paths) == min(2, len(loaded.train))

    def test_defective_samples_have_masks_of_the_image_shape(self, loaded: Category) -> None:
        defective = [s for s in self.picked(loaded) if s.label == 1]
        for s in defective:
            if not loaded.has_masks:
                assert s.channels == (), f"{s.path}: the category has no masks but the sample has channels"
                continue
            assert s.channels, f"{s.path}: defective test image without ground-truth channels"
            shape = loaded.load_image(s).shape[:2]
            pairs = loaded.load_channels(s, shape)
            assert len(pairs) == len(s.channels)
            for mask, config in pairs:
                assert isinstance(mask, np.ndarray) and mask.dtype == bool, f"{s.path}: masks must be boolean"
                assert mask.shape == shape, f"{s.path}: mask {mask.shape} vs image {shape}"
                assert isinstance(config, DefectConfig)

    def test_good_test_samples_have_no_mask(self, loaded: Category) -> None:
        for s in loaded.test:
            if s.label == 0:
                assert s.channels == (), f"{s.path}: good test image with ground-truth channels"
                assert loaded.load_channels(s) == []

    def test_loading_is_deterministic(self, provider: DatasetProvider, root: Path | None, category_name: str, loaded: Category) -> None:
        again = provider.load_category(root, category_name)
        assert again.samples == loaded.samples, "loading the category twice gives different samples"
        assert (again.defects_config, again.native_size, again.has_masks) == (loaded.defects_config, loaded.native_size, loaded.has_masks)
        for s in self.picked(loaded)[:6]:
            assert np.array_equal(again.load_image(s), loaded.load_image(s)), f"{s.path}: decoded differently twice"
