"""Heat maps of the deep nets, averaged over the fold models and put back on the ORIGINAL PET grid (same size,
spacing, origin, direction; zero outside the crop): class activation maps for the CNNs, token attributions for the
ViT, both brought to the crop's voxels by MONAI's CAM upsampler and onto the PET by ``gradcam_on_pet``.

CNN methods (``DeepConfig.cam_method``): ``"hirescam"`` (the CNNs' default), ``"gradcam"`` and ``"gradcampp"``
(MONAI's ``GradCAM`` / ``GradCAMpp``). HiResCAM (Draelos & Carin 2020) multiplies each activation by its own gradient
before summing over channels, where Grad-CAM first averages the gradients over the whole volume. MONAI has no
HiResCAM, so it is MONAI's ``GradCAM`` with that one line changed (its hooks, upsampling and class handling
kept). Measured on the rim/solid cohort of Testing/test_deep_train.py (cpu-fast net, training seeds 0-2, two
machines), median share of the map's mass inside the tumour mask: Grad-CAM 0.06-0.20 at any block, HiResCAM
0.43-0.73 on layer2 (0.31-0.37 on layer3).

The ViT's method, one value per patch token: ``"rollout"`` (attention rollout, Abnar & Zuidema 2020; see
``attention_rollout``). It is class-agnostic: it shows where the attention takes the embedding's information from,
whichever class is predicted. On the hot-spot example of Testing/test_deep_vit.py it puts 9-11% of the map's mass
on a spot of 1.6% of the crop (9-20% over training seeds 0-4). Gradient x input on the patch tokens
(class-specific: the voxels' gradient x input summed per patch) was tried and left out: on a net trained on that
example (then with learned position embeddings) its map was all zero after the ReLU on 2 of 4 positive crops, its
sum over the tokens -0.05 to -0.09 where the logit was about +3.5 (the gradient fades through the LayerNorms of a
confident net).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
from monai.visualize import GradCAM, GradCAMpp
from torch import nn
from torch.nn import functional as F

from ..core.errors import ConfigError
from .data import CropGeometry, crop_to_image
from .nets import DeepNet, ViTBackbone


class HiResCAM(GradCAM):
    """HiResCAM: ReLU(sum over channels of gradient * activation), element-wise (MONAI's GradCAM otherwise)."""

    def compute_map(self, x, class_idx=None, retain_graph=False, layer_idx=-1, **kwargs):
        _, acti, grad = self.nn_module(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
        return F.relu((grad[layer_idx] * acti[layer_idx]).sum(1, keepdim=True))


CAM_METHODS = {"hirescam": HiResCAM, "gradcam": GradCAM, "gradcampp": GradCAMpp}
VIT_METHODS = ("rollout",)


def heat_map_method(method: str, vit: bool) -> str:
    """The method ``method`` names for the ViT (``vit``) or the CNNs (``"auto"``: the first that fits), or
    ConfigError naming the methods that fit."""
    fitting, other = (VIT_METHODS, tuple(CAM_METHODS)) if vit else (tuple(CAM_METHODS), VIT_METHODS)
    if method == "auto":
        return fitting[0]
    if method not in fitting:
        problem = f"cam_method {method!r} is for the {'CNNs' if vit else 'ViT'}" if method in other else \
            f"unknown cam_method {method!r}"
        raise ConfigError(f"{problem}; for the {'ViT' if vit else 'CNNs'} choose one of auto, {', '.join(fitting)}")
    return method


class _TwoLogits(nn.Module):
    """(-z, z) from a one-logit net: class 0 = no pCR, class 1 = pCR, as MONAI's CAM classes."""

    def __init__(self, net: DeepNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        z = self.net(x, extra)
        return torch.stack([-z, z], dim=1)


@torch.no_grad()
def attention_rollout(backbone: ViTBackbone, x: torch.Tensor) -> torch.Tensor:
    """(N, tokens): attention rollout (Abnar & Zuidema 2020). Each block's attention, averaged over heads, is mixed
    half and half with the identity (the residual path) and the blocks' matrices are multiplied, first to last; the
    embedding is the mean of the final tokens, so a patch's share is the mean of its column (the shares sum to 1)."""
    attentions = [block.attn for block in backbone.blocks]
    for attention in attentions:
        attention.save_attn = True  # MONAI's SABlock keeps its softmax weights (N, heads, T, T) in att_mat
    try:
        backbone.tokens(x)
        weights = [attention.att_mat.float().mean(dim=1) for attention in attentions]
    finally:
        for attention in attentions:
            attention.save_attn, attention.att_mat = False, torch.Tensor()
    eye = torch.eye(weights[0].shape[-1], device=x.device)
    rollout = eye.expand_as(weights[0])
    for w in weights:
        rollout = (0.5 * w + 0.5 * eye) @ rollout
    return rollout.mean(dim=1)


def _rollout_map(net: DeepNet, x: torch.Tensor) -> np.ndarray:
    """Crop-shaped ``(X, Y, Z)`` map of the ViT's attention rollout, upsampled like MONAI's CAMs (trilinear, patch
    centres on the token values)."""
    from monai.visualize.visualizer import default_upsampler

    tokens = attention_rollout(net.backbone, x)
    g = net.backbone.grid
    grid = tokens.reshape(x.shape[0], 1, g, g, g)  # token order is the crop's (X, Y, Z), see ViTBackbone
    return default_upsampler(x.shape[2:])(grid)[0, 0].float().cpu().numpy()


def _cnn_map(net: DeepNet, x: torch.Tensor, extra: torch.Tensor | None, positive: bool, method: str) -> np.ndarray:
    """Crop-shaped ``(X, Y, Z)`` class activation map of a CNN."""
    # Identity post-processing: MONAI's default min-max scaling divides by zero on an all-zero map.
    cam = CAM_METHODS[method](nn_module=_TwoLogits(net), target_layers=f"net.{net.cam_layer}",
                              postprocessing=lambda m: m)
    with torch.enable_grad():
        return cam(x, class_idx=int(positive), extra=extra)[0, 0].detach().float().cpu().numpy()


def gradcam_crop(nets: list[DeepNet], crop: torch.Tensor, extra: torch.Tensor | None, positive: bool,
                 device: torch.device, method: str = "auto") -> np.ndarray:
    """Crop-shaped map ``(X, Y, Z)``: each fold's map of the class ``positive`` (pCR) or not (``rollout`` is
    class-agnostic), scaled to max 1, then averaged over folds."""
    vit = isinstance(nets[0].backbone, ViTBackbone)
    method = heat_map_method(method, vit)
    x = crop[None].to(device)
    e = None if extra is None else extra.to(device)
    maps = []
    for net in nets:
        m = _rollout_map(net, x) if vit else _cnn_map(net, x, e, positive, method)
        peak = m.max()
        maps.append(m / peak if peak > 0 else m)
    return np.mean(maps, axis=0)


def gradcam_on_pet(nets: list[DeepNet], crop: torch.Tensor, geometry: CropGeometry, image: sitk.Image,
                   extra: torch.Tensor | None, positive: bool, device: torch.device,
                   method: str = "auto") -> sitk.Image:
    """float32 map on ``image``'s grid, in [0, 1] (max 1 unless the map is all zero), zero outside the crop."""
    cam = crop_to_image(gradcam_crop(nets, crop, extra, positive, device, method), geometry)
    on_pet = sitk.Resample(cam, image, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    values = np.clip(sitk.GetArrayFromImage(on_pet), 0.0, None)
    peak = values.max()
    out = sitk.GetImageFromArray((values / peak if peak > 0 else values).astype(np.float32))
    out.CopyInformation(image)
    return out
