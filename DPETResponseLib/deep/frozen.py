"""Frozen-encoder deep features (Jang et al., Cancers 2025): a MedicalNet-pretrained 3D ResNet, never trained
here, run on the intratumoural and peritumoural region of each case; the global average of its last stage is
that region's feature vector (``dlf_<region>_<k>``).

The encoder reads no label, so every case, training or new, gets its features from the one same encoder: a single
embedding space, computed once per case like the radiomics (the CNN's fold models, trained apart, have K).

Input of the encoder, per region: the tumour-centred crop of ``deep.data`` (a cube of ``size`` voxels at
``spacing`` mm, centred on the region's bounding box, one MONAI resample from the PET grid), the SUV z-scored over
the region's voxels and 0 outside the region (the mask is applied, not given as a channel: MedicalNet's stem has
one input channel and was trained on volumes normalised by the mean and SD of their foreground).

Weights come from a local MedicalNet ``.pth`` file only (``module.conv1.weight``, ``module.layer1.0...``; its
segmentation head is dropped), never downloaded; ``"random"`` is a seeded random encoder for plumbing tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

from ..core.errors import ConfigError, InputError, unknown_names_error
from ..core.files import sha256_file
from ..core.settings import check_field_types
from .data import CropSpec, preprocess_case
from .nets import DeepNet, load_pretrained

#: The MedicalNet depths MONAI builds (BasicBlock 10/18/34, Bottleneck 50).
ENCODER_ARCHS = {"resnet10": 10, "resnet18": 18, "resnet34": 34, "resnet50": 50}
RANDOM = "random"
PREFIX = "dlf_"
INTRA, PERI = "intra", "peri"
NO_WEIGHTS = 'deep_features needs weights: a local MedicalNet .pth file, or "random" for a plumbing test'
#: SUV clip of the crops: high enough never to bind (the z-score within the region does the scaling).
SUV_CLIP = 1000.0
BATCH = 8


@dataclass
class FrozenSettings:
    """The ``deep_features`` settings: ``weights`` (a local MedicalNet .pth file, or "random"), ``arch``
    (resnet10/18/34/50), the crop (``size`` voxels at ``spacing`` mm), ``n_mrmr`` (features kept by mRMR) and
    ``n_features`` (kept by RFE)."""

    weights: str | None = None
    arch: str = "resnet34"
    size: int = 64
    spacing: float = 1.5
    n_mrmr: int = 20
    n_features: int = 5

    @classmethod
    def from_dict(cls, values: dict) -> "FrozenSettings":
        """Checked settings from a dict (unknown names, types, ranges; the weights file is checked by
        `check_weights_file`, at training only)."""
        if not isinstance(values, dict):
            raise ConfigError(f"deep_features: expected a dict of settings, got {type(values).__name__}")
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise unknown_names_error("deep_features settings", unknown, cls.__dataclass_fields__)
        if not values.get("weights"):
            raise ConfigError(NO_WEIGHTS)
        settings = cls(**values)
        check_field_types(settings, "deep_features settings")
        if settings.arch not in ENCODER_ARCHS:
            raise ConfigError(f"deep_features: unknown arch {settings.arch!r}; choose one of "
                              f"{', '.join(ENCODER_ARCHS)}")
        if settings.size < 16 or settings.spacing <= 0:
            raise ConfigError("deep_features: size must be at least 16 voxels and spacing positive (mm)")
        if not 1 <= settings.n_features <= settings.n_mrmr:
            raise ConfigError("deep_features: need 1 <= n_features <= n_mrmr (RFE keeps n_features of the mRMR "
                              "features)")
        return settings

    def check_weights_file(self) -> None:
        """A weights file that is not there is refused before any work (nothing is downloaded)."""
        if self.weights != RANDOM and not Path(self.weights).is_file():
            raise ConfigError(f"deep_features weights file not found: {self.weights} (a local MedicalNet .pth "
                              f'file; nothing is downloaded; "random" only for a plumbing test)')

    def to_dict(self) -> dict:
        return asdict(self)


def build_encoder(arch: str, seed: int = 0) -> torch.nn.Module:
    """MONAI's ResNet in MedicalNet's layout (one input channel, 7^3 stem of stride 2, max-pool, MedicalNet's
    shortcut type and downsample bias for the depth), no head: ``forward(x) -> (N, d)``, the global average of the
    last stage. Frozen (eval mode, no gradients). Initialised from ``seed`` without touching torch's global RNG."""
    if arch not in ENCODER_ARCHS:
        raise ConfigError(f"unknown frozen-encoder arch {arch!r}; choose one of {', '.join(ENCODER_ARCHS)}")
    from monai.networks.nets import resnet
    from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

    bias_downsample, shortcut = get_medicalnet_pretrained_resnet_args(ENCODER_ARCHS[arch])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = getattr(resnet, arch)(spatial_dims=3, n_input_channels=1, conv1_t_size=7, conv1_t_stride=2,
                                    no_max_pool=False, shortcut_type=shortcut, bias_downsample=bias_downsample,
                                    feed_forward=False)
    return net.eval().requires_grad_(False)


