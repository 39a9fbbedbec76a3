"""Shared test fixtures: where the real data lives, and small synthetic images."""

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
FAST_RADIOMICS_YAML = Path(__file__).resolve().parent / "fast_radiomics.yaml"


def assert_heat_map_on_pet_grid(heat, image) -> None:
    """A heat map (Grad-CAM, attention rollout) as the library returns it: float32 on exactly the PET's grid,
    normalised to [0, 1] with its peak at 1."""
    import numpy as np
    import SimpleITK as sitk

    assert heat.GetSize() == image.GetSize() and heat.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(heat.GetSpacing(), image.GetSpacing())
    np.testing.assert_array_equal(heat.GetOrigin(), image.GetOrigin())
    np.testing.assert_array_equal(heat.GetDirection(), image.GetDirection())
    values = sitk.GetArrayFromImage(heat)
    assert values.min() >= 0.0 and values.max() == pytest.approx(1.0)


def edit_dicom_tags(ds, tags: dict) -> None:
    """Set DICOM tags by keyword on a pydicom dataset; None deletes one, ``Radio_<keyword>`` edits the
    RadiopharmaceuticalInformationSequence item."""
    for keyword, value in tags.items():
        target = ds.RadiopharmaceuticalInformationSequence[0] if keyword.startswith("Radio_") else ds
        keyword = keyword.removeprefix("Radio_")
        if value is None:
            if keyword in target:
                delattr(target, keyword)
        else:
            setattr(target, keyword, value)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA} (expected ../shared/data beside the checkout)")
    return SHARED_DATA
