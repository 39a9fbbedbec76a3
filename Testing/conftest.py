"""Shared test fixtures: where the real data lives, and small synthetic images."""

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
FAST_RADIOMICS_YAML = Path(__file__).resolve().parent / "fast_radiomics.yaml"


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
