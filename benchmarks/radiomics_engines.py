"""pyradiomics engines side by side: do two builds or commits give the project's features bit for bit?

Each engine is a folder holding a `radiomics` package (``pip install --no-deps --target DIR SOURCE``), or
``installed`` for the one in this environment (the reference, always run first). Each runs in its own fresh
interpreter with its folder first on the path and computes, with `RadiomicsExtractor`:
  IBSI     the IBSI 1 digital phantom, IBSI settings (Original image, every class; as Testing/test_radiomics.py);
  breast1  pyradiomics' breast1 MR case, the packaged PET parameter file (Original + LoG 2-5 mm + Wavelet, every
           class) with binWidth 25 (MR intensities);
  STS      real FDG PET of the STS cases, packaged PET parameters, whole tumour + two subregions split at the
           tumour's median SUV (as benchmarks/bench_radiomics.py);
  probe    `features.radiomics.engine_probe` (what a bundle stores and `predict` recomputes), packaged parameters.
Printed per engine and data set: features bitwise equal to the reference's, those differing by more than 1e-6
(relative), the largest relative difference and its feature. ``--build NAME=SOURCE`` first builds SOURCE (an sdist
or a source folder) into a temporary folder and prints the build's seconds; ``--build-env NAME:VAR=VALUE`` sets an
environment variable for that build (CFLAGS, SETUPTOOLS_SCM_PRETEND_VERSION for a git-less setuptools-scm tree).
An engine folder may hold other filter libraries instead (``pip install --no-deps --target DIR SimpleITK==2.3.1``):
the `radiomics` of this environment then runs on them. ``--numpyradiomics DIR`` adds a pure-Python engine (the
numpyradiomics package and its dependencies installed in DIR): its Original-image features of the IBSI phantom and
the STS whole tumours against pyradiomics' of the same names and settings.

The figures in the issue-17 report came from three runs (pyradiomics commits from github.com/AIM-Harvard/pyradiomics;
146e3bd is the commit SlicerRadiomics builds, 8ed5793 upstream master of 2025-06-16; the sdist from
``pip download --no-deps --no-binary pyradiomics-bhklab pyradiomics-bhklab==3.1.4``):
  .venv/bin/python benchmarks/radiomics_engines.py \\
    --build rebuild=pyradiomics_bhklab-3.1.4.tar.gz \\
    --build fma=pyradiomics_bhklab-3.1.4.tar.gz --build-env "fma:CFLAGS=-O3 -march=native -ffp-contract=fast" \\
    --build slicer=pyradiomics-146e3bd/ --build master=pyradiomics-8ed5793/ \\
    --build-env master:SETUPTOOLS_SCM_PRETEND_VERSION=3.1.1.dev111+g8ed5793
  .venv/bin/python benchmarks/radiomics_engines.py --engine sitk231=DIR --engine sitk241=DIR \\
    --engine numpy126=DIR --engine pywt16=DIR    # SimpleITK 2.3.1, 2.4.1; numpy 1.26.4 (+ pandas 2.2.3, pytz);
                                                 # PyWavelets 1.6.0
  .venv/bin/python benchmarks/radiomics_engines.py --numpyradiomics DIR   # numpyradiomics 0.0.5, scikit-image 0.26
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
DATA = PROJECT.parent / "shared" / "data"
IBSI_PARAMS = {"imageType": {"Original": {}},
               "featureClass": {name: None for name in ("shape", "firstorder", "glcm", "glrlm", "glszm", "gldm",
                                                        "ngtdm")},
               "setting": {"binWidth": 1, "label": 1, "distances": [1], "minimumROIDimensions": 2}}
CLOSE = 1e-6


def compute(n_cases: int) -> dict:
    """Every data set's features with the `radiomics` this interpreter imports (the worker's job)."""
    import SimpleITK as sitk

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_radiomics import load_case

    from DPETResponseLib.features.radiomics import RadiomicsExtractor, engine_identity, engine_probe

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    out = {"identity": engine_identity(), "seconds": {}, "features": {}}

    def timed(name, work):
        started = time.perf_counter()
        out["features"][name] = work()
        out["seconds"][name] = round(time.perf_counter() - started, 2)

    phantom = DATA / "ibsi_digital_phantom"
    timed("IBSI", lambda: RadiomicsExtractor(IBSI_PARAMS).extract(
        sitk.ReadImage(str(phantom / "phantom.nii.gz")), {"whole": sitk.ReadImage(str(phantom / "mask.nii.gz"))}))
    breast = DATA / "pyradiomics_breast1"
    timed("breast1", lambda: RadiomicsExtractor(binWidth=25).extract(
        sitk.ReadImage(str(breast / "breast1_image.nrrd")),
        {"whole": sitk.ReadImage(str(breast / "breast1_label.nrrd"))}))
    cases = sorted(p.name for p in (DATA / "sts_pet").glob("STS_*"))[:n_cases]
    extractor = RadiomicsExtractor()
    timed("STS", lambda: {f"{case}/{key}": value for case in cases
                          for key, value in extractor.extract(*load_case(case), case=case).items()})
    timed("probe", lambda: engine_probe(extractor))
    return out


def original_features(n_cases: int, pure: bool) -> dict:
    """Original-image first-order and texture features of the IBSI phantom (bin width 1) and the STS whole tumours
    (0.25): numpyradiomics' with ``pure``, else pyradiomics' (`RadiomicsExtractor`)."""
    import numpy as np
    import SimpleITK as sitk

    from DPETResponseLib.features.radiomics import RadiomicsExtractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    phantom = DATA / "ibsi_digital_phantom"
    inputs = {"IBSI": (sitk.ReadImage(str(phantom / "phantom.nii.gz")),
                       sitk.ReadImage(str(phantom / "mask.nii.gz")), 1.0)}
    for case in sorted(p.name for p in (DATA / "sts_pet").glob("STS_*"))[:n_cases]:
        inputs[case] = (sitk.ReadImage(str(DATA / "sts_pet" / case / "PET_image.nii.gz")),
                        sitk.ReadImage(str(DATA / "sts_pet" / case / "PET_mask.nii.gz")), 0.25)
    out = {}
    for name, (image, mask, width) in inputs.items():
        if pure:
            import numpyradiomics

            voxels, inside = sitk.GetArrayFromImage(image).astype(float), sitk.GetArrayFromImage(mask) > 0
            found = {f"firstorder_{key}": value for key, value in numpyradiomics.firstorder(
                voxels, inside, voxelVolume=float(np.prod(image.GetSpacing())), binWidth=width).items()}
            found.update(numpyradiomics.texture(voxels, inside, binWidth=width))
        else:
            params = {**IBSI_PARAMS, "featureClass": {c: None for c in IBSI_PARAMS["featureClass"] if c != "shape"},
                      "setting": {**IBSI_PARAMS["setting"], "binWidth": width}}
            found = {key.removeprefix("whole_original_"): value
                     for key, value in RadiomicsExtractor(params).extract(image, {"whole": mask}).items()}
        out.update({f"{name}/{key}": float(value) for key, value in found.items()})
    return out


def build(name: str, source: str, env: dict, folder: Path) -> tuple[Path, float]:
    target = folder / name
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "--quiet",
                           "--target", str(target), source], env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"build of {name} from {source} failed:\n{done.stderr[-3000:]}")
    return target, time.perf_counter() - started


def run_engine(folder: Path | None, n_cases: int, out: Path, mode: str = "--worker") -> dict | str:
    """The worker's results, or the last line of its error."""
    paths = ([str(folder)] if folder else []) + [str(PROJECT)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, mode, str(out), "--cases", str(n_cases)], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        return done.stderr.strip().splitlines()[-1]
    return json.loads(out.read_text())


