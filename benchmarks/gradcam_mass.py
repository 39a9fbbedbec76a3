"""Share of the heat map's mass inside the tumour: HiResCAM vs MONAI's Grad-CAM, per block, over training seeds.

Cohort and net: the rim/solid cohort of Testing/test_deep_train.py (imported from there: pCR = solid uptake, no pCR =
rim around a cold core, a label-independent hot distractor outside the tumour in 60% of cases; 36 training cases of
cohort seed 1, 24 test cases of cohort seed 2) and that test's CNN: preset cpu-fast (ResNet10, 24^3 crops at 2 mm),
its CONFIG (3 folds, 30 epochs, CPU) with ``seed`` set to each training seed of ``--seeds``. Per test case, the map
of the predicted class (`DeepModel.gradcam`, averaged over the fold models, on the PET grid) is computed with each
method on each block of ``--layers`` (the same trained nets); the share is sum(map inside the mask) / sum(map), as
the test's ``_mass_inside``. Prints the median (min-max) share over the 24 test cases per seed, method and block,
the median within 2 voxels of the mask (the test's second bound), and the range of medians over seeds. The tumour
fills about 3% of the crop: a map blind to it holds about 3% there.

    .venv/bin/python benchmarks/gradcam_mass.py [--seeds 0 1 2] [--layers layer2 layer3] [--jobs 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Testing"))  # the test's cohort and CNN settings

METHODS = ("hirescam", "gradcam")


def mass_inside(cam, mask, dilate: int = 0) -> float:
    """Share of the map's mass inside the mask (dilated by ``dilate`` voxels), as test_deep_train's _mass_inside."""
    import SimpleITK as sitk

    values = sitk.GetArrayFromImage(cam)
    region = mask if dilate == 0 else sitk.BinaryDilate(mask, (dilate,) * 3)
    return float(values[sitk.GetArrayFromImage(region) > 0].sum() / values.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[2:]))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (DeepConfig.seed)")
    parser.add_argument("--layers", nargs="+", default=["layer2", "layer3"], help="blocks the maps read")
    parser.add_argument("--jobs", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()

    import torch
    from sklearn.metrics import roc_auc_score
    from test_deep_train import CONFIG, make_cohort

    from DPETResponseLib.deep.train import DeepConfig, train_deep

    torch.set_num_threads(args.jobs)  # one thread is several times faster than oversubscribed OpenMP on 2 cores
    images, masks, y = make_cohort(36, seed=1)
    test_images, test_masks, test_y = make_cohort(24, seed=2)
    print(f"torch {torch.__version__}, {args.jobs} thread(s); rim/solid cohort (Testing/test_deep_train.py): 36 "
          f"training, 24 test cases; cpu-fast, {CONFIG}")
    medians = {(m, layer): [] for layer in args.layers for m in METHODS}
    print("per cell: median share inside the mask (min-max over the 24 test cases) | median within 2 voxels")
    print(f"{'seed':>4s} {'oof AUC':>8s} {'test AUC':>8s} {'train s':>8s}  " +
          "  ".join(f"{m + ' ' + layer:>25s}" for layer in args.layers for m in METHODS))
    for seed in args.seeds:
        started = time.perf_counter()
        model = train_deep(images, masks, y, DeepConfig.preset("cpu-fast", **{**CONFIG, "seed": seed}),
                           progress=False)
        seconds = time.perf_counter() - started
        test_auc = roc_auc_score(test_y, model.predict(test_images, test_masks))
        cells = []
        for layer in args.layers:
            for net in model.nets:
                net.cam_layer = f"backbone.{layer}"
            for method in METHODS:
                model.config.cam_method = method
                cams = [model.gradcam(image, mask) for image, mask in zip(test_images, test_masks)]
                shares = [mass_inside(cam, mask) for cam, mask in zip(cams, test_masks)]
                near = [mass_inside(cam, mask, dilate=2) for cam, mask in zip(cams, test_masks)]
                medians[(method, layer)].append(float(np.median(shares)))
                cells.append(f"{np.median(shares):.2f} ({min(shares):.2f}-{max(shares):.2f}) | {np.median(near):.2f}")
        print(f"{seed:4d} {roc_auc_score(y, model.oof_prob):8.3f} {test_auc:8.3f} {seconds:8.0f}  "
              + "  ".join(f"{c:>25s}" for c in cells), flush=True)
    print("\nmedian share inside the tumour mask over the 24 test cases: range of the medians over training seeds "
          f"{args.seeds}")
    for (method, layer), values in medians.items():
        print(f"  {method:9s} {layer}: {min(values):.2f}-{max(values):.2f} (mean {np.mean(values):.2f})")


if __name__ == "__main__":
    main()
