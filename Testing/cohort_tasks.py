"""Cohort-runner test support: top-level (picklable) tasks that worker processes and the kill test's subprocess
import by name (each reads the case, validates it with `check_case` and returns numbers computable by hand), and
small synthetic cases."""

from __future__ import annotations

import os
import time

import numpy as np
import SimpleITK as sitk

from DPETResponseLib.io.images import read_image, read_pet
from DPETResponseLib.io.validation import check_case


def tumour_stats(image_path: str, mask_path: str, settings: dict, case_id: str) -> dict[str, float]:
    """Mean/max SUV and voxel count in the tumour, the mean times ``settings['scale']``; sleeps
    ``settings['sleep']`` s and appends ``case_id`` to ``settings['log']`` (if given) so tests can count calls.
    The mask is read as it is (not put on the PET grid) so that `check_case` judges it."""
    image = read_pet(image_path, case=case_id)
    image, mask, _ = check_case(image, read_image(mask_path, case=case_id), case_id)
    values = sitk.GetArrayViewFromImage(image)[sitk.GetArrayViewFromImage(mask) > 0]
    time.sleep(settings.get("sleep", 0.0))
    if settings.get("log"):
        with open(settings["log"], "a") as log:
            log.write(f"{case_id}\n")
    return {"mean": float(values.mean()), "max": np.float32(values.max()), "voxels": int(values.size),
            "scaled": float(values.mean()) * settings.get("scale", 1.0)}


def tumour_stats_or_crash(image_path: str, mask_path: str, settings: dict, case_id: str) -> dict[str, float]:
    """`tumour_stats`, except that case ``settings['crash']`` raises ZeroDivisionError and case
    ``settings['die']`` kills its own worker process."""
    if case_id == settings.get("crash"):
        return {"x": 1 / 0}
    if case_id == settings.get("die"):
        os._exit(3)
    return tumour_stats(image_path, mask_path, settings, case_id)


def synthetic_case(seed: int, size=(16, 14, 12), radius: float = 4.0) -> tuple[sitk.Image, sitk.Image]:
    """A small PET-like SUV image (background 0-1 SUV, a spherical tumour of 4-8 SUV) and its 0/1 mask."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(size[::-1])
    centre = np.array(size[::-1]) / 2
    inside = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= radius**2
    values = rng.uniform(0, 1, size[::-1]) + inside * rng.uniform(4, 8, size[::-1])
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((2.0, 2.0, 3.0))
    image.SetOrigin((-10.0, 25.0, 40.0))
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def write_cohort(folder, n: int, seed: int = 0) -> dict[str, tuple[str, str]]:
    """``n`` synthetic cases written as NIfTI under ``folder``; returns ``{case_id: (image_path, mask_path)}``."""
    os.makedirs(folder, exist_ok=True)
    cases = {}
    for i in range(n):
        case_id = f"C{i:03d}"
        image, mask = synthetic_case(seed + i)
        paths = (os.path.join(folder, f"{case_id}_pet.nii.gz"), os.path.join(folder, f"{case_id}_mask.nii.gz"))
        sitk.WriteImage(image, paths[0])
        sitk.WriteImage(mask, paths[1])
        cases[case_id] = paths
    return cases