def relative(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if math.isnan(a) or math.isnan(b):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))


def compare(reference: dict, other: dict) -> str:
    if set(reference) != set(other):
        return f"different feature sets ({len(reference)} vs {len(other)})"
    return differences(reference, other)


def differences(reference: dict, other: dict) -> str:
    diffs = {key: relative(reference[key], other[key]) for key in reference}
    worst = max(diffs, key=diffs.get)
    equal = sum(d == 0 for d in diffs.values())
    above = sum(d > CLOSE for d in diffs.values())
    return (f"{equal}/{len(diffs)} equal, {above} differ by > {CLOSE:g}, max rel. diff {diffs[worst]:.2e}"
            + (f" ({worst})" if diffs[worst] else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--build", action="append", default=[], metavar="NAME=SOURCE")
    parser.add_argument("--build-env", action="append", default=[], metavar="NAME:VAR=VALUE")
    parser.add_argument("--numpyradiomics", metavar="DIR")
    parser.add_argument("--cases", type=int, default=35, help="STS cases (default all 35)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--original-worker", help=argparse.SUPPRESS)
    parser.add_argument("--pure-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        Path(args.worker).write_text(json.dumps(compute(args.cases)))
        return
    if args.original_worker or args.pure_worker:
        pure = bool(args.pure_worker)
        Path(args.pure_worker or args.original_worker).write_text(json.dumps(original_features(args.cases, pure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        engines = {"installed": (None, None)}
        engines.update({name: (Path(folder), None) for name, folder in (e.split("=", 1) for e in args.engine)})
        envs: dict[str, dict] = {}
        for item in args.build_env:
            name, assignment = item.split(":", 1)
            var, value = assignment.split("=", 1)
            envs.setdefault(name, {})[var] = value
        for name, source in (b.split("=", 1) for b in args.build):
            engines[name] = build(name, source, envs.get(name, {}), tmp)
        results = {name: run_engine(folder, args.cases, tmp / f"{name}.json") for name, (folder, _) in engines.items()}
    reference = results["installed"]
    if isinstance(reference, str):
        sys.exit(f"the installed engine failed: {reference}")
    for name, result in results.items():
        if isinstance(result, str):
            print(f"== {name}: failed: {result}")
            continue
        who = result["identity"]
        build_s = engines[name][1]
        print(f"== {name}: {who['distribution']} {who['version']} (radiomics {who['module_version']}, revision "
              f"{(who['revision'] or '-')[:10]}; SimpleITK {who['SimpleITK']}, PyWavelets {who['PyWavelets']}, "
              f"numpy {who['numpy']})" + (f"; built in {build_s:.1f} s" if build_s is not None else ""))
        for data in result["features"]:
            line = "reference" if name == "installed" else compare(reference["features"][data],
                                                                   result["features"][data])
            print(f"   {data:8s} {result['seconds'][data]:6.2f} s  {line}")
    if args.numpyradiomics:
        with tempfile.TemporaryDirectory() as tmp:
            ours = run_engine(None, args.cases, Path(tmp) / "ours.json", "--original-worker")
            pure = run_engine(Path(args.numpyradiomics), args.cases, Path(tmp) / "pure.json", "--pure-worker")
        if isinstance(pure, str):
            print(f"== numpyradiomics: failed: {pure}")
            return
        common = sorted(set(ours) & set(pure))
        shared, names = {k.split("/", 1)[1] for k in common}, {k.split("/", 1)[1] for k in ours}
        print(f"== numpyradiomics (pure Python) vs installed, Original image: {len(shared)} of {len(names)} "
              "pyradiomics features computed")
        for data in ("IBSI", "STS"):
            keys = [k for k in common if (k.split("/")[0] == "IBSI") == (data == "IBSI")]
            print(f"   {data:8s} {differences({k: ours[k] for k in keys}, {k: pure[k] for k in keys})}")


if __name__ == "__main__":
    main()
