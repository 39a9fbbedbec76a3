"""Standardised tumour crops for the 3D CNN (MONAI transforms), a per-case crop cache, and batched augmentation.

A crop is a cube of ``size`` voxels at isotropic ``spacing`` mm, centred on the centre of the tumour mask's
bounding box, axis-aligned with the patient's LPS axes whatever the PET's direction, made by ONE MONAI
``SpatialResample`` from the PET grid (so nothing is resampled twice and edges are zero-padded). SUV is clipped
to ``[0, suv_clip]`` and scaled to ``[0, 1]``; with ``mask_channel`` the resampled mask (nearest neighbour) is a
second channel. Tensors are channel-first ``(C, X, Y, Z)`` (MONAI's order: the first spatial axis runs along
LPS x, R->L); voxel ``(i, j, k)`` of the crop lies at LPS ``origin + spacing * (i, j, k)``.

Other modalities (``CropSpec.modalities``, e.g. ``"ct"``, ``"mr"``): one image channel each (and its own mask
channel with ``mask_channel``), in the spec's order after the PET's channels. Each is a separate acquisition with
its own tumour mask on its own grid, NOT registered to the PET: its crop is the same physical cube (``size``
voxels at ``spacing`` mm, axis-aligned LPS) centred on the centre of ITS OWN mask's bounding box, resampled from
its own grid. No registration is needed because every crop is tumour-centred in its own space; a rotation of the
patient between acquisitions (e.g. prone MR, supine PET) is ignored: each crop's axes are its own scanner's LPS
axes. Why channels of one network rather than a network per modality: the one network sees all modalities of a
case jointly (cross-modal patterns); its folds stay the study's folds (a per-modality network, trained only on the
cases that have that modality, would use other folds than the study's and break the out-of-fold stacking); and a
missing modality (image and mask None) is an all-zero image and mask channel pair, which the network sees in
training whenever training cases lack that modality. A case lacking every other modality gives exactly the
PET-only channels followed by zeros.

Intensities by the modality's kind (`core.names.modality_kind`): ``"ct"`` (HU) is clipped to ``ct_window`` and scaled to
``[0, 1]``; the default is the soft-tissue window W400/L40, ``(-160, 240)`` HU: the tumours are soft tissue (breast),
and on it fat (about -100 HU) and enhancing or non-enhancing tumour (about 20-150 HU) span 60% of the range, where
a ``(-1000, 1000)`` window would give that contrast 12% (air and bone, clipped, only need to be "low" and "high").
Every other kind (MR and unknown modalities: unitless, arbitrary scale) is z-scored with the mean and SD of the
modality's own voxels inside its own tumour mask, clipped to ``[-zscore_clip, zscore_clip]`` and scaled to
``[0, 1]``, so its absolute scale never matters. These intensities are computed on the modality's own grid before
resampling, so zero padding outside its field of view stays 0, like the PET's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..core.errors import InputError
from ..core.files import atomic_write
from ..core.names import modality_kind
from ..io.validation import require_case

#: Per case, each modality's (image, tumour mask on the image's grid), both None where the case lacks it.
CaseModalities = dict[str, tuple["sitk.Image | None", "sitk.Image | None"]]
#: Per modality, (one image per case, one mask per case), None where a case lacks the modality.
CohortModalities = dict[str, tuple[list["sitk.Image | None"], list["sitk.Image | None"]]]


@dataclass(frozen=True)
class CropSpec:
    """How a tumour crop is made: ``size`` voxels per side at ``spacing`` mm, SUV clip, optional mask channels,
    the other ``modalities`` (names, channel order after the PET's), the CT window (HU) and the z-score clip of the
    unitless modalities (see the module docstring)."""

    size: int
    spacing: float
    suv_clip: float = 15.0
    mask_channel: bool = True
    modalities: tuple[str, ...] = ()
    ct_window: tuple[float, float] = (-160.0, 240.0)
    zscore_clip: float = 5.0

    @property
    def per_modality(self) -> int:
        """Channels per modality, the PET included: the image, and its mask with ``mask_channel``."""
        return 2 if self.mask_channel else 1

    @property
    def channels(self) -> int:
        return self.per_modality * (1 + len(self.modalities))

    @property
    def image_channels(self) -> tuple[int, ...]:
        """The image channels (the PET's first); every other channel is a mask."""
        return tuple(range(0, self.channels, self.per_modality))


@dataclass(frozen=True)
class CropGeometry:
    """Where a crop lies: LPS position (mm) of voxel (0, 0, 0), isotropic spacing (mm), cube size; identity
    direction in LPS."""

    origin: tuple[float, float, float]
    spacing: float
    size: int

    def affine(self) -> np.ndarray:
        """4x4 voxel-index -> LPS-mm matrix."""
        a = np.diag([self.spacing] * 3 + [1.0])
        a[:3, 3] = self.origin
        return a


def _lps_affine(image: sitk.Image) -> np.ndarray:
    """4x4 voxel-index (x, y, z order) -> LPS-mm matrix of a SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    a = np.eye(4)
    a[:3, :3] = direction @ np.diag(image.GetSpacing())
    a[:3, 3] = image.GetOrigin()
    return a


def host_to_device(values, device: torch.device, dtype=None) -> torch.Tensor:
    """Host values (numpy, list or CPU tensor; a device tensor is moved as it is) on ``device`` without stalling
    the host: a copy from pageable memory makes CUDA wait for every queued kernel first, so each training step's
    small copies (indices, augmentation parameters) kept the CPU from queueing the next step; pinned +
    non_blocking copies do not."""
    tensor = torch.as_tensor(values, dtype=dtype)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A MONAI MetaTensor as a plain tensor (the crops carry their geometry in ``CropGeometry`` instead)."""
    from monai.data import MetaTensor

    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


def crop_geometry(image: sitk.Image, mask: sitk.Image, spec: CropSpec, case: str | None = None) -> CropGeometry:
    """The crop centred on the centre of the mask's bounding box (checks the inputs)."""
    require_case(image, mask, case)
    return _centred(image, mask, spec, case)


def _centred(image: sitk.Image, mask: sitk.Image, spec: CropSpec, case: str | None,
             what: str = "tumour mask") -> CropGeometry:
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(sitk.Cast(mask != 0, sitk.sitkUInt8))
    if not shape.HasLabel(1):
        raise InputError(f"{what} is empty (no voxel > 0)", case=case)
    box = shape.GetBoundingBox(1)  # (x0, y0, z0, sx, sy, sz) in voxel indices
    centre_index = [box[d] + (box[d + 3] - 1) / 2.0 for d in range(3)]
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint(centre_index))
    origin = centre - spec.spacing * (spec.size - 1) / 2.0
    return CropGeometry(origin=tuple(float(v) for v in origin), spacing=float(spec.spacing), size=int(spec.size))


def _to_crop(array: np.ndarray, image: sitk.Image, geometry: CropGeometry, mode: str) -> torch.Tensor:
    """``(1, size, size, size)`` float32: ``array`` (SimpleITK's (z, y, x) order, on ``image``'s grid) resampled
    onto the crop by one MONAI ``SpatialResample`` (zero padding)."""
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    src_affine = torch.as_tensor(_lps_affine(image), dtype=torch.float64)
    dst_affine = torch.as_tensor(geometry.affine(), dtype=torch.float64)
    resample = SpatialResample(padding_mode="zeros", align_corners=True, dtype=torch.float64)
    # SimpleITK arrays are (z, y, x); MONAI wants channel-first (C, x, y, z) matching the affine's index order.
    data = MetaTensor(np.ascontiguousarray(array.transpose(2, 1, 0))[None].astype(np.float32), affine=src_affine)
    out = resample(data, dst_affine=dst_affine, spatial_size=(geometry.size,) * 3, mode=mode)
    return _plain(out).to(torch.float32)


def check_modality_names(spec: CropSpec, given) -> None:
    """InputError unless the modalities ``given`` (names) are exactly the spec's."""
    given = set(given)
    configured = ", ".join(spec.modalities) if spec.modalities else "none: the PET only"
    unknown = sorted(given - set(spec.modalities))
    if unknown:
        raise InputError(f"modality {', '.join(map(repr, unknown))} is given but the CNN is not configured for it "
                         f"(DeepConfig.modalities: {configured})")
    lacking = [name for name in spec.modalities if name not in given]
    if lacking:
        raise InputError(f"the CNN is configured for modality {', '.join(map(repr, lacking))} but it is not given "
                         f"(DeepConfig.modalities: {configured}); give an image and a mask per case, None for a case "
                         "that lacks it")


def require_modality(name: str, image: sitk.Image | None, mask: sitk.Image | None, case=None) -> bool:
    """Whether the case has modality ``name`` (False: image and mask both None); InputError naming the case and
    the modality for an image without its mask (or the reverse), a non-3D or non-scalar image, or a mask not on
    its own image's grid (`io.validation.require_case`)."""
    if image is None and mask is None:
        return False
    if image is None or mask is None:
        given, absent = ("mask", "image") if image is None else ("image", "mask")
        raise InputError(f"the {name} {given} is given without its {absent} (give both, or None for both)", case=case)
    require_case(image, mask, case, what=f"{name} mask", reference=name)
    return True


def case_modalities(spec: CropSpec, modalities: CohortModalities | None, n: int) -> list[CaseModalities]:
    """The cohort's modalities case by case (checks the names against the spec and the list lengths)."""
    modalities = modalities or {}
    check_modality_names(spec, modalities)
    for name in spec.modalities:
        pair = modalities[name]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or any(len(v) != n for v in pair):
            raise InputError(f"modality {name!r} needs (images, masks), one of each per case ({n} cases; None "
                             "where a case lacks it)")
    return [{name: (modalities[name][0][i], modalities[name][1][i]) for name in spec.modalities} for i in range(n)]


def scale_modality(values: np.ndarray, inside: np.ndarray, name: str, spec: CropSpec, case=None) -> np.ndarray:
    """A modality's voxels in [0, 1] by its kind (see the module docstring); ``inside``: its tumour mask."""
    if modality_kind(name) == "ct":
        low, high = spec.ct_window
        return np.clip((values - low) / (high - low), 0.0, 1.0)
    tumour = values[inside]
    sd = float(tumour.std())
    if not sd > 0:
        raise InputError(f"the {name} image is constant inside its tumour mask ({tumour.size} voxels): it cannot "
                         "be standardised", case=case)
    c = spec.zscore_clip
    return (np.clip((values - float(tumour.mean())) / sd, -c, c) + c) / (2.0 * c)


def _modality_channels(name: str, image: sitk.Image | None, mask: sitk.Image | None, spec: CropSpec,
                       case=None) -> list[torch.Tensor]:
    """The modality's image channel (and mask channel), each ``(1, size, size, size)``; zeros where it is missing."""
    if not require_modality(name, image, mask, case):
        return [torch.zeros((1,) + (spec.size,) * 3)] * spec.per_modality
    geometry = _centred(image, mask, spec, case, what=f"{name} tumour mask")
    values = sitk.GetArrayViewFromImage(image).astype(np.float64)
    n_bad = int(np.count_nonzero(~np.isfinite(values)))
    if n_bad:
        raise InputError(f"the {name} image holds {n_bad} NaN or infinite value(s)", case=case)
    inside = sitk.GetArrayViewFromImage(mask) != 0
    channels = [_to_crop(scale_modality(values, inside, name, spec, case), image, geometry, "bilinear")]
    if spec.mask_channel:
        channels.append((_to_crop(inside, image, geometry, "nearest") > 0.5).to(torch.float32))
    return channels


def preprocess_case(
    image: sitk.Image, mask: sitk.Image, spec: CropSpec, case: str | None = None,
    modalities: CaseModalities | None = None,
) -> tuple[torch.Tensor, CropGeometry]:
    """One standardised crop ``(C, size, size, size)`` float32 and the PET crop's geometry (see the module
    docstring); ``modalities``: each of ``spec.modalities``' (image, mask), (None, None) where the case lacks it."""
    from monai.transforms import ScaleIntensityRange

    check_modality_names(spec, modalities or {})
    geometry = crop_geometry(image, mask, spec, case)
    suv = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(suv)):
        raise InputError("PET image holds NaN or infinite values", case=case)
    channels = [ScaleIntensityRange(0.0, spec.suv_clip, 0.0, 1.0, clip=True)(_to_crop(suv, image, geometry,
                                                                                       "bilinear"))]
    if spec.mask_channel:
        channels.append((_to_crop(sitk.GetArrayViewFromImage(mask) != 0, image, geometry, "nearest") > 0.5)
                        .to(torch.float32))
    for name in spec.modalities:
        channels += _modality_channels(name, *modalities[name], spec, case)
    return _plain(torch.cat(channels, dim=0)).contiguous(), geometry


