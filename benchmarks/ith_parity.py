"""ITHscore parity: this project's ``ith_score`` against the ITHscore package (Li et al., PyPI 0.3.3) on the same
2D slices: five STS PET cases and one STS CT (CT is the package's modality; it ships no example image of its own).

The package's side is computed live where ``import ITHscore`` works, else read from
Testing/ith_parity_reference.json, which ``--reference`` writes from real runs of the package:

    python3.11 -m venv /tmp/ithscore-venv
    /tmp/ithscore-venv/bin/pip install pyradiomics-bhklab==3.1.4 numpy scipy scikit-learn SimpleITK six pydicom \
        matplotlib
    /tmp/ithscore-venv/bin/pip install --no-deps ITHscore==0.3.3   # its pyradiomics>=3.0 does not build on 3.11
    /tmp/ithscore-venv/bin/python benchmarks/ith_parity.py --reference
    .venv/bin/python benchmarks/ith_parity.py                      # the tables, from the reference file
    PYTHONPATH=<unpacked ITHscore-0.3.3 sdist> .venv/bin/python benchmarks/ith_parity.py   # the tables, live

The package's ``pixel_clustering`` calls ``KMeans(n_clusters=6)`` without a seed and with scikit-learn's default
``n_init`` (1 since scikit-learn 1.4), so each package score is taken after ``np.random.seed(s)``, s = 0..9.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
REFERENCE = ROOT / "Testing" / "ith_parity_reference.json"
INPUTS = [  # (case, modality): 28-618 pixels; STS_014 reaches SUV 30 (two 25-unit bins); STS_023 has tied slices
    ("STS_001", "PET"), ("STS_013", "PET"), ("STS_014", "PET"), ("STS_019", "PET"), ("STS_023", "PET"),
    ("STS_019", "CT"),
]
SEEDS = range(10)
N_CLUSTERS = 6
GROUPS = ("first", "shape", "glcm", "gldm", "glrlm", "glszm", "ngtdm")  # the package's feature groups, in its order
SHARED_COLUMNS = {  # our feature -> the package's (pyradiomics') column of the same name
    "mean": "firstorder_Mean", "min": "firstorder_Minimum", "max": "firstorder_Maximum",
    "median": "firstorder_Median", "glcm_contrast": "glcm_Contrast", "glcm_dissimilarity": "glcm_DifferenceAverage",
    "glcm_homogeneity": "glcm_Id", "glcm_energy": "glcm_JointEnergy", "glcm_entropy": "glcm_JointEntropy",
}
# What the reference file keeps of the package's feature matrix (10 decimals), to stay ~150 kB: every varying
# column for three PET inputs (16 each), the varying SHARED_COLUMNS for STS_014 (the PET slice whose texture varies).
STORE_FEATURES = {("STS_001", "PET"), ("STS_019", "PET"), ("STS_023", "PET")}
STORE_SHARED = {("STS_014", "PET")}
SETTINGS = {"w5 bw25": (5, 25.0), "w3 bw25": (3, 25.0), "w5 bw.25": (5, 0.25), "w3 bw.25": (3, 0.25)}  # ours


def paths(case: str, modality: str) -> tuple[str, str]:
    """Image and mask files of an input, relative to shared/data."""
    return f"sts_pet/{case}/{modality}_image.nii.gz", f"sts_pet/{case}/{modality}_mask.nii.gz"


def to_rows(label_map: np.ndarray) -> list[str]:
    """A label map (labels 0-9) as one digit string per row."""
    return ["".join(str(int(v)) for v in row) for row in label_map]


def from_rows(rows: list[str]) -> np.ndarray:
    return np.array([[int(c) for c in row] for row in rows], dtype=np.int64)


def random_label_maps(n: int = 40) -> list[np.ndarray]:
    """Label maps that exercise the score's rules: singletons, clusters made only of singletons, diagonal contacts,
    holes, a single cluster; tumours under and over the package's ``min_area`` of 200 pixels."""
    rng = np.random.default_rng(2024)
    maps = []
    for i in range(n):
        shape = tuple(rng.integers(6, 24, size=2))
        k = int(rng.integers(1, 8))
        if i % 2:  # blocky: a smoothed field cut into k levels gives regions of several pixels
            field = rng.normal(size=shape).cumsum(0).cumsum(1)
            labels = np.digitize(field, np.quantile(field, np.linspace(0, 1, k + 1)[1:-1])) + 1
        else:  # salt and pepper: mostly singletons
            labels = rng.integers(1, k + 1, size=shape)
        labels[rng.random(shape) < 0.15] = 0
        if not labels.any():
            labels[0, 0] = 1
        maps.append(labels)
    return maps


