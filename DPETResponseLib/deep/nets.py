"""Nets for tumour crops: the 3D CNNs MONAI ResNet10/18/34 and r3d_18 (torchvision's VideoResNet layout and
parameter names, with a 1- or 2-channel stem), and a 3D vision transformer (MONAI's ViT blocks), each wrapped with a
one-logit head, optional end-to-end radiomics fusion, and pretrained weights loaded from a local file only.

Every net is a ``DeepNet``: ``features(x, extra=None) -> (N, d)`` penultimate embedding, ``head`` (Linear d->1),
``forward(x, extra=None) -> (N,)`` logits, ``cam_layer`` the name of the module its heat map reads (a CNN block for
Grad-CAM; the ViT's transformer blocks for attention rollout).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..core.errors import ConfigError, InputError
from .fusion_e2e import RadiomicsProjection

MONAI_RESNETS = {"resnet10": 10, "resnet18": 18, "resnet34": 34}
VIT = "vit"
ARCHS = (*MONAI_RESNETS, "r3d_18", VIT)


# --- r3d_18 -------------------------------------------------------------------------------------------------
# torchvision cannot be installed beside the pinned torch wheel, so the VideoResNet r3d_18 layout is defined
# here with the same module names (stem.0, layer1.0.conv1.0, ..., downsample.0/1) so that a Kinetics-400
# state dict loads into it unchanged (only the stem's input channels are adapted, see load_pretrained).

class Conv3DSimple(nn.Conv3d):
    """3x3x3 convolution without bias (torchvision's Conv3DSimple)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1):
        super().__init__(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Residual block: (conv-BN-ReLU, conv-BN) + shortcut, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Sequential(Conv3DSimple(in_planes, planes, stride), nn.BatchNorm3d(planes),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(Conv3DSimple(planes, planes), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + shortcut)


class R3D18(nn.Module):
    """r3d_18 backbone (no fc): stem Conv3d 3x7x7 stride (1, 2, 2), four stages of two BasicBlocks
    (64, 128, 256, 512 channels), global average pooling -> (N, 512). The stem's 3-voxel kernel axis is the
    crop's first spatial axis (the "time" axis of a video model)."""

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, 64, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
        )
        planes_in = 64
        for i, planes in enumerate((64, 128, 256, 512), start=1):
            stride = 1 if i == 1 else 2
            downsample = None
            if stride != 1 or planes_in != planes:
                downsample = nn.Sequential(
                    nn.Conv3d(planes_in, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(planes)
                )
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(planes_in, planes, stride, downsample),
                                                     BasicBlock(planes, planes)))
            planes_in = planes
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.avgpool(x).flatten(1)


# --- the 3D vision transformer ---------------------------------------------------------------------------------

def check_vit(size: int, patch: int, hidden: int, depth: int, heads: int) -> None:
    """ConfigError unless the ViT settings fit a ``size``^3 crop (the one check of them, for DeepConfig and
    build_net): the patch divides the crop into at least 2 patches per side; the hidden size is a multiple of the
    heads and of 6 (MONAI's 3D sine-cosine position embedding)."""
    if min(patch, hidden, depth, heads) < 1:
        raise ConfigError(f"ViT settings must be positive: vit_patch={patch}, vit_hidden={hidden}, "
                          f"vit_depth={depth}, vit_heads={heads}")
    if size % patch or size // patch < 2:
        raise ConfigError(f"the ViT's patch ({patch} voxels) must divide the crop size ({size} voxels) into at "
                          f"least 2 patches per side; choose vit_patch among "
                          f"{', '.join(str(p) for p in range(1, size // 2 + 1) if size % p == 0)}")
    if hidden % heads or hidden % 6:
        raise ConfigError(f"vit_hidden ({hidden}) must be a multiple of vit_heads ({heads}) and of 6 (the 3D "
                          "sine-cosine position embedding)")


class ViTBackbone(nn.Module):
    """3D ViT without class token: the crop cut into ``patch``^3-voxel patches, each a token (MONAI's
    ``PatchEmbeddingBlock``: strided convolution + fixed 3D sine-cosine position embedding), ``depth`` pre-norm MONAI
    ``TransformerBlock``s (``heads`` heads, MLP 4 x ``hidden``, qkv bias), a final LayerNorm, and the mean of the
    patch tokens as the embedding -> (N, hidden).

    The modules are those of ``monai.networks.nets.ViT(classification=False)`` under the same names
    (``patch_embedding``, ``blocks``, ``norm``), so such a ViT's state dict loads here. Token ``t`` is patch
    ``(t // g^2, t // g % g, t % g)`` of the crop's ``(X, Y, Z)`` axes, ``g = grid`` patches per side.
    """

    def __init__(self, in_channels: int, size: int, patch: int, hidden: int, depth: int, heads: int):
        super().__init__()
        check_vit(size, patch, hidden, depth, heads)
        from monai.networks.nets import ViT

        with warnings.catch_warnings():  # MONAI's sine-cosine table calls torch.meshgrid without `indexing` ("ij")
            warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
            vit = ViT(in_channels=in_channels, img_size=size, patch_size=patch, hidden_size=hidden,
                      mlp_dim=4 * hidden, num_layers=depth, num_heads=heads, proj_type="conv",
                      pos_embed_type="sincos", classification=False, spatial_dims=3, qkv_bias=True)
        self.patch_embedding, self.blocks, self.norm = vit.patch_embedding, vit.blocks, vit.norm
        self.grid = size // patch

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(N, grid^3, hidden): the patch tokens after the last block and the final norm."""
        x = self.patch_embedding(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x).mean(dim=1)


# --- the wrapper every arch shares ------------------------------------------------------------------------------

class DeepNet(nn.Module):
    """Backbone -> embedding (+ projected radiomics when ``extra_dim`` > 0) -> ``head`` (one logit).
    ``cam_layer``: the backbone module the heat map reads (``backbone.layer4``, the last block, unless told
    otherwise)."""

    def __init__(self, backbone: nn.Module, embed_dim: int, extra_dim: int = 0, cam_layer: str = "layer4"):
        super().__init__()
        self.backbone = backbone
        self.cam_layer = f"backbone.{cam_layer}"
        self.embed_dim = embed_dim
        self.fusion = RadiomicsProjection(extra_dim, embed_dim) if extra_dim > 0 else None
        self.head = nn.Linear(embed_dim, 1)

    def features(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        embedding = self.backbone(x)
        if self.fusion is not None:
            if extra is None:
                raise InputError("this deep model fuses radiomics features: pass `extra`")
            embedding = self.fusion(embedding, extra)
        return embedding

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, extra)).squeeze(1)


def build_net(arch: str, in_channels: int, extra_dim: int = 0, width: float = 1.0, stem_kernel: int = 7,
              stem_stride: int = 2, max_pool: bool = True, cam_layer: str = "layer4", *, size: int = 32,
              vit_patch: int = 4, vit_hidden: int = 96, vit_depth: int = 4, vit_heads: int = 4) -> DeepNet:
    """A freshly initialised net (uses torch's global RNG: seed it first). ``cam_layer``: layer1..layer4.

    ``width``, ``stem_kernel``, ``stem_stride`` and ``max_pool`` shape the MONAI ResNets (MedicalNet-compatible
    shortcuts: type B without downsample bias for ResNet10, type A for 18/34); r3d_18 has torchvision's fixed layout.
    The ViT (``arch="vit"``) is shaped by the crop ``size`` and ``vit_*`` (see ``ViTBackbone``; ``cam_layer`` and
    the ResNet settings do not apply to it).
    """
    if arch == VIT:
        backbone = ViTBackbone(in_channels, size, vit_patch, vit_hidden, vit_depth, vit_heads)
        return DeepNet(backbone, vit_hidden, extra_dim, cam_layer="blocks")  # attention rollout reads the blocks
    if arch == "r3d_18":
        if width != 1.0:
            raise InputError("r3d_18 has a fixed width (1.0) so that Kinetics weights fit")
        return DeepNet(R3D18(in_channels), 512, extra_dim, cam_layer)
    if arch not in MONAI_RESNETS:
        raise ConfigError(f"unknown deep architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    from monai.networks.nets import resnet
    from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

    depth = MONAI_RESNETS[arch]
    bias_downsample, shortcut = get_medicalnet_pretrained_resnet_args(depth)
    backbone = getattr(resnet, arch)(
        spatial_dims=3, n_input_channels=in_channels, num_classes=1, feed_forward=False, conv1_t_size=stem_kernel,
        conv1_t_stride=stem_stride, no_max_pool=not max_pool, widen_factor=width, shortcut_type=shortcut,
        bias_downsample=bias_downsample,
    )
    return DeepNet(backbone, int(512 * width), extra_dim, cam_layer)


# --- pretrained weights from a local file ----------------------------------------------------------------------

_HEAD_PREFIXES = ("fc.", "conv_seg.")  # classification head (torchvision, MONAI) and MedicalNet's segmentation head
_STEMS = ("conv1.weight", "stem.0.weight", "patch_embedding.patch_embeddings.weight")  # ResNet, r3d_18, ViT


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InputError(f"pretrained weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is the user's input problem
        raise InputError(f"cannot read pretrained weights {path}: {err}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # MedicalNet checkpoints: {"state_dict": ..., ...}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} does not hold a state dict of tensors")
    return state


def _strip(key: str) -> str:
    for prefix in ("module.", "backbone."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _adapt_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB stems are summed to one channel (the response to a grey input, R = G = B); channels the checkpoint
    lacks (the mask channel) start at zero, so the pretrained filters see the PET exactly as before."""
    if weight.shape[1] == 3:
        weight = weight.sum(dim=1, keepdim=True)
    if weight.shape[1] < in_channels:
        pad = torch.zeros(weight.shape[0], in_channels - weight.shape[1], *weight.shape[2:], dtype=weight.dtype)
        weight = torch.cat([weight, pad], dim=1)
    return weight


def load_pretrained(net: DeepNet, path: str | Path) -> int:
    """Load a local checkpoint into ``net.backbone``; returns how many tensors were loaded.

    Accepts MedicalNet ResNet checkpoints (``module.`` prefixes, ``conv_seg`` head dropped) for the MONAI ResNets,
    torchvision Kinetics-400 ``r3d_18`` state dicts (``fc`` dropped) and MONAI ``ViT(classification=False)`` state
    dicts of the same shape for the ViT, ``.pth`` or ``.safetensors``. Nothing is
    downloaded. Raises InputError, saying how many tensors matched, unless every backbone tensor is found with
    the right shape and the file holds no other backbone tensor.
    """
    path = Path(path)
    source = {_strip(k): v for k, v in _read_state_dict(path).items() if not _strip(k).startswith(_HEAD_PREFIXES)}
    target = net.backbone.state_dict()
    in_channels = next(target[k].shape[1] for k in _STEMS if k in target)
    for key in _STEMS:
        if key in source and source[key].ndim == 5:
            source[key] = _adapt_stem(source[key], in_channels)
    optional = {k for k in target if k.endswith("num_batches_tracked")}  # absent from old checkpoints
    matched = [k for k in target if k in source and source[k].shape == target[k].shape]
    wrong_shape = [k for k in target if k in source and source[k].shape != target[k].shape]
    missing = [k for k in target if k not in source and k not in optional]
    unexpected = [k for k in source if k not in target]
    if wrong_shape or missing or unexpected:
        details = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("wrong shape", wrong_shape), ("missing", missing), ("not in this net", unexpected))
            if keys
        )
        raise InputError(
            f"pretrained weights {path} do not fit this {type(net.backbone).__name__} backbone: "
            f"{len(matched)} of {len(target) - len(optional)} tensors matched ({details})"
        )
    net.backbone.load_state_dict({k: source[k] for k in matched}, strict=False)
    return len(matched)
