"""The per-case analysis: one PET and its tumour mask -> PET metrics, metabolic subregions, radiomics per region, ITH;
another modality (CT, MR, ...) and its own tumour mask -> its radiomics, prefixed ``<modality>_whole_``.

`analyse_case` and `analyse_modality_case` are the tasks the cohort runner caches and parallelises
(`dpet-response extract`); `analyse_image` and `analyse_modality_image` are the same analyses on images in memory
(used by `predict`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

import SimpleITK as sitk

from ..core.errors import ConfigError, InputError, unknown_names_error
from ..core.names import MODALITY_NAME, PERITUMOURAL, REGION_LABELS, RESERVED_MODALITIES, modality_kind
from ..core.provenance import package_versions
from ..core.settings import check_value

HABITAT_METHODS = ("population", "tumour")
#: The library folders whose code computes the features (the stages below `features/` included): their source keys
#: the feature cache (`analysis_code`).
ANALYSIS_FOLDERS = ("core", "io", "features")
#: The column of `analyse_case`'s result holding the SUV conversion record (JSON), not a feature.
SUV_RECORD = "suv_conversion"
#: The packages (`core.provenance.PACKAGES` names) whose versions key the feature cache with that code.
ANALYSIS_PACKAGES = ("numpy", "scipy", "scikit-learn", "SimpleITK", "pyradiomics", "PyWavelets", "pydicom")
#: Keys `resolve_settings` adds (derived, never set by a user).
DERIVED_KEYS = ("radiomics_params_text", "analysis_code")


def default_settings() -> dict:
    """Analysis settings that change the features (they key the cache and are stored in the model bundle)."""
    return {
        "radiomics_params": None,  # None: the package's Resources/Parameters/radiomics_pet.yaml
        # "population": habitats shared by the cohort (relative uptake, centroids learned on the training cases by
        # `train`, kept in the bundle as habitat_model); "tumour": k-means within each tumour alone
        "habitat_method": "population",
        "habitat_model": None,
        "habitat_k": 2,
        "habitat_radius_mm": 7.0,  # neighbourhood of the local mean/SD voxel features (subregions.local_stats)
        "habitat_seed": 0,
        "ith_dims": [2, 3],
        "ith_seed": 0,
        # width (mm) of the peritumoural shell whose PET metrics and radiomics are the `peri_` features; 0: none
        "peritumoural_mm": 5.0,
        # pyradiomics parameter file per other modality ({"ct": "ct.yaml"}); a modality not named gets its kind's
        # packaged file (Resources/Parameters/radiomics_ct.yaml or radiomics_unitless.yaml)
        "modality_params": {},
    }


#: The type of each analysis setting (`core.settings.check_value` checks them).
SETTING_TYPES = {"radiomics_params": str | None, "habitat_method": str, "habitat_model": dict | None,
                 "habitat_k": int, "habitat_radius_mm": float, "habitat_seed": int, "ith_dims": list[int],
                 "ith_seed": int, "peritumoural_mm": float, "modality_params": dict, "radiomics_params_text": str,
                 "analysis_code": str}


def check_settings(settings: dict | None) -> dict:
    """Defaults overlaid with ``settings``, checked: an unknown name (with the closest known one suggested), a
    value of the wrong type, an unknown habitat method or a habitat count other than 2 raises ConfigError."""
    settings = dict(settings or {})
    known = set(default_settings()) | set(DERIVED_KEYS)
    unknown = set(settings) - known
    if unknown:
        raise unknown_names_error("analysis settings", unknown, known - set(DERIVED_KEYS))
    merged = {**default_settings(), **settings}
    for name, value in merged.items():
        check_value("analysis settings", name, value, SETTING_TYPES[name])
    if merged["habitat_method"] not in HABITAT_METHODS:
        raise ConfigError(f"unknown habitat_method {merged['habitat_method']!r}; choose from "
                          f"{', '.join(HABITAT_METHODS)}")
    if merged["peritumoural_mm"] < 0:
        raise ConfigError(f"peritumoural_mm={merged['peritumoural_mm']!r}: a width in mm, or 0 for no peritumoural "
                          "features")
    bad = [str(name) for name, path in merged["modality_params"].items()
           if not isinstance(path, str) or not re.fullmatch(MODALITY_NAME, str(name)) or name in RESERVED_MODALITIES]
    if bad:
        raise ConfigError(f"modality_params: {', '.join(bad)}: give a parameter file path per modality name (the "
                          "<modality> of the manifest's image_<modality> column), e.g. {\"ct\": \"ct.yaml\"}")
    if merged["habitat_k"] != 2:
        raise ConfigError(f"habitat_k={merged['habitat_k']!r}: only 2 habitats (low and high uptake) are supported; "
                          "the radiomics pathway, the subregion features (sub_*) and the Slicer segments are built "
                          "on exactly these two")
    return merged


def resolve_settings(settings: dict | None) -> dict:
    """`check_settings`, with the radiomics YAML's text and the analysis code's version folded in, so the cache
    key follows an edit of either."""
    merged = check_settings(settings)
    merged["radiomics_params_text"] = _params_text(merged["radiomics_params"])
    merged["analysis_code"] = analysis_code_version()
    return merged


@functools.lru_cache(maxsize=1)
def analysis_code_version() -> str:
    """sha256 of the source in `ANALYSIS_FOLDERS` and the versions of `ANALYSIS_PACKAGES`: it changes whenever the
    code that computes the features (or a library it rests on) does."""
    return code_digest(Path(__file__).parents[1])


def code_digest(package: Path) -> str:
    """`analysis_code_version` of the library's source in folder ``package`` (the `DPETResponseLib` folder)."""
    digest = hashlib.sha256()
    for folder in ANALYSIS_FOLDERS:
        for source in sorted((package / folder).rglob("*.py")):
            digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes())
    digest.update(json.dumps(package_versions(ANALYSIS_PACKAGES), sort_keys=True).encode())
    return digest.hexdigest()