def package_feature_names() -> list[str]:
    """pyradiomics' names of the package's columns, in the order its ``extract_feature_unit`` collects them."""
    from radiomics import featureextractor

    img = sitk.GetImageFromArray(np.arange(25, dtype=np.float32).reshape(1, 5, 5) * 10)
    result = featureextractor.RadiomicsFeatureExtractor().execute(img, sitk.GetImageFromArray(np.ones((1, 5, 5))))
    names = [k.removeprefix("original_") for k in result if k.startswith("original_")]
    order = {"firstorder": 0, **{g: i for i, g in enumerate(GROUPS) if g != "first"}}
    return sorted(names, key=lambda n: order[n.split("_")[0]])  # stable: pyradiomics' order within a group


def package_results(live: bool = False) -> dict:
    """Run the ITHscore package on every input and on ``random_label_maps()`` (``live``: keep every matrix)."""
    import logging

    import ITHscore

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    names = package_feature_names()
    inputs = []
    for case, modality in INPUTS:
        image_file, mask_file = paths(case, modality)
        img3d = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / image_file)))
        mask3d = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / mask_file)))
        img, mask = ITHscore.get_largest_slice(img3d, mask3d)
        z = next(k for k in range(len(img3d)) if np.shares_memory(img, img3d[k]))
        sub_img, sub_mask = ITHscore.locate_tumor(img, mask)
        groups = ITHscore.extract_radiomic_features(sub_img, sub_mask, parallel=False)
        matrix = np.hstack([groups[g] for g in GROUPS])
        varying = matrix.max(0) > matrix.min(0)  # the other columns are all 0 and do not move k-means
        runs = []
        for seed in SEEDS:
            np.random.seed(seed)  # the package's KMeans takes numpy's global random state
            label_map = ITHscore.pixel_clustering(sub_mask, groups, cluster=N_CLUSTERS)
            score = float(ITHscore.calITHscore(label_map))
            runs.append({"seed": seed, "score": score, "label_map": to_rows(label_map)})
        entry = {
            "case": case, "modality": modality, "image": image_file, "mask": mask_file, "slice": z,
            "pixels": int((sub_mask == 1).sum()), "sub_mask": to_rows(sub_mask),
            "varying_columns": {g: int(np.ptp(groups[g], axis=0).astype(bool).sum()) for g in GROUPS},
            "runs": runs,
        }
        columns = {n: np.round(col, 10).tolist() for n, col, v in zip(names, matrix.T, varying) if v}
        if live or (case, modality) in STORE_FEATURES:
            entry["features"] = columns
        elif (case, modality) in STORE_SHARED:
            entry["shared_features"] = {n: c for n, c in columns.items() if n in SHARED_COLUMNS.values()}
        inputs.append(entry)
        print(f"{case} {modality}: slice {z}, {entry['pixels']} pixels", file=sys.stderr)
    maps = [{"label_map": to_rows(m), "score": float(ITHscore.calITHscore(m))} for m in random_label_maps()]
    return {"inputs": inputs, "label_maps": maps}


def versions() -> dict:
    found = {d: metadata.version(d) for d in ("ITHscore", "pyradiomics-bhklab", "scikit-learn", "numpy", "scipy",
                                             "SimpleITK")}
    return {**found, "python": platform.python_version()}


