"""Seeded threshold segmentation against the expert masks of the 35 STS FDG-PET cases.

Seed: the expert mask's SUVmax voxel. Prints the Dice per case for several relative thresholds side by side,
and the median Dice of each. Run: .venv/bin/python benchmarks/bench_segmentation.py [data folder]
"""

import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from DPETResponseLib.features.segmentation import segment_from_seed

RELATIVE = (0.30, 0.41, 0.50)
DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/data/sts_pet"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def main() -> None:
    cases = sorted(p for p in DATA.glob("STS_*") if p.is_dir())
    if not cases:
        sys.exit(f"no STS_* cases under {DATA}")
    print("case     expert_ml  " + "  ".join(f"dice@{r:.2f}" for r in RELATIVE) + "  " +
          "  ".join(f"ml@{r:.2f}" for r in RELATIVE))
    scores = {r: [] for r in RELATIVE}
    seconds = 0.0
    for case in cases:
        image = sitk.ReadImage(str(case / "PET_image.nii.gz"), sitk.sitkFloat32)
        expert = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "PET_mask.nii.gz"))) > 0
        suv = sitk.GetArrayViewFromImage(image)
        peak_zyx = np.unravel_index(np.argmax(np.where(expert, suv, -np.inf)), suv.shape)
        seed = image.TransformIndexToPhysicalPoint([int(v) for v in peak_zyx[::-1]])
        voxel_ml = np.prod(image.GetSpacing()) / 1000
        row, volumes = [], []
        for r in RELATIVE:
            start = time.perf_counter()
            mask = sitk.GetArrayFromImage(segment_from_seed(image, seed_xyz=seed, relative=r, case=case.name)) > 0
            seconds += time.perf_counter() - start
            scores[r].append(dice(mask, expert))
            row.append(f"{scores[r][-1]:9.3f}")
            volumes.append(f"{mask.sum() * voxel_ml:8.1f}")
        print(f"{case.name}  {expert.sum() * voxel_ml:9.1f}  " + "  ".join(row) + "  " + "  ".join(volumes))
    print("median   " + " " * 11 + "  ".join(f"{np.median(scores[r]):9.3f}" for r in RELATIVE))
    print("IQR      " + " " * 11 + "  ".join(
        f"{np.percentile(scores[r], 75) - np.percentile(scores[r], 25):9.3f}" for r in RELATIVE))
    print(f"{len(cases)} cases x {len(RELATIVE)} thresholds segmented in {seconds:.2f} s "
          f"({1000 * seconds / (len(cases) * len(RELATIVE)):.1f} ms per segmentation)")


if __name__ == "__main__":
    main()
