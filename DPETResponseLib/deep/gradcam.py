"""Grad-CAM of the 3D CNN (monai.visualize.GradCAM on the last convolutional block), averaged over the fold
models and put back on the ORIGINAL PET grid (same size, spacing, origin, direction; zero outside the crop)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from .data import CropGeometry, crop_to_image
from .nets import DeepNet


class _TwoLogits(nn.Module):
    """(-z, z) from a one-logit net: class 0 = no pCR, class 1 = pCR, as MONAI's CAM classes."""

    def __init__(self, net: DeepNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        z = self.net(x, extra)
        return torch.stack([-z, z], dim=1)


def gradcam_crop(nets: list[DeepNet], crop: torch.Tensor, extra: torch.Tensor | None, positive: bool,
                 device: torch.device) -> np.ndarray:
    """Crop-shaped map ``(X, Y, Z)``: each fold's Grad-CAM of the class ``positive`` (pCR) or not, scaled to
    max 1, then averaged over folds."""
    from monai.visualize import GradCAM

    x = crop[None].to(device)
    e = None if extra is None else extra.to(device)
    maps = []
    for net in nets:
        # Identity post-processing: MONAI's default min-max scaling divides by zero on an all-zero map.
        cam = GradCAM(nn_module=_TwoLogits(net), target_layers=f"net.{net.cam_layer}", postprocessing=lambda m: m)
        with torch.enable_grad():
            m = cam(x, class_idx=int(positive), extra=e)[0, 0].detach().float().cpu().numpy()
        peak = m.max()
        maps.append(m / peak if peak > 0 else m)
    return np.mean(maps, axis=0)


def gradcam_on_pet(nets: list[DeepNet], crop: torch.Tensor, geometry: CropGeometry, image: sitk.Image,
                   extra: torch.Tensor | None, positive: bool, device: torch.device) -> sitk.Image:
    """float32 map on ``image``'s grid, in [0, 1] (max 1 unless the map is all zero), zero outside the crop."""
    cam = crop_to_image(gradcam_crop(nets, crop, extra, positive, device), geometry)
    on_pet = sitk.Resample(cam, image, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    values = np.clip(sitk.GetArrayFromImage(on_pet), 0.0, None)
    peak = values.max()
    out = sitk.GetImageFromArray((values / peak if peak > 0 else values).astype(np.float32))
    out.CopyInformation(image)
    return out
