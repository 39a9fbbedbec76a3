"""The per-case analysis: one PET and its tumour mask -> PET metrics, metabolic subregions, radiomics per region, ITH.

`analyse_case` is the task the cohort runner caches and parallelises (`dpet-response extract`); `analyse_image`
is the same analysis on images in memory, also returning the subregion label map (used by `predict`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import SimpleITK as sitk

from .errors import InputError

REGION_LABELS = {"low": 1, "high": 2}


def default_settings() -> dict:
    """Analysis settings that change the features (they key the cache and are stored in the model bundle)."""
    return {
        "radiomics_params": None,  # None: the package's Resources/Parameters/radiomics_pet.yaml
        "habitat_k": 2,
        "habitat_radius_mm": 7.0,  # neighbourhood of the local mean/SD voxel features (subregions.local_stats)
        "habitat_seed": 0,
        "ith_dims": [2, 3],
        "ith_seed": 0,
    }


def resolve_settings(settings: dict | None) -> dict:
    """Defaults overlaid with ``settings``; the radiomics YAML's text is folded in so the cache key follows edits."""
    merged = {**default_settings(), **(settings or {})}
    merged["radiomics_params_text"] = _params_text(merged["radiomics_params"])
    return merged


def _params_text(params) -> str:
    from .radiomics import default_params_path

    path = Path(params) if params else default_params_path()
    try:
        return path.read_text()
    except OSError as err:
        raise InputError(f"cannot read the radiomics parameter file {path}: {err.strerror}") from None


@functools.lru_cache(maxsize=4)
def _extractor(params_text: str):
    """One pyradiomics-backed extractor per process and parameter text (building one parses the YAML)."""
    from .radiomics import RadiomicsExtractor

    return RadiomicsExtractor.from_text(params_text)


def analyse_image(image: sitk.Image, mask: sitk.Image, settings: dict, case_id: str):
    """Features of one tumour, with its subregion label map and the warnings raised on the way.

    Returns ``(features: dict[str, float], subregions: sitk.Image, warnings: list[str])``.
    """
    from .ith import ith_score
    from .petmetrics import pet_metrics
    from .subregions import tumour_habitats
    from .validation import check_case

    settings = settings if "radiomics_params_text" in settings else resolve_settings(settings)
    image, mask, warnings = check_case(image, mask, case_id)
    features = dict(pet_metrics(image, mask, case=case_id))

    labels, report = tumour_habitats(image, mask, k=settings["habitat_k"],
                                     local_radius_mm=settings["habitat_radius_mm"], seed=settings["habitat_seed"],
                                     case=case_id)
    warnings += report["warnings"]
    features.update(report.get("features", {}))
    region_masks = {"whole": mask}
    if settings["habitat_k"] == 2:
        for region, label in REGION_LABELS.items():
            region_masks[region] = sitk.Cast(labels == label, sitk.sitkUInt8)
    else:  # K habitats: regions habitat1..habitatK, by increasing uptake
        for label in range(1, settings["habitat_k"] + 1):
            region_masks[f"habitat{label}"] = sitk.Cast(labels == label, sitk.sitkUInt8)

    radiomics_features, radiomics_warnings = _extractor(settings["radiomics_params_text"]).extract_with_warnings(
        image, region_masks, case=case_id
    )
    features.update(radiomics_features)
    warnings += radiomics_warnings

    for dims in settings["ith_dims"]:
        features.update(ith_score(image, mask, dims=dims, seed=settings["ith_seed"], case=case_id))
    return features, labels, warnings


def analyse_case(image_path: str, mask_path: str, settings: dict, case_id: str) -> dict[str, float]:
    """Features of one manifest row (the cohort runner's task): reads the PET in SUV and its mask, then
    `analyse_image`. Its warnings are issued as `InputWarning`s, which the cohort runner collects per case."""
    import warnings

    from .io import read_mask, read_pet
    from .validation import InputWarning

    image = read_pet(image_path, case=case_id)
    mask = read_mask(mask_path, image, case=case_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # issued once below, with every other note
        features, _, notes = analyse_image(image, mask, settings, case_id)
    for note in notes:
        warnings.warn(note, InputWarning, stacklevel=2)
    return features