def _state_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


class FrozenEncoder:
    """A frozen encoder and the crops it reads; `features` gives the per-case table columns.

    Build it with `from_settings` (training: weights from the local file or the seed) or `from_parts` (a bundle).
    ``record``: what the bundle keeps about it (arch, weights file and its sha256, the loaded state's sha256,
    crop, intensity).
    """

    def __init__(self, net: torch.nn.Module, record: dict):
        self.net = net.eval().requires_grad_(False)
        self.record = record

    @classmethod
    def from_settings(cls, settings: FrozenSettings, seed: int = 0) -> "FrozenEncoder":
        settings.check_weights_file()
        net = build_encoder(settings.arch, seed)
        if settings.weights == RANDOM:
            source = {"weights": RANDOM, "weights_sha256": None, "seed": int(seed)}
        else:
            load_pretrained(DeepNet(net, int(net.in_planes)), settings.weights)
            source = {"weights": str(Path(settings.weights).name), "weights_sha256": sha256_file(settings.weights),
                      "seed": None}
        record = {"arch": settings.arch, **source, "state_sha256": _state_sha256(net.state_dict()),
                  "size": settings.size, "spacing": float(settings.spacing), "dim": int(net.in_planes),
                  "intensity": "SUV z-scored over the region's voxels, 0 outside the region",
                  "pooling": "global average of the last stage"}
        return cls(net, record)

    def to_parts(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(record, state dict): what a bundle stores (JSON and safetensors)."""
        return dict(self.record), {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    @classmethod
    def from_parts(cls, record: dict, state: dict[str, torch.Tensor]) -> "FrozenEncoder":
        """The encoder a bundle stored; refused unless its state is exactly the one recorded at training."""
        net = build_encoder(record["arch"])
        net.load_state_dict(state, strict=True)
        if _state_sha256(net.state_dict()) != record["state_sha256"]:
            raise InputError("the frozen encoder's weights in the bundle differ from those it was trained with "
                             "(state sha256 mismatch)")
        return cls(net, record)

    @property
    def dim(self) -> int:
        return int(self.record["dim"])

    def columns(self, region: str) -> list[str]:
        return [f"{PREFIX}{region}_{k:03d}" for k in range(self.dim)]

    def crop(self, image: sitk.Image, region: sitk.Image, case: str | None = None) -> torch.Tensor:
        """The encoder's input for one region ``(1, size, size, size)``: SUV z-scored over the region, 0 outside."""
        spec = CropSpec(size=int(self.record["size"]), spacing=float(self.record["spacing"]), suv_clip=SUV_CLIP,
                        mask_channel=True)
        crop, _ = preprocess_case(image, region, spec, case)
        suv, inside = crop[:1].double() * SUV_CLIP, crop[1:] > 0.5
        if not inside.any():
            raise InputError(f"the region has no voxel in the frozen encoder's crop at {spec.spacing:g} mm; use a "
                             "finer deep_features spacing", case=case)
        values = suv[inside]
        sd = float(values.std(unbiased=False))
        z = (suv - values.mean()) / sd if sd > 0 else torch.zeros_like(suv)
        return torch.where(inside, z, torch.zeros_like(z)).float()

    def embed(self, crops: torch.Tensor) -> np.ndarray:
        """``(N, 1, s, s, s)`` crops -> ``(N, dim)`` features (batches of 8, no gradients). Always on the CPU, in
        float32: a GPU (TF32 convolutions by default) would give a training machine other features than the
        machine that predicts."""
        with torch.inference_mode():
            out = [self.net(crops[i:i + BATCH].float()) for i in range(0, len(crops), BATCH)]
        return torch.cat(out).numpy().astype(np.float64)

    def features(self, images: list[sitk.Image], regions: dict[str, list[sitk.Image]], index) -> pd.DataFrame:
        """The per-case table columns ``dlf_<region>_<k>``: ``regions`` maps a region name (``intra``, ``peri``)
        to one 0/1 mask per image, on that image's grid; ``index`` names the cases (the table's index)."""
        index = list(index)
        if len(images) != len(index) or any(len(masks) != len(index) for masks in regions.values()):
            raise InputError(f"frozen encoder: {len(images)} images, {len(index)} cases and region masks "
                             f"{ {name: len(masks) for name, masks in regions.items()} } do not match")
        blocks = []
        for name, masks in regions.items():
            crops = torch.stack([self.crop(image, mask, str(case)) for image, mask, case in zip(images, masks, index)])
            blocks.append(pd.DataFrame(self.embed(crops), index=index, columns=self.columns(name)))
        return pd.concat(blocks, axis=1)