def _params_text(params, kind: str = "pet") -> str:
    from .radiomics import default_params_path

    path = Path(params) if params else default_params_path(kind)
    try:
        return path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read the radiomics parameter file {path}: {err.strerror}") from None


@functools.lru_cache(maxsize=8)
def radiomics_extractor(params_text: str):
    """One pyradiomics-backed extractor per process and parameter text (building one parses the YAML): the one the
    analysis extracts with, and whose settings and engine the bundle, `predict` and the report record."""
    from .radiomics import RadiomicsExtractor

    return RadiomicsExtractor.from_text(params_text)


def analyse_image(image: sitk.Image, mask: sitk.Image, settings: dict, case_id: str, body: sitk.Image | None = None):
    """Features of one tumour, with its subregion label map and the warnings raised on the way; ``body``: a body
    or breast mask on the PET's grid that limits the peritumoural shell.

    Returns ``(features: dict[str, float], subregions: sitk.Image, warnings: list[str], shell: sitk.Image | None)``
    (``shell``: the peritumoural shell the ``peri_`` features were computed on, None with ``peritumoural_mm`` 0).
    """
    from ..io.validation import check_case
    from .ith import ith_score
    from .petmetrics import pet_metrics

    settings = settings if "radiomics_params_text" in settings else resolve_settings(settings)
    image, mask, warnings = check_case(image, mask, case_id)
    features = dict(pet_metrics(image, mask, case=case_id))

    labels, report = _habitats(image, mask, settings, case_id)
    warnings += report["warnings"]
    features.update(report.get("features", {}))
    region_masks = {"whole": mask}
    for region, label in REGION_LABELS.items():
        region_masks[region] = sitk.Cast(labels == label, sitk.sitkUInt8)
    shell = None
    if settings["peritumoural_mm"] > 0:
        shell = region_masks[PERITUMOURAL] = _peritumoural(image, mask, settings["peritumoural_mm"], features,
                                                           case_id, body)

    extractor = radiomics_extractor(settings["radiomics_params_text"])
    radiomics_features, radiomics_warnings = extractor.extract_with_warnings(image, region_masks, case=case_id)
    features.update(radiomics_features)
    warnings += radiomics_warnings

    for dims in settings["ith_dims"]:
        features.update(ith_score(image, mask, dims=dims, seed=settings["ith_seed"], case=case_id))
    return features, labels, warnings, shell


def _peritumoural(image: sitk.Image, mask: sitk.Image, width_mm: float, features: dict, case_id: str,
                  body: sitk.Image | None) -> sitk.Image:
    """The peritumoural shell; its PET metrics (``peri_pet_SUVmax``, ``peri_pet_SUVmean``, ``peri_pet_volume``
    in ml) are added to ``features``."""
    import numpy as np

    from .peritumoural import peritumoural_shell
    from .petmetrics import pet_metrics

    shell = peritumoural_shell(mask, width_mm, body=body, case=case_id)
    if not np.isfinite(sitk.GetArrayViewFromImage(image)[sitk.GetArrayViewFromImage(shell) != 0]).all():
        raise InputError(f"the PET has NaN or infinite values in the {width_mm:g} mm peritumoural shell (set "
                         "analysis.peritumoural_mm to 0 to leave the shell out)", case=case_id)
    metrics = pet_metrics(image, shell, case=case_id)
    features.update({f"{PERITUMOURAL}_pet_SUVmax": metrics["pet_SUVmax"],
                     f"{PERITUMOURAL}_pet_SUVmean": metrics["pet_SUVmean"],
                     f"{PERITUMOURAL}_pet_volume": metrics["pet_MTV"]})
    return shell


def population_habitats(settings: dict):
    """The unfitted two-stage habitat model the settings describe (relative uptake, k = ``habitat_k``)."""
    from .subregions import PopulationHabitats

    return PopulationHabitats(k=settings["habitat_k"], local_radius_mm=settings["habitat_radius_mm"],
                              relative=True, seed=settings["habitat_seed"])


