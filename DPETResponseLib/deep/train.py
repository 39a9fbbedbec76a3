"""Training the deep-learning pathway: stratified k-fold CV of a 3D CNN (or ViT) on tumour crops, a fold ensemble.

Each fold model is trained on k-1 folds with AdamW and a cosine learning-rate schedule (the study's), a
class-balanced loss (``pos_weight`` = negatives / positives of the fold's training cases) and augmentation, and
early-stopped on the AUC of an inner validation split (20%, stratified) of the fold's TRAINING cases: the fold it
predicts out of fold is never used to choose anything, so the out-of-fold estimates are honest (choosing the best
epoch on the predicted fold itself would inflate them, most visibly on random labels). All fold models start
from the same initial weights (built once from ``seed``). Their embedding spaces are NOT assumed to be aligned:
``fold_outputs`` gives each fold model's own output for new cases, the kind of input (one fold model's output on a
case it did not see) that the downstream models were fit on. Same seed, same numbers on CPU.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy.special import expit

from ..core.errors import ConfigError, InputError
from ..core.files import atomic_write
from ..core.settings import check_field_types
from ..learn.pathways import pool_probabilities
from .data import (
    BatchAugmenter,
    CaseModalities,
    CohortModalities,
    CropCache,
    CropSpec,
    host_to_device,
    preprocess_cohort,
)
from .fusion_e2e import check_extra
from .nets import ARCHS, VIT, DeepNet, build_net, check_vit, load_pretrained

FORMAT = "dpet-deep-1"


@dataclass
class DeepConfig:
    """Settings of the deep pathway (see ``DeepConfig.preset`` for the named presets).

    Crop: ``size`` voxels per side at ``spacing`` mm, SUV clipped at ``suv_clip``, ``mask_channel``;
    ``modalities``: the other modalities' names (one image channel each, and a mask channel with ``mask_channel``,
    after the PET's; see ``deep.data``), ``ct_window`` (HU scaled to [0, 1]) and ``zscore_clip`` (unitless
    modalities' z-scores) say how their intensities are scaled.
    Net: ``arch`` (resnet10/18/34 from MONAI, r3d_18, or vit); for the MONAI ResNets ``width`` (widen factor),
    ``stem_kernel``, ``stem_stride`` and ``max_pool`` (MedicalNet weights need width 1, kernel 7); for the ViT
    ``vit_patch`` (voxels per patch side; must divide ``size``), ``vit_hidden``, ``vit_depth`` (blocks) and
    ``vit_heads``; ``pretrained`` (local .pth/.safetensors file or None); ``extra_dim`` (> 0: end-to-end fusion of
    that many radiomics features).
    Heat maps: ``cam_method`` (``auto``: hirescam for the CNNs, rollout for the ViT; CNNs: hirescam, gradcam,
    gradcampp; ViT: rollout; see ``deep.gradcam``), ``cam_layer`` (the CNN block they read).
    Training: ``folds``, ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``patience`` (epochs without a
    better validation AUC before stopping), ``class_balanced``, ``augment``, ``seed``, ``device`` ("auto", "cpu",
    "cuda"), ``amp`` (bf16 autocast on CUDA), ``cache_dir`` (crop cache folder or None).
    """

    arch: str = "resnet10"
    size: int = 32
    spacing: float = 2.0
    suv_clip: float = 15.0
    mask_channel: bool = True
    modalities: tuple[str, ...] = ()
    ct_window: tuple[float, float] = (-160.0, 240.0)
    zscore_clip: float = 5.0
    width: float = 0.25
    stem_kernel: int = 3
    stem_stride: int = 1
    max_pool: bool = False
    vit_patch: int = 4
    vit_hidden: int = 96
    vit_depth: int = 4
    vit_heads: int = 4
    cam_layer: str = "layer2"
    cam_method: str = "auto"
    pretrained: str | None = None
    extra_dim: int = 0
    folds: int = 5
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 10
    class_balanced: bool = True
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    cache_dir: str | None = None

    @classmethod
    def preset(cls, name: str, **overrides) -> "DeepConfig":
        """``"dpet"``: the study's r3d_18 on 64^3 crops at 1 mm, AdamW lr 1e-4, batch 8 (GPU).
        ``"cpu"``: a narrow ResNet10 (width 0.25, 3^3 stride-1 stem, no max-pool) on 32^3 crops at 2 mm.
        ``"cpu-fast"``: the same net on 24^3 at 2 mm, 20 epochs (tests, the 10-minute CPU demo).
        The CPU presets train from scratch, hence lr 3e-3. Their activation maps read layer2 (a 12^3 / 16^3 grid;
        the last block's 3^3 / 4^3 cannot localise a tumour, see ``gradcam``); dpet reads r3d_18's layer3
        (16 x 8 x 8, the grid of the same fineness relative to the crop; not yet measured on a GPU-trained net).

        Each preset also shapes the ViT for its crop (used with ``arch="vit"``): 8 mm patches (4 voxels at 2 mm:
        216 / 512 tokens on the CPU crops, hidden 96, 4 blocks of 4 heads; 8 voxels at 1 mm on dpet: 512 tokens,
        hidden 192, 6 blocks of 6 heads). ``"vit-cpu-fast"``, ``"vit-cpu"``, ``"vit-dpet"``: the ViT on those
        crops with a transformer's training from scratch: AdamW lr 1e-3 (3e-4 on dpet, not yet run on a GPU),
        weight decay 0.05, 100 epochs, patience 40. Measured on the rim/solid cohort of Testing/test_deep_train.py
        (CPU): trained on all 36 cases at a constant lr 1e-3 its training AUC stayed near 0.6 for 40-60 epochs,
        then rose (test AUC 0.94 at epoch 100; lr 3e-3, the CNN presets', never left 0.6); in that test's 3-fold
        CV (about 19 fitting cases per fold) vit-cpu-fast reached out-of-fold AUC 0.54 and test AUC 0.51 (0.51-0.55
        and 0.51-0.62 with patience 100 or batches of 4, training seeds 0-1) where the ResNet10 reaches 0.99 / 1.0:
        from scratch a ViT needs more cases than such a cohort has."""
        vit_cpu = dict(vit_patch=4, vit_hidden=96, vit_depth=4, vit_heads=4)
        presets = {
            "dpet": dict(arch="r3d_18", size=64, spacing=1.0, width=1.0, stem_kernel=7, stem_stride=2, max_pool=True,
                         cam_layer="layer3", epochs=100, batch_size=8, lr=1e-4, patience=20, vit_patch=8,
                         vit_hidden=192, vit_depth=6, vit_heads=6),
            "cpu": dict(arch="resnet10", size=32, spacing=2.0, width=0.25, stem_kernel=3, stem_stride=1, max_pool=False,
                        cam_layer="layer2", epochs=40, batch_size=16, lr=3e-3, patience=10, **vit_cpu),
            "cpu-fast": dict(arch="resnet10", size=24, spacing=2.0, width=0.25, stem_kernel=3, stem_stride=1,
                             max_pool=False, cam_layer="layer2", epochs=20, batch_size=8, lr=3e-3, patience=8,
                             **vit_cpu),
        }
        vit_training = dict(arch=VIT, weight_decay=0.05, epochs=100, patience=40)
        for crop, lr in (("dpet", 3e-4), ("cpu", 1e-3), ("cpu-fast", 1e-3)):
            presets[f"vit-{crop}"] = {**presets[crop], **vit_training, "lr": lr}
        if name not in presets:
            raise ConfigError(f"unknown deep preset {name!r}; choose one of {', '.join(presets)}")
        return cls(**{**presets[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DeepConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown deep settings: {', '.join(unknown)}")
        values = dict(values)
        for name in ("modalities", "ct_window"):  # JSON gives lists; a bundle without modalities is PET-only
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)

    @property
    def crop(self) -> CropSpec:
        return CropSpec(size=self.size, spacing=self.spacing, suv_clip=self.suv_clip, mask_channel=self.mask_channel,
                        modalities=tuple(self.modalities), ct_window=tuple(float(v) for v in self.ct_window),
                        zscore_clip=float(self.zscore_clip))

    def check(self) -> None:
        check_field_types(self, "deep settings")
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown deep architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.folds < 2 or self.epochs < 1 or self.batch_size < 2 or self.size < 8 or self.spacing <= 0:
            raise ConfigError("deep settings need folds >= 2, epochs >= 1, batch_size >= 2, size >= 8, spacing > 0")
        if any(not name for name in self.modalities) or len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"deep settings: modalities {list(self.modalities)} must be distinct, non-empty names")
        if len(self.ct_window) != 2 or not self.ct_window[0] < self.ct_window[1] or not self.zscore_clip > 0:
            raise ConfigError(f"deep settings need ct_window = (low, high) HU with low < high (got "
                              f"{list(self.ct_window)}) and zscore_clip > 0 (got {self.zscore_clip})")
        if self.arch == VIT:
            check_vit(self.size, self.vit_patch, self.vit_hidden, self.vit_depth, self.vit_heads)
        from .gradcam import heat_map_method

        heat_map_method(self.cam_method, self.arch == VIT)  # an unknown or unfitting method fails before training

    def make_net(self) -> DeepNet:
        return build_net(self.arch, self.crop.channels, self.extra_dim, self.width, self.stem_kernel,
                         self.stem_stride, self.max_pool, self.cam_layer, size=self.size, vit_patch=self.vit_patch,
                         vit_hidden=self.vit_hidden, vit_depth=self.vit_depth, vit_heads=self.vit_heads)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for but no CUDA GPU is available")
    return torch.device(name)


@contextmanager
def deterministic(device: torch.device):
    """Deterministic kernels on CPU for the duration (the previous global setting is restored)."""
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last_3d) if device.type == "cuda" else x


@torch.no_grad()
def _evaluate(net: DeepNet, crops: torch.Tensor, extra: torch.Tensor | None, device: torch.device, amp: bool,
              batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n,) and embeddings (n, d) of one net, in eval mode, float32 numpy."""
    net.eval()
    logits, embeddings = [], []
    for start in range(0, len(crops), batch_size):
        x = _to_device(crops[start:start + batch_size], device)
        e = None if extra is None else extra[start:start + batch_size].to(device)
        with _autocast(device, amp):
            emb = net.features(x, e)
            logit = net.head(emb).squeeze(1)
        logits.append(logit.float().cpu())
        embeddings.append(emb.float().cpu())
    return torch.cat(logits).numpy(), torch.cat(embeddings).numpy()


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def train_step(net: DeepNet, crops: torch.Tensor, y: torch.Tensor, extra: torch.Tensor | None, idx: torch.Tensor,
               loss_fn, optimiser, augment: BatchAugmenter | None, device: torch.device, amp: bool) -> torch.Tensor:
    """One optimiser step on cases ``idx``: gather (on ``crops``' device), move, augment on ``device``,
    channels-last, bf16 autocast on CUDA. Returns the summed loss as a device tensor (no host sync)."""
    idx_crops = host_to_device(idx, crops.device)
    x = crops[idx_crops].to(device, non_blocking=True)
    if augment is not None:
        x = augment(x)
    x = _to_device(x, device)
    e = None if extra is None else host_to_device(extra[idx], device)
    idx_y = idx_crops if y.device == crops.device else host_to_device(idx, y.device)
    with _autocast(device, amp):
        loss = loss_fn(net(x, e).float(), y[idx_y])
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return loss.detach() * len(idx)


def _train_fold(net: DeepNet, crops: torch.Tensor, y: torch.Tensor, extra: torch.Tensor | None,
                train_idx: np.ndarray, val_idx: np.ndarray, config: DeepConfig, device: torch.device,
                fold: int, bar) -> tuple[float, int]:
    """Train ``net`` in place on ``train_idx``; leaves the best-validation-AUC weights in it. Returns
    (best validation AUC, best epoch)."""
    if net.fusion is not None:
        net.fusion.fit_standardiser(extra[train_idx])
    net.to(device)
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last_3d)
    n_pos = float(y[train_idx].sum())
    pos_weight = (len(train_idx) - n_pos) / n_pos if config.class_balanced else 1.0
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batches = int(np.ceil(len(train_idx) / config.batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs * batches)
    shuffler = torch.Generator().manual_seed(config.seed * 1000 + fold)
    augment = BatchAugmenter(seed=config.seed * 1000 + fold, image_channels=config.crop.image_channels) \
        if config.augment else None
    y_val = y[val_idx].numpy()
    y_dev = y.to(device)
    best = (-np.inf, np.inf, 0, copy.deepcopy(net.state_dict()))  # (auc, loss, epoch, weights)
    for epoch in range(1, config.epochs + 1):
        net.train()
        order = train_idx[torch.randperm(len(train_idx), generator=shuffler).numpy()]
        # BatchNorm cannot train on a batch of one: a last batch of one case joins the previous batch.
        cuts = list(range(0, len(order), config.batch_size))
        if len(order) - cuts[-1] == 1 and len(cuts) > 1:
            cuts.pop()
        total = torch.zeros((), device=device)
        for i, start in enumerate(cuts):
            idx = torch.from_numpy(order[start:cuts[i + 1] if i + 1 < len(cuts) else len(order)])
            total += train_step(net, crops, y_dev, extra, idx, loss_fn, optimiser, augment, device, config.amp)
            schedule.step()
        logits, _ = _evaluate(net, crops[val_idx], None if extra is None else extra[val_idx], device, config.amp,
                              config.batch_size * 2)
        val_auc = _auc(y_val, logits)
        val_loss = float(torch.nn.functional.binary_cross_entropy_with_logits(
            torch.from_numpy(logits), torch.from_numpy(y_val).float()))
        if (val_auc, -val_loss) > (best[0], -best[1]):
            best = (val_auc, val_loss, epoch, copy.deepcopy(net.state_dict()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(fold=fold + 1, loss=f"{float(total) / len(train_idx):.3f}", val_auc=f"{val_auc:.3f}",
                            best=f"{best[0]:.3f}")
        if epoch - best[2] >= config.patience:
            if bar is not None:
                bar.update(config.epochs - epoch)
            break
    net.load_state_dict(best[3])
    return float(best[0]), int(best[2])


def _early_stopping_split(train_idx: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(cases to fit, cases to early-stop on): a stratified 20% of the fold's training cases, at least one of
    each class."""
    from sklearn.model_selection import StratifiedShuffleSplit

    n_stop = max(2, int(round(0.2 * len(train_idx))))
    split = StratifiedShuffleSplit(n_splits=1, test_size=n_stop, random_state=seed)
    fit, stop = next(split.split(np.zeros(len(train_idx)), labels[train_idx]))
    return train_idx[fit], train_idx[stop]


def _labels(y, n: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.shape != (n,) or not np.isin(labels, (0, 1)).all():
        raise InputError(f"labels must be {n} values of 0/1 (1 = pCR)")
    return labels.astype(np.int64)


def train_deep(images: list[sitk.Image], masks: list[sitk.Image], y, config: DeepConfig | None = None,
               extra=None, progress: bool = True, case_ids: list[str] | None = None,
               modalities: CohortModalities | None = None) -> "DeepModel":
    """Train the fold ensemble on the given (training) cases; see the module docstring.

    ``extra``: (n, extra_dim) radiomics matrix for end-to-end fusion (``config.extra_dim`` > 0), else None.
    ``modalities``: for each name of ``config.modalities``, (images, masks) with one entry per case, each mask on
    its own image's grid; both None where a case lacks the modality (its channels are then zero, see ``deep.data``).
    """
    from sklearn.model_selection import StratifiedKFold
    from tqdm.auto import tqdm

    config = config if config is not None else DeepConfig.preset("cpu")
    config.check()
    labels = _labels(y, len(images))
    counts = np.bincount(labels, minlength=2)
    if counts.min() < config.folds + 1:
        raise InputError(f"{config.folds}-fold CV with an early-stopping split needs at least {config.folds + 1} "
                         f"cases of each class; got {counts[1]} pCR and {counts[0]} non-pCR")
    extra_t = check_extra(extra, len(images), config.extra_dim)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    crops, _ = preprocess_cohort(images, masks, config.crop, case_ids, CropCache(config.crop, config.cache_dir),
                                 modalities)
    if device.type == "cuda":
        # The crops are small (100 cases of 2 x 64^3 float32: 210 MB): uploaded once, batches gathered on the GPU.
        crops = crops.to(device)
    y_t = torch.from_numpy(labels).float()
    with deterministic(device):
        torch.manual_seed(config.seed)
        initial = config.make_net()
        if config.pretrained:
            load_pretrained(initial, config.pretrained)
        init_state = copy.deepcopy(initial.state_dict())
        n = len(images)
        oof_prob = np.zeros(n)
        oof_embedding = np.zeros((n, initial.embed_dim), dtype=np.float32)
        fold_of_case = np.zeros(n, dtype=np.int64)
        nets, val_auc, best_epoch = [], [], []
        splits = StratifiedKFold(config.folds, shuffle=True, random_state=config.seed).split(np.zeros(n), labels)
        bar = tqdm(total=config.folds * config.epochs, desc="deep CV", disable=not progress)
        for fold, (train_idx, val_idx) in enumerate(splits):
            net = config.make_net()
            net.load_state_dict(init_state)
            fit_idx, stop_idx = _early_stopping_split(train_idx, labels, config.seed + fold)
            _, epoch = _train_fold(net, crops, y_t, extra_t, fit_idx, stop_idx, config, device, fold, bar)
            logits, emb = _evaluate(net, crops[val_idx], None if extra_t is None else extra_t[val_idx], device,
                                    config.amp, config.batch_size * 2)
            auc = _auc(labels[val_idx], logits)
            oof_prob[val_idx] = expit(logits)
            oof_embedding[val_idx] = emb
            fold_of_case[val_idx] = fold
            nets.append(net.eval())
            val_auc.append(auc)
            best_epoch.append(epoch)
        bar.close()
    return DeepModel(config, nets, oof_prob, oof_embedding, fold_of_case, val_auc, best_epoch)


class DeepModel:
    """The trained fold ensemble and its out-of-fold results on the training cases.

    ``oof_prob`` (n,): each training case's probability from the fold model that did not see it;
    ``oof_embedding`` (n, d) likewise; ``fold_of_case`` (n,); ``fold_val_auc`` and ``fold_best_epoch`` per fold.
    """

    def __init__(self, config: DeepConfig, nets: list[DeepNet], oof_prob: np.ndarray, oof_embedding: np.ndarray,
                 fold_of_case: np.ndarray, fold_val_auc: list[float], fold_best_epoch: list[int]):
        self.config = config
        self.nets = nets
        self.oof_prob = oof_prob
        self.oof_embedding = oof_embedding
        self.fold_of_case = fold_of_case
        self.fold_val_auc = list(fold_val_auc)
        self.fold_best_epoch = list(fold_best_epoch)
        self._cache = CropCache(config.crop, config.cache_dir)

    @property
    def embed_dim(self) -> int:
        return self.nets[0].embed_dim

    def _device(self) -> torch.device:
        device = resolve_device(self.config.device)
        for net in self.nets:
            net.to(device)
        return device

    def fold_outputs(self, images: list[sitk.Image], masks: list[sitk.Image], extra=None,
                     case_ids: list[str] | None = None,
                     modalities: CohortModalities | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each fold model's (probability (n,), embedding (n, d)) for the cases, in fold order (``modalities`` as
        for `train_deep`)."""
        crops, _ = preprocess_cohort(images, masks, self.config.crop, case_ids, self._cache, modalities)
        extra_t = check_extra(extra, len(images), self.config.extra_dim)
        device = self._device()
        with deterministic(device):
            outputs = [_evaluate(net, crops, extra_t, device, self.config.amp, self.config.batch_size * 2)
                       for net in self.nets]
        return [(expit(logits), embedding) for logits, embedding in outputs]

    def predict(self, images: list[sitk.Image], masks: list[sitk.Image], extra=None,
                case_ids: list[str] | None = None, modalities: CohortModalities | None = None) -> np.ndarray:
        """The fold ensemble's probability (n,): the fold models' probabilities pooled by `pool_probabilities`."""
        return pool_probabilities([prob for prob, _ in self.fold_outputs(images, masks, extra, case_ids,
                                                                         modalities)])

    def gradcam(self, image: sitk.Image, mask: sitk.Image, extra=None, case_id: str | None = None,
                modalities: CaseModalities | None = None) -> sitk.Image:
        """Heat map (``config.cam_method``: the CNN's activation map of the predicted class, the ViT's attention
        rollout), averaged over the fold models, on the PET's grid, in [0, 1]. ``modalities``: this case's
        (image, mask) per name of ``config.modalities``, (None, None) where it lacks one."""
        from .gradcam import gradcam_on_pet

        crop, geometry = self._cache.get(image, mask, case_id, modalities)
        extra_t = check_extra(extra, 1, self.config.extra_dim)
        prob = self.predict([image], [mask], None if extra_t is None else extra_t.numpy(),
                            None if case_id is None else [case_id],
                            {name: ([im], [m]) for name, (im, m) in (modalities or {}).items()})
        return gradcam_on_pet(self.nets, crop, geometry, image, extra_t, positive=bool(prob[0] >= 0.5),
                              device=self._device(), method=self.config.cam_method)

    def to_parts(self) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
        """(JSON-able config dict, {part name: state dict}) for safetensors: no pickle."""
        info = {"format": FORMAT, "config": self.config.to_dict(), "fold_val_auc": self.fold_val_auc,
                "fold_best_epoch": self.fold_best_epoch, "n_folds": len(self.nets)}
        parts = {f"fold{k}": {name: t.detach().cpu().contiguous() for name, t in net.state_dict().items()}
                 for k, net in enumerate(self.nets)}
        parts["oof"] = {"prob": torch.from_numpy(np.asarray(self.oof_prob, dtype=np.float64)),
                        "embedding": torch.from_numpy(np.ascontiguousarray(self.oof_embedding)),
                        "fold_of_case": torch.from_numpy(self.fold_of_case)}
        return info, parts

    @classmethod
    def from_parts(cls, info: dict, parts: dict[str, dict[str, torch.Tensor]]) -> "DeepModel":
        """Inverse of ``to_parts`` (the pretrained file is not needed: the fold weights hold everything)."""
        if info.get("format") != FORMAT:
            raise InputError(f"not a deep model of format {FORMAT} (got {info.get('format')!r})")
        config = DeepConfig.from_dict(info["config"])
        nets = []
        for k in range(int(info["n_folds"])):
            if f"fold{k}" not in parts:
                raise InputError(f"deep model parts lack fold{k}")
            net = config.make_net()
            try:
                net.load_state_dict(parts[f"fold{k}"])
            except RuntimeError as err:
                raise InputError(f"deep model fold{k} weights do not fit the configured net: {err}") from None
            nets.append(net.eval())
        oof = parts["oof"]
        return cls(config, nets, oof["prob"].numpy(), oof["embedding"].numpy(), oof["fold_of_case"].numpy(),
                   info["fold_val_auc"], info["fold_best_epoch"])

    def save(self, folder: str | Path) -> Path:
        """``config.json`` + ``weights.safetensors`` (keys ``<part>/<tensor>``), each written atomically."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        info, parts = self.to_parts()
        flat = {f"{part}/{name}": t for part, state in parts.items() for name, t in state.items()}
        with atomic_write(folder / "weights.safetensors") as tmp:
            save_file(flat, str(tmp))
        with atomic_write(folder / "config.json") as tmp:
            tmp.write_text(json.dumps(info, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "DeepModel":
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in ("config.json", "weights.safetensors"):
            if not (folder / name).is_file():
                raise InputError(f"deep model folder {folder} lacks {name}")
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in load_file(str(folder / "weights.safetensors")).items():
            part, name = key.split("/", 1)
            parts.setdefault(part, {})[name] = tensor
        return cls.from_parts(json.loads((folder / "config.json").read_text()), parts)

