"""RadiomicsExtractor.extract (each filtered image once per case) vs pyradiomics' execute() once per region.

Real STS FDG PET (../shared/data/sts_pet), whole tumour + two subregions split at the tumour's median SUV, packaged
PET parameters (Original + LoG 2/3/4/5 mm + Wavelet, all classes). Prints, side by side in one run:
  1. per case: best-of-N seconds of both paths, their ratio, and whether all feature values are identical;
  2. the same tumours inside a whole-body-sized field of view (the STS images are tight crops; a clinical PET
     is ~144x144x200+ voxels): the image padded with a constant background of 0.5 SUV;
  3. cohort throughput of our path with 1 and 2 worker processes (cases/second).
Run: .venv/bin/python benchmarks/bench_radiomics.py [--repeats 3]
"""

import argparse
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from DPETResponseLib.features.radiomics import RadiomicsExtractor, default_params_path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sts_pet"
CASES = ["STS_001", "STS_005", "STS_013", "STS_025"]
COHORT = ["STS_001", "STS_002", "STS_003", "STS_004", "STS_005", "STS_006", "STS_007", "STS_008"]


def load_case(case):
    image = sitk.ReadImage(str(DATA / case / "PET_image.nii.gz"))
    whole = sitk.ReadImage(str(DATA / case / "PET_mask.nii.gz"))
    suv, inside = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(whole) > 0
    median = np.median(suv[inside])
    masks = {"whole": whole}
    for name, part in (("high", inside & (suv > median)), ("low", inside & (suv <= median))):
        mask = sitk.GetImageFromArray(part.astype(np.uint8))
        mask.CopyInformation(whole)
        masks[name] = mask
    return image, masks


def in_clinical_fov(image, masks, size=(144, 144, 200)):
    lower = [max(0, (s - i) // 2) for s, i in zip(size, image.GetSize())]
    upper = [max(0, s - i - lo) for s, i, lo in zip(size, image.GetSize(), lower)]
    return (sitk.ConstantPad(image, lower, upper, 0.5),
            {name: sitk.ConstantPad(mask, lower, upper, 0) for name, mask in masks.items()})


def execute_per_region(extractor, image, masks):
    return {f"{region}_{key}": float(value) for region, mask in masks.items()
            for key, value in extractor.execute(image, mask).items() if not key.startswith("diagnostics")}


def best_of(repeats, function, *args):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def compare(label, image, masks, ours, pyrad, repeats):
    t_ours, features = best_of(repeats, ours.extract, image, masks)
    t_exec, reference = best_of(repeats, execute_per_region, pyrad, image, masks)
    identical = list(features) == list(reference) and all(
        features[k] == reference[k] or (np.isnan(features[k]) and np.isnan(reference[k])) for k in reference)
    voxels = {name: int(sitk.GetArrayViewFromImage(mask).sum()) for name, mask in masks.items()}
    print(f"{label:<9} {str(image.GetSize()):<16} {voxels['whole']:>6} {voxels['high']:>5} {voxels['low']:>5} "
          f"{t_ours:>8.2f} {t_exec:>12.2f} {t_exec / t_ours:>6.2f}x  {identical} ({len(features)} features)")
    return t_ours, t_exec


_WORKER_EXTRACTOR = None


def _init_worker():
    global _WORKER_EXTRACTOR
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    _WORKER_EXTRACTOR = RadiomicsExtractor()


def _extract_case(case):
    image, masks = load_case(case)
    return len(_WORKER_EXTRACTOR.extract(image, masks, case=case))


def throughput(workers):
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
        list(pool.map(_extract_case, COHORT[:workers]))  # warm the workers (imports, parameter parsing)
        start = time.perf_counter()
        counts = list(pool.map(_extract_case, COHORT))
        elapsed = time.perf_counter() - start
    assert len(set(counts)) == 1
    return len(COHORT) / elapsed, elapsed


def main():
    from radiomics import featureextractor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sections", default="1,2,3", help="comma-separated subset of the sections above")
    args = parser.parse_args()
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    ours = RadiomicsExtractor()
    pyrad = featureextractor.RadiomicsFeatureExtractor(str(default_params_path()))
    pyrad.settings["additionalInfo"] = False
    print(f"best of {args.repeats}; SimpleITK threads {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}")
    header = (f"{'case':<9} {'image size':<16} {'whole':>6} {'high':>5} {'low':>5} {'ours s':>8} "
              f"{'execute x3 s':>12} {'ratio':>7}  identical")
    sections = set(args.sections.split(","))
    if "1" in sections:
        print("\n1. STS images as distributed (tight crops around the tumour)\n" + header)
        totals = np.array([compare(case, *load_case(case), ours, pyrad, args.repeats) for case in CASES]).sum(axis=0)
        print(f"{'all':<9} {'':<16} {'':>6} {'':>5} {'':>5} {totals[0]:>8.2f} {totals[1]:>12.2f} "
              f"{totals[1] / totals[0]:>6.2f}x")
    if "2" in sections:
        print("\n2. the same tumours in a 144x144x200 field of view (background 0.5 SUV)\n" + header)
        for case in CASES[:2]:
            compare(case, *in_clinical_fov(*load_case(case)), ours, pyrad, max(1, args.repeats - 1))
    if "3" in sections:
        print(f"\n3. cohort throughput, our path, {len(COHORT)} STS cases")
        for workers in (1, 2):
            rate, elapsed = throughput(workers)
            print(f"{workers} worker process(es): {rate:.2f} cases/s ({elapsed:.1f} s)")


if __name__ == "__main__":
    main()