def _habitats(image: sitk.Image, mask: sitk.Image, settings: dict, case_id: str):
    """Subregion label image and habitat report, by the settings' ``habitat_method``."""
    from .subregions import PopulationHabitats, habitat_report, tumour_habitats

    if settings["habitat_method"] == "tumour":
        return tumour_habitats(image, mask, k=settings["habitat_k"], local_radius_mm=settings["habitat_radius_mm"],
                               seed=settings["habitat_seed"], case=case_id)
    if not settings.get("habitat_model"):
        raise InputError("population habitats need centroids learned on training cases (analysis.habitat_model); "
                         "`dpet-response train` and `extract` fit them, or set habitat_method to 'tumour'",
                         case=case_id)
    model = PopulationHabitats.from_dict(settings["habitat_model"])
    labels = model.transform(image, mask, case=case_id)
    return labels, habitat_report(image, labels, model.k, case=case_id)


def pet_task_settings(settings: dict) -> dict:
    """The settings the PET's analysis depends on (its cache key): every one but the other modalities'."""
    return {name: value for name, value in settings.items() if name != "modality_params"}


def modality_settings(settings: dict, modality: str) -> dict:
    """The settings of one other modality's analysis (its cache key and `analyse_modality_case`'s settings): its
    name, kind, radiomics parameter text and the analysis code's version."""
    settings = check_settings(settings)
    kind = modality_kind(modality)
    return {"modality": modality, "kind": kind,
            "radiomics_params_text": _params_text(settings["modality_params"].get(modality), kind),
            "analysis_code": analysis_code_version()}


def analyse_modality_image(image: sitk.Image, mask: sitk.Image, settings: dict, case_id: str):
    """Radiomics of another modality's tumour (``<modality>_whole_<imageType>_<class>_<feature>``) and the warnings
    raised; ``settings`` from `modality_settings`. The image's units are checked by its kind (`io.validation`)."""
    from ..io.validation import check_case

    modality = settings["modality"]
    image, mask, warnings = check_case(image, mask, case_id, kind=settings["kind"], what=f"{modality} image")
    features, radiomics_warnings = radiomics_extractor(settings["radiomics_params_text"]).extract_with_warnings(
        image, {"whole": mask}, case=case_id)
    return {f"{modality}_{name}": value for name, value in features.items()}, warnings + radiomics_warnings


def analyse_modality_case(image_path: str, mask_path: str, settings: dict, case_id: str) -> dict[str, float]:
    """`analyse_modality_image` of one manifest row's modality (a cohort task): its image and tumour mask (which
    must lie on the image's grid) read from files; its warnings are issued as `InputWarning`s."""
    import warnings

    from ..io.images import read_mask, read_modality
    from ..io.validation import InputWarning

    image = read_modality(image_path, settings["modality"], case=case_id)
    mask = read_mask(mask_path, image, case=case_id, reference_name=f"{settings['modality']} image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        features, notes = analyse_modality_image(image, mask, settings, case_id)
    for note in notes:
        warnings.warn(note, InputWarning, stacklevel=2)
    return features


def habitat_supervoxels(image_path: str, mask_path: str, settings: dict, case_id: str) -> dict:
    """Stage 1 of the population habitats for one manifest row (a cohort task, cached): the tumour's supervoxels
    as JSON rows ``[relative SUV, relative local SD, voxels]``."""

    import numpy as np

    from ..io.images import read_mask, read_pet
    from ..io.validation import check_case

    image = read_pet(image_path, case=case_id)
    image, mask, _ = check_case(image, read_mask(mask_path, image, case=case_id), case_id)
    features, counts = population_habitats(settings).supervoxel_features(image, mask, case=case_id)
    return {"supervoxels": json.dumps(np.column_stack([features, counts]).round(8).tolist())}


def analyse_case(image_path: str, mask_path: str, settings: dict, case_id: str,
                 body_mask: str | None = None) -> dict[str, float | str]:
    """Features of one manifest row (the cohort runner's task): reads the PET in SUV, its mask and its body mask
    (if any), then `analyse_image`; ``SUV_RECORD`` holds how the SUV was obtained (`io.suv`, as JSON). Its warnings
    are issued as `InputWarning`s, which the cohort runner collects per case."""
    import warnings

    from ..io.images import read_mask, read_pet_with_provenance
    from ..io.validation import InputWarning

    image, suv_record = read_pet_with_provenance(image_path, case=case_id)
    mask = read_mask(mask_path, image, case=case_id)
    body = read_mask(body_mask, image, case=case_id) if body_mask else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # issued once below, with every other note
        features, _, notes, _ = analyse_image(image, mask, settings, case_id, body=body)
    for note in notes:
        warnings.warn(note, InputWarning, stacklevel=2)
    return {**features, SUV_RECORD: json.dumps(suv_record, default=str)}
