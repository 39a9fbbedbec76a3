"""Standardised tumour crops for the 3D CNN (MONAI transforms), a per-case crop cache, and batched augmentation.

A crop is a cube of ``size`` voxels at isotropic ``spacing`` mm, centred on the centre of the tumour mask's
bounding box, axis-aligned with the patient's LPS axes whatever the PET's direction, made by ONE MONAI
``SpatialResample`` from the PET grid (so nothing is resampled twice and edges are zero-padded). SUV is clipped
to ``[0, suv_clip]`` and scaled to ``[0, 1]``; with ``mask_channel`` the resampled mask (nearest neighbour) is a
second channel. Tensors are channel-first ``(C, X, Y, Z)`` (MONAI's order: the first spatial axis runs along
LPS x, R->L); voxel ``(i, j, k)`` of the crop lies at LPS ``origin + spacing * (i, j, k)``.
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
from ..io.validation import require_case


@dataclass(frozen=True)
class CropSpec:
    """How a tumour crop is made: ``size`` voxels per side at ``spacing`` mm, SUV clip, optional mask channel."""

    size: int
    spacing: float
    suv_clip: float = 15.0
    mask_channel: bool = True

    @property
    def channels(self) -> int:
        return 2 if self.mask_channel else 1


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
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(sitk.Cast(mask != 0, sitk.sitkUInt8))
    if not shape.HasLabel(1):
        raise InputError("tumour mask is empty (no voxel > 0)", case=case)
    box = shape.GetBoundingBox(1)  # (x0, y0, z0, sx, sy, sz) in voxel indices
    centre_index = [box[d] + (box[d + 3] - 1) / 2.0 for d in range(3)]
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint(centre_index))
    origin = centre - spec.spacing * (spec.size - 1) / 2.0
    return CropGeometry(origin=tuple(float(v) for v in origin), spacing=float(spec.spacing), size=int(spec.size))


def preprocess_case(
    image: sitk.Image, mask: sitk.Image, spec: CropSpec, case: str | None = None
) -> tuple[torch.Tensor, CropGeometry]:
    """One standardised crop ``(C, size, size, size)`` float32 and its geometry (see the module docstring)."""
    from monai.data import MetaTensor
    from monai.transforms import ScaleIntensityRange, SpatialResample

    geometry = crop_geometry(image, mask, spec, case)
    suv = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(suv)):
        raise InputError("PET image holds NaN or infinite values", case=case)
    src_affine = torch.as_tensor(_lps_affine(image), dtype=torch.float64)
    dst_affine = torch.as_tensor(geometry.affine(), dtype=torch.float64)
    size = (spec.size,) * 3
    resample = SpatialResample(padding_mode="zeros", align_corners=True, dtype=torch.float64)

    def to_crop(array: np.ndarray, mode: str) -> torch.Tensor:
        # SimpleITK arrays are (z, y, x); MONAI wants channel-first (C, x, y, z) matching the affine's index order.
        data = MetaTensor(np.ascontiguousarray(array.transpose(2, 1, 0))[None].astype(np.float32), affine=src_affine)
        out = resample(data, dst_affine=dst_affine, spatial_size=size, mode=mode)
        return _plain(out).to(torch.float32)

    channels = [ScaleIntensityRange(0.0, spec.suv_clip, 0.0, 1.0, clip=True)(to_crop(suv, "bilinear"))]
    if spec.mask_channel:
        channels.append((to_crop(sitk.GetArrayViewFromImage(mask) != 0, "nearest") > 0.5).to(torch.float32))
    return _plain(torch.cat(channels, dim=0)).contiguous(), geometry


def crop_to_image(volume: np.ndarray, geometry: CropGeometry) -> sitk.Image:
    """A crop-shaped array ``(X, Y, Z)`` as a SimpleITK image placed where the crop lies."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(volume, dtype=np.float32).transpose(2, 1, 0)))
    image.SetSpacing((geometry.spacing,) * 3)
    image.SetOrigin(geometry.origin)
    return image


class CropCache:
    """Crops computed once per case: kept in memory, and in ``cache_dir`` (safetensors) when given.

    The key hashes the PET and mask voxels and geometry and the crop spec, so a changed input is never served
    a stale crop.
    """

    def __init__(self, spec: CropSpec, cache_dir: str | Path | None = None):
        self.spec = spec
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: dict[str, tuple[torch.Tensor, CropGeometry]] = {}

    def _key(self, image: sitk.Image, mask: sitk.Image) -> str:
        h = hashlib.sha256(repr(self.spec).encode())
        for im in (image, mask):
            h.update(repr((im.GetSize(), im.GetSpacing(), im.GetOrigin(), im.GetDirection(),
                           im.GetPixelIDValue())).encode())
            h.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(im)).tobytes())
        return h.hexdigest()[:32]

    def get(self, image: sitk.Image, mask: sitk.Image, case: str | None = None) -> tuple[torch.Tensor, CropGeometry]:
        require_case(image, mask, case)
        key = self._key(image, mask)
        if key in self._memory:
            return self._memory[key]
        item = self._read(key)
        if item is None:
            item = preprocess_case(image, mask, self.spec, case)
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
) -> tuple[torch.Tensor, list[CropGeometry]]:
    """Crops of every case stacked ``(N, C, size, size, size)`` and their geometries (through ``cache`` if given)."""
    if len(images) != len(masks):
        raise InputError(f"{len(images)} images but {len(masks)} masks")
    if len(images) == 0:
        raise InputError("no cases given")
    ids = case_ids if case_ids is not None else [f"case {i}" for i in range(len(images))]
    cache = cache if cache is not None else CropCache(spec)
    items = [cache.get(im, m, case) for im, m, case in zip(images, masks, ids)]
    return torch.stack([c for c, _ in items]), [g for _, g in items]


class BatchAugmenter:
    """Random flips, small rotations and scaling (one batched MONAI ``AffineTransform``, on the batch's device)
    plus intensity scale/shift of the SUV channel, for training batches only.

    Flips, rotations and scaling are composed into one 4x4 matrix per sample and applied in one
    ``grid_sample`` call for the whole batch: MONAI's ``RandAffine``/``RandFlip`` work one sample at a time,
    which on a GPU costs a kernel launch per sample. The intensity changes are the batched equivalent of MONAI's
    ``RandScaleIntensity``/``RandShiftIntensity`` (two tensor operations). Random parameters come from a numpy
    generator seeded by ``seed``: the same seed gives the same augmentations on any device.
    """

    def __init__(self, rotate_deg: float = 15.0, scale: float = 0.1, flip: bool = True,
                 intensity_scale: float = 0.1, intensity_shift: float = 0.05, seed: int = 0):
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
        return torch.cat([suv, (out[:, 1:] > 0.5).to(out.dtype)], dim=1)