def write_reference(path: Path = REFERENCE) -> None:
    doc = {
        "about": "Made by the ITHscore package itself (real runs, nothing typed by hand): "
                 "`benchmarks/ith_parity.py --reference` in a venv with ITHscore installed as that script's "
                 "docstring says. Per input: the package's largest slice and tumour crop, its cluster label map and "
                 "calITHscore for each numpy global seed (its KMeans has no seed), and the varying columns of "
                 "the feature matrix its pixel_clustering clusters (min-max scaled by the package; 10 decimals): "
                 "all of them (features) or those sharing a name with ours (shared_features). label_maps: "
                 "calITHscore of random label maps.",
        "versions": versions(),
        "settings": {"cluster": N_CLUSTERS, "seeds": list(SEEDS), "window": "5x5 (locate_tumor padding=2)",
                     "pyradiomics": "RadiomicsFeatureExtractor() defaults (binWidth 25)"},
        **package_results(),
    }
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({path.stat().st_size // 1024} kB)", file=sys.stderr)


def load_package_side() -> tuple[dict, str]:
    """The package's results: live when ITHscore is importable, else the reference file."""
    try:
        import ITHscore  # noqa: F401
    except ImportError:
        ref = json.loads(REFERENCE.read_text())
        return ref, f"reference file {REFERENCE.relative_to(ROOT)}, versions {ref['versions']}"
    return package_results(live=True), f"live, versions {versions()}"


def slice_images(entry: dict, z: int) -> tuple[sitk.Image, sitk.Image]:
    """Slice z of an input as a one-slice volume (spacing kept): the same 2D array the package got."""
    image = sitk.ReadImage(str(DATA / entry["image"]), sitk.sitkFloat32)
    mask = sitk.ReadImage(str(DATA / entry["mask"]), sitk.sitkUInt8)
    return image[:, :, z:z + 1], mask[:, :, z:z + 1]


def score_on_package_features(entry: dict, seed: int, n_init: int) -> float:
    """Our clustering (``kmeans_labels``) and score (``ith_from_labels``) on the package's feature matrix."""
    from sklearn.preprocessing import MinMaxScaler

    from DPETResponseLib.features.ith import ith_from_labels
    from DPETResponseLib.features.subregions import kmeans_labels

    inside = from_rows(entry["sub_mask"]) == 1
    features = MinMaxScaler().fit_transform(np.array(list(entry["features"].values())).T)
    cluster, _ = kmeans_labels(features, N_CLUSTERS, seed, n_init=n_init)
    label_map = np.zeros(inside.shape, dtype=np.int64)
    label_map[inside] = cluster + 1
    return ith_from_labels(label_map)


def our_features(entry: dict, window: int, bin_width: float) -> dict[str, np.ndarray]:
    """Our window features of the package's slice, min-max scaled over its tumour pixels (as ``ith_score`` does)."""
    from sklearn.preprocessing import MinMaxScaler

    from DPETResponseLib.features.ith import FEATURE_NAMES, discretise, window_features

    image, mask = slice_images(entry, entry["slice"])
    suv, inside = sitk.GetArrayFromImage(image)[0].astype(float), sitk.GetArrayFromImage(mask)[0] == 1
    centres = np.argwhere(inside) - window // 2  # every tumour pixel lies >= 10 pixels inside the image
    values = window_features(suv, discretise(suv, inside, bin_width), centres, window)
    return dict(zip(FEATURE_NAMES, MinMaxScaler().fit_transform(values).T))


def compare(package: dict) -> list[dict]:
    """One row per input: the package's scores and ours, step by step."""
    from DPETResponseLib.features.ith import ith_score

    rows = []
    for entry in package["inputs"]:
        image = sitk.ReadImage(str(DATA / entry["image"]), sitk.sitkFloat32)
        mask = sitk.ReadImage(str(DATA / entry["mask"]), sitk.sitkUInt8)
        area = (sitk.GetArrayViewFromImage(mask) == 1).sum(axis=(1, 2))
        same = slice_images(entry, entry["slice"])  # the package's slice, for both
        scores = np.array([r["score"] for r in entry["runs"]])
        row = {
            "input": f"{entry['case']} {entry['modality']}", "slice_pkg": entry["slice"],
            "slice_ours": ith_score(image, mask, dims=2, return_labels=True)["ith_slice"],
            "tied": np.flatnonzero(area == area.max()).tolist(), "pixels": entry["pixels"],
            "pkg_seed0": scores[0], "pkg_median": float(np.median(scores)), "pkg_min": scores.min(),
            "pkg_max": scores.max(), "varying": entry["varying_columns"],
            "ours": {k: ith_score(*same, dims=2, window=w, bin_width=b)["ith_score2d"]
                     for k, (w, b) in SETTINGS.items()},
        }
        columns = entry.get("features") or entry.get("shared_features")
        if "features" in entry:
            row["matched_max_diff"] = max(abs(score_on_package_features(entry, r["seed"], 1) - r["score"])
                                          for r in entry["runs"])
            row["pkg_features_our_kmeans"] = score_on_package_features(entry, 0, 10)
        if columns:
            ours = our_features(entry, 5, 25.0)
            row["features"] = {ours_name: float(np.abs(ours[ours_name] - np.array(columns[name])).max())
                               if name in columns else None for ours_name, name in SHARED_COLUMNS.items()}
        rows.append(row)
    return rows


def formula_difference(package: dict) -> tuple[int, float]:
    """Number of the package's label maps (random ones and its STS cluster maps) and max |ours - calITHscore|."""
    from DPETResponseLib.features.ith import ith_from_labels

    pairs = [(m["label_map"], m["score"]) for m in package["label_maps"]]
    pairs += [(r["label_map"], r["score"]) for e in package["inputs"] for r in e["runs"]]
    return len(pairs), max(abs(ith_from_labels(from_rows(rows)) - score) for rows, score in pairs)


def print_tables(rows: list[dict], formula: tuple[int, float], source: str) -> None:
    print(f"ITHscore parity. Package: {source}")
    print(f"\nScore of a label map: ours (ith_from_labels) against calITHscore on the package's {formula[0]} maps: "
          f"max |difference| {formula[1]:.1e}")
    print("\nScores on the package's slice (the same 2D array for both). pkg: calITHscore after np.random.seed(s), "
          "s=0..9.\nA: ours on the package's features with its k-means call (n_init=1, seed s), max |A - pkg| over s."
          "\nB: ours on the package's features with our k-means (n_init=10, seed 0).\n"
          "wW bwB: our ith_score (seed 0) with window W and bin width B; w5 bw25 = the package's, w3 bw.25 = our "
          "defaults.")
    head = (f"{'input':12} {'slice pkg/ours (tied)':21} {'px':>4} {'pkg s=0':>7} {'pkg median [min, max]':>21} "
            f"{'A':>7} {'B':>5} " + " ".join(f"{k:>8}" for k in SETTINGS) + f" {'|w3 bw.25 - median|':>19}"
            "  varying package columns")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        tied = f" ({','.join(map(str, r['tied']))})" if len(r["tied"]) > 1 else ""
        a = f"{r['matched_max_diff']:7.0e}" if "matched_max_diff" in r else f"{'-':>7}"
        b = f"{r['pkg_features_our_kmeans']:5.3f}" if "pkg_features_our_kmeans" in r else f"{'-':>5}"
        ours = " ".join(f"{v:8.3f}" for v in r["ours"].values())
        varying = " ".join(f"{g}:{n}" for g, n in r["varying"].items() if n)
        slices = f"{r['slice_pkg']}/{r['slice_ours']}{tied}"
        print(f"{r['input']:12} {slices:21} {r['pixels']:4d} {r['pkg_seed0']:7.3f} "
              f"{r['pkg_median']:7.3f} [{r['pkg_min']:.3f}, {r['pkg_max']:.3f}] {a} {b} {ours} "
              f"{abs(r['ours']['w3 bw.25'] - r['pkg_median']):19.3f}  {varying}")
    print("\nWindow features, ours (window 5, bin width 25) against the package's pyradiomics columns, both min-max"
          "\nscaled over the slice's tumour pixels: max |ours - package| (const: constant in the package).")
    print(f"{'input':12} " + " ".join(f"{n.removeprefix('glcm_'):>13}" for n in SHARED_COLUMNS))
    for r in rows:
        if "features" in r:
            cells = ["const" if v is None else f"{v:.1e}" for v in r["features"].values()]
            print(f"{r['input']:12} " + " ".join(f"{c:>13}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", action="store_true", help="run the package and write the reference file")
    if parser.parse_args().reference:
        write_reference()
        return
    package, source = load_package_side()
    print_tables(compare(package), formula_difference(package), source)


if __name__ == "__main__":
    main()