def crop_to_image(volume: np.ndarray, geometry: CropGeometry) -> sitk.Image:
    """A crop-shaped array ``(X, Y, Z)`` as a SimpleITK image placed where the crop lies."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(volume, dtype=np.float32).transpose(2, 1, 0)))
    image.SetSpacing((geometry.spacing,) * 3)
    image.SetOrigin(geometry.origin)
    return image


class CropCache:
    """Crops computed once per case: kept in memory, and in ``cache_dir`` (safetensors) when given.

    The key hashes the crop spec and the voxels and geometry of the PET, its mask and every other modality's image
    and mask (or their absence), so a changed input is never served a stale crop.
    """

    def __init__(self, spec: CropSpec, cache_dir: str | Path | None = None):
        self.spec = spec
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: dict[str, tuple[torch.Tensor, CropGeometry]] = {}

    def _key(self, image: sitk.Image, mask: sitk.Image, modalities: CaseModalities) -> str:
        h = hashlib.sha256(repr(self.spec).encode())
        images = [image, mask] + [im for name in self.spec.modalities for im in modalities[name]]
        for im in images:
            if im is None:
                h.update(b"absent")
                continue
            h.update(repr((im.GetSize(), im.GetSpacing(), im.GetOrigin(), im.GetDirection(),
                           im.GetPixelIDValue())).encode())
            h.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(im)).tobytes())
        return h.hexdigest()[:32]

    def get(self, image: sitk.Image, mask: sitk.Image, case: str | None = None,
            modalities: CaseModalities | None = None) -> tuple[torch.Tensor, CropGeometry]:
        require_case(image, mask, case)
        modalities = modalities or {}
        check_modality_names(self.spec, modalities)
        for name in self.spec.modalities:
            require_modality(name, *modalities[name], case)
        key = self._key(image, mask, modalities)
        if key in self._memory:
            return self._memory[key]
        item = self._read(key)
        if item is None:
            item = preprocess_case(image, mask, self.spec, case, modalities)
            self._write(key, *item)
        self._memory[key] = item
        return item

    def _read(self, key: str) -> tuple[torch.Tensor, CropGeometry] | None:
        if self.cache_dir is None or not (self.cache_dir / f"{key}.safetensors").is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(self.cache_dir / f"{key}.safetensors"), framework="pt") as f:
            meta = f.metadata()
            crop = f.get_tensor("crop")
        origin = tuple(float(v) for v in meta["origin"].split(","))
        return crop, CropGeometry(origin=origin, spacing=float(meta["spacing"]), size=int(meta["size"]))

    def _write(self, key: str, crop: torch.Tensor, geometry: CropGeometry) -> None:
        if self.cache_dir is None:
            return
        from safetensors.torch import save_file

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        meta = {"origin": ",".join(repr(v) for v in geometry.origin), "spacing": repr(geometry.spacing),
                "size": str(geometry.size)}
        with atomic_write(self.cache_dir / f"{key}.safetensors") as tmp:
            save_file({"crop": crop.contiguous()}, str(tmp), metadata=meta)


def preprocess_cohort(
    images: list[sitk.Image],
    masks: list[sitk.Image],
    spec: CropSpec,
    case_ids: list[str] | None = None,
    cache: CropCache | None = None,
    modalities: CohortModalities | None = None,
) -> tuple[torch.Tensor, list[CropGeometry]]:
    """Crops of every case stacked ``(N, C, size, size, size)`` and their PET crops' geometries (through ``cache``
    if given); ``modalities``: per name of ``spec.modalities``, (images, masks), None where a case lacks it."""
    if len(images) != len(masks):
        raise InputError(f"{len(images)} images but {len(masks)} masks")
    if len(images) == 0:
        raise InputError("no cases given")
    per_case = case_modalities(spec, modalities, len(images))
    ids = case_ids if case_ids is not None else [f"case {i}" for i in range(len(images))]
    cache = cache if cache is not None else CropCache(spec)
    items = [cache.get(im, m, case, mods) for im, m, case, mods in zip(images, masks, ids, per_case)]
    return torch.stack([c for c, _ in items]), [g for _, g in items]


class BatchAugmenter:
    """Random flips, small rotations and scaling (one batched MONAI ``AffineTransform``, on the batch's device)
    plus intensity scale/shift of each image channel, for training batches only.

    ``image_channels`` (`CropSpec.image_channels`): the image channels, the PET's (channel 0) first; every other
    channel is a mask and stays 0/1. Each other modality's channel gets its own gain and shift, drawn after the
    PET's, and stays all zero in a sample that lacks the modality (the network's sign of a missing modality).

    Flips, rotations and scaling are composed into one 4x4 matrix per sample and applied in one
    ``grid_sample`` call for the whole batch: MONAI's ``RandAffine``/``RandFlip`` work one sample at a time,
    which on a GPU costs a kernel launch per sample. The intensity changes are the batched equivalent of MONAI's
    ``RandScaleIntensity``/``RandShiftIntensity`` (two tensor operations). Random parameters come from a numpy
    generator seeded by ``seed``: the same seed gives the same augmentations on any device.
    """

    def __init__(self, rotate_deg: float = 15.0, scale: float = 0.1, flip: bool = True,
                 intensity_scale: float = 0.1, intensity_shift: float = 0.05, seed: int = 0,
                 image_channels: tuple[int, ...] = (0,)):
        if not image_channels or image_channels[0] != 0:
            raise ValueError("the PET's channel 0 must be the first image channel")
        self.image_channels = tuple(image_channels)
        self.rotate = np.deg2rad(rotate_deg)
        self.scale, self.flip = scale, flip
        self.intensity_scale, self.intensity_shift = intensity_scale, intensity_shift
        self.rng = np.random.default_rng(seed)

    def matrices(self, n: int) -> np.ndarray:
        """``(n, 4, 4)`` pull matrices in centred voxel coordinates: flip @ rotation (x, y, z) @ scale."""
        from monai.transforms.utils import create_rotate, create_scale

        out = np.empty((n, 4, 4))
        for i in range(n):
            flips = np.where(self.rng.random(3) < 0.5, -1.0, 1.0) if self.flip else np.ones(3)
            angles = self.rng.uniform(-self.rotate, self.rotate, 3)
            zoom = self.rng.uniform(1.0 - self.scale, 1.0 + self.scale, 3)
            out[i] = create_scale(3, list(flips)) @ create_rotate(3, list(angles)) @ create_scale(3, list(zoom))
        return out

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        from monai.networks.layers import AffineTransform

        n = batch.shape[0]
        theta = host_to_device(self.matrices(n), batch.device, torch.float32)
        warp = AffineTransform(normalized=False, zero_centered=True, align_corners=True, padding_mode="zeros")
        out = _plain(warp(_plain(batch).float(), theta))
        gain = host_to_device(1.0 + self.rng.uniform(-self.intensity_scale, self.intensity_scale, n), out.device,
                              out.dtype)
        shift = host_to_device(self.rng.uniform(-self.intensity_shift, self.intensity_shift, n), out.device,
                               out.dtype)
        suv = out[:, :1] * gain.view(n, 1, 1, 1, 1) + shift.view(n, 1, 1, 1, 1)
        if out.shape[1] == 1:
            return suv
        channels = [suv]
        for c in range(1, out.shape[1]):
            if c not in self.image_channels:
                channels.append((out[:, c:c + 1] > 0.5).to(out.dtype))
                continue
            present = (_plain(batch)[:, c].flatten(1).abs().amax(dim=1) > 0).to(out.dtype).view(n, 1, 1, 1, 1)
            gain_c = host_to_device(1.0 + self.rng.uniform(-self.intensity_scale, self.intensity_scale, n),
                                    out.device, out.dtype).view(n, 1, 1, 1, 1)
            shift_c = host_to_device(self.rng.uniform(-self.intensity_shift, self.intensity_shift, n), out.device,
                                     out.dtype).view(n, 1, 1, 1, 1)
            channels.append((out[:, c:c + 1] * gain_c + shift_c) * present)
        return torch.cat(channels, dim=1)
