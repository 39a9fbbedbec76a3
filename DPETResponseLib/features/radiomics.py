"""Radiomics features per tumour region (whole tumour, uptake subregions) with pyradiomics.

pyradiomics' ``RadiomicsFeatureExtractor.execute`` handles one mask per call and recomputes every filtered image
(LoG, wavelet, ...) each time. `RadiomicsExtractor.extract` runs the same pyradiomics building blocks
(``imageoperations`` checks, resampling, crops and filter generators; the extractor's ``computeShape`` and
``computeFeatures``) but filters each image once per case and reuses it for every region mask. Each filter runs on
a crop around the union of the regions, padded by what that filter needs so that its values inside the regions are
the values it gives on the whole image (see `_filter_jobs`); the features are then those of ``execute`` per region.

The engine (`engine_identity`: the pyradiomics distribution imported, its revision, the filter libraries) and its
features on a fixed synthetic probe (`engine_probe`) are stored in a bundle; `check_engine` is the rule a prediction
applies to the engine it runs with.
"""

from __future__ import annotations

import copy
import importlib.resources
import logging
import math
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import ConfigError, DPETError, InputError
from ..core.files import plain
from ..core.provenance import module_distribution, package_versions
from ..io.validation import require_case

logger = logging.getLogger(__name__)

DEFAULT_PARAMS = "radiomics_pet.yaml"
WHOLE = "whole"
# pyradiomics' LoG is SimpleITK's recursive (IIR) Gaussian, whose boundary effect decays with the distance to the
# image edge in sigmas. Measured on STS PET resampled to 1 mm (sigma 1-5 mm): inside a crop padded by 12 sigmas the
# LoG differs from the whole-image LoG by at most 2.4e-7, by 20 sigmas not at all (bitwise equal).
LOG_PAD_SIGMAS = 20


