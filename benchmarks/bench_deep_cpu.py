"""CPU inference time per case of the deep pathway, for each preset, measured side by side in one run.

Per case: the crop (MONAI resample from a clinical-size PET) and the 5-fold ensemble's forward pass
(probability + embedding), and Grad-CAM (5 folds, back on the PET grid). Untrained weights: the time does not
depend on them.

    .venv/bin/python benchmarks/bench_deep_cpu.py [--cases 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk
import torch

from DPETResponseLib.deep.train import DeepConfig, DeepModel


def _case(rng) -> tuple[sitk.Image, sitk.Image]:
    """A dedicated-breast-PET-sized volume (180 x 180 x 120 at 1 mm) with a 12 mm tumour."""
    size = (180, 180, 120)
    arr = rng.gamma(2.0, 0.5, size[::-1]).astype(np.float32)
    z, y, x = np.ogrid[: size[2], : size[1], : size[0]]
    tumour = (x - 90) ** 2 + (y - 80) ** 2 + (z - 60) ** 2 <= 12**2
    arr[tumour] += 6.0
    image = sitk.GetImageFromArray(arr)
    mask = sitk.GetImageFromArray(tumour.astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def _model(config: DeepConfig, folds: int = 5) -> DeepModel:
    torch.manual_seed(0)
    nets = [config.make_net().eval() for _ in range(folds)]
    return DeepModel(config, nets, np.zeros(0), np.zeros((0, nets[0].embed_dim)), np.zeros(0, dtype=np.int64),
                     [0.5] * folds, [1] * folds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    warmup, *cases = [_case(rng) for _ in range(args.cases + 1)]
    print(f"CPU, {args.threads} threads, {args.cases} cases of 180x180x120 voxels, 5-fold ensemble")
    print(f"{'preset':10s} {'arch':9s} {'crop':>10s} {'predict s/case':>15s} {'Grad-CAM s/case':>16s}")
    for name in ("cpu-fast", "cpu", "dpet"):
        config = DeepConfig.preset(name, device="cpu")
        model = _model(config)
        model.predict([warmup[0]], [warmup[1]])
        start = time.perf_counter()
        for image, mask in cases:  # distinct cases: no crop-cache hit, the crop is part of the time
            model.predict([image], [mask])
        predict = (time.perf_counter() - start) / len(cases)
        start = time.perf_counter()
        for image, mask in cases:
            model.gradcam(image, mask)
        cam = (time.perf_counter() - start) / len(cases)
        print(f"{name:10s} {config.arch:9s} {config.size:>4d}^3@{config.spacing:g}mm {predict:15.3f} {cam:16.3f}")


if __name__ == "__main__":
    main()