class _DropSumAverageNotice(logging.Filter):
    """pyradiomics warns on every GLCM computation that SumAverage is 2 x JointAverage (the GLCM is symmetrical):
    thirteen lines per region and case that say nothing about the input."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Sum Average = 2 * Joint Average" not in record.getMessage()


def default_params_path(kind: str = "pet") -> Path:
    """The packaged parameter file of an image kind (Resources/Parameters/radiomics_<kind>.yaml: "pet", "ct" or
    "unitless", `core.names.modality_kind`), shipped as DPETResponseLib.resources."""
    name = DEFAULT_PARAMS if kind == "pet" else f"radiomics_{kind}.yaml"
    return Path(str(importlib.resources.files("DPETResponseLib.resources").joinpath(name)))


class RadiomicsExtractor:
    """pyradiomics features of several regions of one image, each filtered image computed once per case.

    ``params``: a pyradiomics parameter file (path), a parameter dict (``{"setting": ..., "imageType": ...,
    "featureClass": ...}``) or None for the packaged PET file. ``image_types`` / ``feature_classes`` keep a subset of
    the enabled image types (e.g. ``["Original"]``) / feature classes (e.g. ``["firstorder", "glcm"]``) for quick runs.
    ``overrides`` replace pyradiomics settings (``binWidth=0.5``, ``resampledPixelSpacing=[2, 2, 2]``, ...).
    """

    def __init__(self, params=None, *, image_types=None, feature_classes=None, **overrides):
        from radiomics import featureextractor

        glcm_logger = logging.getLogger("radiomics.glcm")
        if not any(isinstance(f, _DropSumAverageNotice) for f in glcm_logger.filters):
            glcm_logger.addFilter(_DropSumAverageNotice())
        if params is None:
            params = default_params_path()
        if isinstance(params, (str, os.PathLike)):
            if not Path(params).is_file():
                raise ConfigError(f"radiomics parameter file {params} does not exist")
            params = str(params)
        elif isinstance(params, dict):
            params = copy.deepcopy(params)
        else:
            raise ConfigError(f"radiomics parameters must be a file path or a dict, got {type(params).__name__}")
        try:
            self._pyrad = featureextractor.RadiomicsFeatureExtractor(params, **overrides)
        except Exception as err:  # pykwalify's SchemaError, yaml errors: the message says which key is wrong
            source = params if isinstance(params, str) else "dict"
            raise ConfigError(f"invalid radiomics parameters ({source}): {err}") from None
        # Diagnostics are not features: they are exposed by `diagnostics` / `settings_summary` instead.
        self._pyrad.settings["additionalInfo"] = False
        if image_types is not None:
            self._pyrad.enabledImagetypes = _subset(self._pyrad.enabledImagetypes, image_types, "image type")
        if feature_classes is not None:
            self._pyrad.enabledFeatures = _subset(self._pyrad.enabledFeatures, feature_classes, "feature class")

    @classmethod
    def from_text(cls, text: str, **kwargs) -> "RadiomicsExtractor":
        """An extractor from the text of a YAML parameter file."""
        import yaml

        try:
            params = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"radiomics parameter text is not valid YAML: {err}") from None
        return cls(params, **kwargs)

    @property
    def settings(self) -> dict:
        """pyradiomics settings in use (a copy)."""
        return copy.deepcopy(self._pyrad.settings)

    def settings_summary(self) -> dict:
        """Versions, settings, image types and feature classes: the provenance of a feature table (JSON-ready)."""
        return {
            "versions": package_versions(("pyradiomics", "SimpleITK", "PyWavelets", "numpy")),
            "settings": plain(self._pyrad.settings, nonfinite="keep"),
            "image_types": plain(self._pyrad.enabledImagetypes, nonfinite="keep"),
            "feature_classes": plain(self._pyrad.enabledFeatures, nonfinite="keep"),
            "log_pad_sigmas": LOG_PAD_SIGMAS,
        }

    def diagnostics(self, image: sitk.Image, masks: dict, case: str | None = None) -> dict:
        """Per region: voxel count, bounding-box size (x, y, z) and whether pyradiomics accepts it (``problem``)."""
        from radiomics import imageoperations

        _check_inputs(image, masks, case)
        out = {}
        for region, mask in masks.items():
            mask = sitk.Cast(mask, sitk.sitkUInt32)
            label = int(self._pyrad.settings.get("label", 1))
            stats = sitk.LabelShapeStatisticsImageFilter()
            stats.Execute(mask)
            present = label in stats.GetLabels()
            entry = {"voxels": int(stats.GetNumberOfPixels(label)) if present else 0,
                     "bbox_size": list(stats.GetBoundingBox(label)[3:]) if present else [0, 0, 0],
                     "problem": None}
            try:
                imageoperations.checkMask(image, mask, **self._pyrad.settings)
            except ValueError as err:
                entry["problem"] = str(err)
            out[region] = entry
        return out

    def extract(self, image: sitk.Image, masks: dict, case: str | None = None, regions=None) -> dict[str, float]:
        """Features ``<region>_<imageType>_<class>_<feature>`` of every region; see `extract_with_warnings`."""
        features, warnings = self.extract_with_warnings(image, masks, case=case, regions=regions)
        for warning in warnings:
            logger.warning("%s", warning)
        return features

    def extract_with_warnings(self, image: sitk.Image, masks: dict, case: str | None = None,
                              regions=None) -> tuple[dict[str, float], list[str]]:
        """Features of every region in ``masks`` (name -> 0/1 mask on the image grid) and the warnings raised.

        A region that pyradiomics refuses (empty, one voxel, flat in more than one axis, not more than
        ``minimumROISize`` voxels) gets NaN features and a warning, except the ``whole`` tumour: that is an
        `InputError` naming the case. ``regions`` keeps a subset of the masks.
        """
        from radiomics import imageoperations

        _check_inputs(image, masks, case)
        if regions is not None:
            unknown = sorted(set(regions) - set(masks))
            if unknown:
                raise InputError(f"no mask for the requested region(s) {unknown}; masks given: {sorted(masks)}",
                                 case=case)
            masks = {name: masks[name] for name in masks if name in regions}
        masks_order = list(masks)
        settings = self._pyrad.settings.copy()
        masks = {name: sitk.Cast(mask, sitk.sitkUInt32) for name, mask in masks.items()}
        warnings: list[str] = []

        # As execute(): checks on the input grid, then normalisation, resampling, checks and resegmentation on the
        # grid the filters run on.
        accepted = _accepted_regions(image, masks, settings, case, warnings)
        if settings.get("normalize", False):
            image = imageoperations.normalizeImage(image, **settings)
        image, masks = self._working_grid(image, {name: masks[name] for name in accepted},
                                          [box for box, _, _ in accepted.values()], settings)
        accepted = _accepted_regions(image, masks, settings, case, warnings, resegment=True)

        features_by_region = {name: dict(self._pyrad.computeShape(image, shape_mask, box, **settings))
                              for name, (box, shape_mask, _) in accepted.items()}
        boxes = {name: box for name, (box, _, _) in accepted.items()}
        region_masks = {name: _crop(mask, boxes[name]) for name, (_, _, mask) in accepted.items()}
        union = _union_mask([mask for _, _, mask in accepted.values()], int(settings.get("label", 1)))
        for (image_type, type_settings), pad in self._filter_jobs(image.GetSpacing(), settings):
            job_box = _union_box(boxes.values(), pad, image.GetSize())
            generator = getattr(imageoperations, f"get{image_type}Image")
            for filtered, type_name, kwargs in generator(_crop(image, job_box), _crop(union, job_box), **type_settings):
                for name, box in boxes.items():
                    # execute() crops each filtered image to the region's bounding box (cropToTumorMask, no padding)
                    region_image = _crop(filtered, box - np.repeat(job_box[0::2], 2))
                    features_by_region[name].update(
                        self._pyrad.computeFeatures(region_image, region_masks[name], type_name, **kwargs))

        template = next(iter(features_by_region.values()))
        features: dict[str, float] = {}
        for name in masks_order:
            values = features_by_region.get(name)
            for key in template:
                features[f"{name}_{key}"] = float(values[key]) if values is not None else math.nan
        return features, warnings

    def _working_grid(self, image, masks, boxes, settings):
        """Image and masks on the grid the filters run on. With ``resampledPixelSpacing``: pyradiomics'
        ``resampleImage`` on the union of the regions, exactly as execute() does for one mask (B-spline image,
        nearest-neighbour masks, grid aligned to the image corner, cropped to the box padded by ``padDistance``;
        the filters then see that crop, as in execute()). Without: the input grid cropped to the union box padded
        for the widest filter (`_filter_jobs`)."""
        from radiomics import imageoperations

        if settings.get("resampledPixelSpacing") is None or settings.get("interpolator") is None:
            pad = np.max([pad for _, pad in self._filter_jobs(image.GetSpacing(), settings)], axis=0)
            box = _union_box(boxes, pad, image.GetSize())
            return _crop(image, box), {name: _crop(mask, box) for name, mask in masks.items()}
        union = _union_mask(list(masks.values()), int(settings.get("label", 1)))
        image, _ = imageoperations.resampleImage(image, union, **settings)
        return image, {name: sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                           mask.GetPixelID()) for name, mask in masks.items()}

    def _filter_jobs(self, spacing, settings):
        """(image type and its settings for one filter run, padding in voxels per axis): LoG one run per sigma,
        padded by LOG_PAD_SIGMAS sigmas; wavelet by its filter reach; Original none; other filters ``padDistance``."""
        import pywt

        spacing = np.asarray(spacing, dtype=float)
        base_pad = np.full(len(spacing), int(settings.get("padDistance", 5)))
        jobs = []
        for image_type, custom in self._pyrad.enabledImagetypes.items():
            type_settings = {**settings, **(custom or {})}
            if image_type == "LoG":
                for sigma in type_settings.get("sigma", []):
                    pad = np.maximum(base_pad, np.ceil(LOG_PAD_SIGMAS * sigma / spacing).astype(int))
                    jobs.append(((image_type, {**type_settings, "sigma": [sigma]}), pad))
            elif image_type == "Wavelet":
                wavelet = pywt.Wavelet(type_settings.get("wavelet", "coif1"))
                # pyradiomics applies a one-level SWT per level (the filter is never dilated): reach len-1 per level.
                levels = type_settings.get("start_level", 0) + type_settings.get("level", 1)
                jobs.append(((image_type, type_settings), np.maximum(base_pad, (wavelet.dec_len - 1) * levels)))
            elif image_type == "Original":
                jobs.append(((image_type, type_settings), np.zeros(len(spacing), dtype=int)))
            else:
                jobs.append(((image_type, type_settings), base_pad))
        return jobs


def _accepted_regions(image, masks, settings, case, warnings, resegment=False) -> dict:
    """name -> (bounding box, shape mask, texture mask) of each region pyradiomics accepts (``checkMask``), with
    execute()'s resegmentation (box of the resegmented mask; shape on the original mask unless resegmentShape).
    A refused ``whole`` tumour is an InputError; other refused regions are left out with a warning."""
    from radiomics import imageoperations

    accepted = {}
    for name, mask in masks.items():
        try:
            box, _ = imageoperations.checkMask(image, mask, **settings)
            shape_mask = texture_mask = mask
            if resegment and settings.get("resegmentRange") is not None:
                texture_mask = imageoperations.resegmentMask(image, mask, **settings)
                box, _ = imageoperations.checkMask(image, texture_mask, **settings)
                if settings.get("resegmentShape", False):
                    shape_mask = texture_mask
        except ValueError as err:
            if name == WHOLE:
                raise InputError(f"the whole-tumour mask cannot be analysed by pyradiomics: {err}", case=case) from None
            warnings.append(f"radiomics: region '{name}' skipped, its features are NaN: {err}")
            continue
        accepted[name] = (np.asarray(box, dtype=int), shape_mask, texture_mask)
    if not accepted:
        raise InputError(f"no region can be analysed by pyradiomics ({'; '.join(warnings)})", case=case)
    return accepted


def _check_inputs(image, masks, case):
    if not masks:
        raise InputError("radiomics needs at least one region mask", case=case)
    for name, mask in masks.items():
        require_case(image, mask, case=case, what=f"'{name}' mask")


def _union_box(boxes, pad, size) -> np.ndarray:
    """Bounding box (L_x, U_x, L_y, U_y, L_z, U_z) of several boxes, widened by ``pad`` and clipped to the image."""
    boxes = np.asarray(list(boxes))
    box = np.empty(boxes.shape[1], dtype=int)
    box[0::2] = np.maximum(boxes[:, 0::2].min(axis=0) - pad, 0)
    box[1::2] = np.minimum(boxes[:, 1::2].max(axis=0) + pad, np.asarray(size) - 1)
    return box


def _crop(image, box):
    size = np.asarray(image.GetSize())
    return sitk.Crop(image, [int(v) for v in box[0::2]], [int(v) for v in size - 1 - box[1::2]])


def _union_mask(masks, label):
    union = masks[0] == label
    for mask in masks[1:]:
        union = union | (mask == label)
    return sitk.Cast(union, sitk.sitkUInt32) * label


def _subset(enabled: dict, keep, what: str) -> dict:
    unknown = sorted(set(keep) - set(enabled))
    if unknown:
        raise ConfigError(f"{what}(s) {unknown} not enabled in the radiomics parameters (enabled: {sorted(enabled)})")
    return {name: value for name, value in enabled.items() if name in keep}


# ---- the engine: what computes the features, and whether this process computes the training's ----------------------
#: The probe (`probe_case`): grid size (x, y, z) and spacing in mm.
PROBE_SIZE = (30, 28, 24)
PROBE_SPACING = (2.0, 2.0, 2.5)
#: Largest relative difference between a probe feature recomputed here and the bundle's for the engines to count as
#: equal. Rounding alone stays far below it: on 128,415 STS features (benchmarks/radiomics_engines.py), other builds
#: and commits of pyradiomics 3.1 (SlicerRadiomics' included), SimpleITK 2.3-2.5, PyWavelets 1.6-1.9 and numpy 1.26
#: differed from this environment's by at most 3e-13; a LoG filter off by 1e-6 fails (test_radiomics_engine.py).
ENGINE_TOLERANCE = 1e-9
#: The identity fields `check_engine` compares (a difference with equal probe features is a note, not a refusal).
IDENTITY_FIELDS = ("distribution", "version", "revision", "SimpleITK", "PyWavelets", "numpy")


def engine_identity() -> dict:
    """The radiomics engine this process imports: the distribution that installed the imported ``radiomics`` package
    and its version (`core.provenance.module_distribution`; None for both where none lists it), the package's own
    version string and source revision (versioneer's, where it has one), and the versions of the libraries its
    filters and resampling run in."""
    import radiomics

    distribution, version = module_distribution(radiomics) or (None, None)
    try:
        revision = radiomics._version.get_versions().get("full-revisionid")
    except AttributeError:  # setuptools-scm builds (pyradiomics after 3.1.0) have no get_versions
        revision = None
    return {"distribution": distribution, "version": version, "module_version": str(radiomics.__version__),
            "revision": revision, **package_versions(("SimpleITK", "PyWavelets", "numpy"))}


def probe_case() -> tuple[sitk.Image, dict]:
    """A fixed PET-like image (float32 SUV) and whole-tumour mask made by integer arithmetic only, so every
    platform builds the same voxels: an ellipsoid tumour whose uptake rises towards an off-centre core, over a
    textured background, every value an odd multiple of 1/128 (never on a 0.25-SUV bin edge)."""
    z, y, x = np.indices(PROBE_SIZE[::-1], dtype=np.int64)
    radius2 = 9 * (x - 14) ** 2 + 16 * (y - 13) ** 2 + 25 * (z - 11) ** 2  # ellipsoid, semi-axes 10 x 7.5 x 6 voxels
    inside = radius2 <= 900
    core = 4 * (x - 17) ** 2 + 4 * (y - 12) ** 2 + 9 * (z - 12) ** 2
    texture = (7 * x + 11 * y + 13 * z + x * y * z) % 23
    uptake = np.where(inside, 128 + np.maximum(0, 600 - core) + 16 * texture, 64 + 4 * ((3 * x + 5 * y + 2 * z) % 9))
    image = sitk.GetImageFromArray(((2 * uptake + 1) / 128).astype(np.float32))
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    for item in (image, mask):
        item.SetSpacing(PROBE_SPACING)
    return image, {WHOLE: mask}


def engine_probe(extractor: RadiomicsExtractor) -> dict[str, float]:
    """The features ``extractor`` computes on `probe_case`: stored in a bundle at training, recomputed before a
    prediction to show that this process's engine gives the training's values."""
    image, masks = probe_case()
    return extractor.extract(image, masks, case="radiomics engine probe")


def engine_record(extractor: RadiomicsExtractor) -> dict:
    """What a bundle stores about its radiomics engine: `engine_identity` and the `engine_probe` features (a
    non-finite value as its text, "nan" or "inf": bundle.json holds no NaN)."""
    probe = {name: value if math.isfinite(value) else str(value) for name, value in engine_probe(extractor).items()}
    return {**engine_identity(), "probe": probe}


def describe_engine(identity: dict) -> str:
    """One line naming an engine (distribution, version, revision) and the filter libraries."""
    revision = f", revision {identity['revision'][:10]}" if identity.get("revision") else ""
    return (f"{identity.get('distribution') or 'radiomics'} {identity.get('version') or identity.get('module_version')}"
            f"{revision} (SimpleITK {identity.get('SimpleITK')}, PyWavelets {identity.get('PyWavelets')}, "
            f"numpy {identity.get('numpy')})")


def check_engine(recorded: dict | None, extractor: RadiomicsExtractor) -> list[str]:
    """Whether this process's radiomics engine computes the features a bundle was trained with.

    The rule: the bundle's probe features (`engine_record`) are recomputed here with ``extractor`` (the bundle's
    parameters). A different feature list, or a value differing by more than `ENGINE_TOLERANCE` (relative), raises
    DPETError naming both engines: the model would be fed features it was not trained on. Equal probe features with
    another distribution, version, revision or filter-library version give a note. A bundle without a record (written
    before engines were recorded) gives a note that the engine could not be checked. Returns the notes.
    """
    installed = engine_identity()
    if not recorded:
        return [f"the bundle does not record the radiomics engine it was trained with; this one, "
                f"{describe_engine(installed)}, could not be checked against it"]
    probe = engine_probe(extractor)
    trained = {name: float(value) for name, value in (recorded.get("probe") or {}).items()}
    if set(probe) != set(trained):
        raise DPETError(f"the radiomics engine here, {describe_engine(installed)}, computes other features "
                        f"({len(probe)}) than the bundle's, {describe_engine(recorded)} ({len(trained)}): install the "
                        f"bundle's engine{_install_hint(recorded)}")
    differences = {name: _relative_difference(probe[name], trained[name]) for name in trained}
    worst = max(differences, key=differences.get)
    if differences[worst] > ENGINE_TOLERANCE:
        n_over = sum(value > ENGINE_TOLERANCE for value in differences.values())
        raise DPETError(f"the radiomics engine here, {describe_engine(installed)}, does not reproduce the features "
                        f"of the engine the bundle was trained with, {describe_engine(recorded)}: {n_over} of "
                        f"{len(trained)} probe features differ by more than {ENGINE_TOLERANCE:g} (relative), "
                        f"{worst} by {differences[worst]:.2g}. Install the bundle's engine{_install_hint(recorded)}, "
                        "or retrain the bundle with this one")
    changed = [field for field in IDENTITY_FIELDS if recorded.get(field) != installed.get(field)]
    if not changed:
        return []
    return [f"radiomics engine {describe_engine(installed)} differs from the training's {describe_engine(recorded)} "
            f"({', '.join(changed)}) but reproduces its probe features (largest relative difference "
            f"{differences[worst]:.1g})"]


def _install_hint(recorded: dict) -> str:
    if not recorded.get("distribution"):
        return ""
    return f" (pip install {recorded['distribution']}=={recorded['version']})"


def _relative_difference(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if math.isnan(a) or math.isnan(b):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))
