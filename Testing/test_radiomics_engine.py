"""The radiomics engine: which installed distribution computes the features, features equal bit for bit in a fresh
interpreter (IBSI phantom, breast1 and STS cases, against the references of test_radiomics.py), and a probe that
tells an engine computing other values from one that only rounds differently (features.radiomics.check_engine)."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import SHARED_DATA
from test_radiomics import IBSI_PARAMS, MATCHING, _baseline_cases, _ibsi_reference, _three_regions

from DPETResponseLib.core.errors import DPETError
from DPETResponseLib.core.provenance import module_distribution
from DPETResponseLib.features.radiomics import (
    ENGINE_TOLERANCE,
    RadiomicsExtractor,
    check_engine,
    engine_identity,
    engine_probe,
    engine_record,
)

PROJECT = Path(__file__).resolve().parents[1]
STS_CASES = ["STS_001", "STS_010", "STS_025"]
#: pyradiomics' breast1 baseline columns recomputed here: every class as given and resampled (B-spline, 2 mm).
BREAST1 = [case for case in _baseline_cases() if case[1] in ("breast1", "breast1_resampling")]


def features_of_every_reference() -> dict:
    """IBSI phantom (IBSI settings), breast1 (baseline settings per column), STS cases (packaged PET parameters,
    whole tumour and two subregions) and the engine record of the packaged parameters."""
    import ast
    import csv

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    phantom = SHARED_DATA / "ibsi_digital_phantom"
    out = {"IBSI": RadiomicsExtractor(IBSI_PARAMS).extract(
        sitk.ReadImage(str(phantom / "phantom.nii.gz")), {"whole": sitk.ReadImage(str(phantom / "mask.nii.gz"))})}
    breast = SHARED_DATA / "pyradiomics_breast1"
    for feature_class, column in BREAST1:
        with open(breast / "baseline" / f"breast1_{feature_class}.csv") as handle:
            rows = list(csv.reader(handle))
        table = {row[0]: row[rows[0].index(column)] for row in rows[1:]}
        params = {"imageType": ast.literal_eval(table["diagnostics_Configuration_EnabledImageTypes"]),
                  "featureClass": {feature_class: None}}
        extractor = RadiomicsExtractor(params, **ast.literal_eval(table["diagnostics_Configuration_Settings"]))
        out[f"breast1/{feature_class}/{column}"] = extractor.extract(
            sitk.ReadImage(str(breast / "breast1_image.nrrd")),
            {"whole": sitk.ReadImage(str(breast / "breast1_label.nrrd"))})
    extractor = RadiomicsExtractor()
    for case in STS_CASES:
        out[case] = extractor.extract(*_three_regions(SHARED_DATA, case), case=case)
    out["record"] = engine_record(extractor)
    return out


FRESH = """
import json, sys
sys.path.insert(0, sys.argv[1])
from test_radiomics_engine import features_of_every_reference
print(json.dumps(features_of_every_reference()))
"""


@pytest.fixture(scope="module")
def both_processes():
    """The same computations here and in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", FRESH, str(PROJECT / "Testing")], capture_output=True, text=True,
                          cwd=PROJECT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return features_of_every_reference(), json.loads(done.stdout.strip().splitlines()[-1])


def test_a_fresh_interpreter_gives_every_feature_bit_for_bit(both_processes):
    here, fresh = both_processes
    assert set(here) == set(fresh)
    for name in here:
        if name == "record":
            continue
        assert list(here[name]) == list(fresh[name]), name
        different = [key for key, value in here[name].items()
                     if not (value == fresh[name][key] or (np.isnan(value) and np.isnan(fresh[name][key])))]
        assert different == [], (name, different[:5])
    assert sum(len(here[case]) for case in STS_CASES) == 3 * 3 * (14 + 13 * 93)


def test_the_fresh_interpreter_meets_the_references(both_processes, shared_data):
    """Its IBSI phantom values agree with the IBSI manual, its breast1 values with pyradiomics' baseline."""
    import csv

    _, fresh = both_processes
    ibsi = {key.removeprefix("whole_original_"): value for key, value in fresh["IBSI"].items()}
    for name, reference in MATCHING.items():
        value, tolerance = _ibsi_reference(shared_data, *reference)
        assert abs(ibsi[name] - value) <= tolerance * (1 + 1e-9), (name, ibsi[name], value)
    for feature_class, column in BREAST1:
        with open(shared_data / "pyradiomics_breast1" / "baseline" / f"breast1_{feature_class}.csv") as handle:
            rows = list(csv.reader(handle))
        expected = {f"whole_{row[0]}": float(row[rows[0].index(column)]) for row in rows[1:]
                    if not row[0].startswith("diagnostics")}
        computed = fresh[f"breast1/{feature_class}/{column}"]
        assert set(computed) == set(expected)
        for key, value in expected.items():
            assert computed[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key


def test_a_record_made_in_another_process_passes_the_check(both_processes):
    """What `train` stores and `predict` checks: the fresh interpreter's record, checked here, with no note."""
    here, fresh = both_processes
    assert fresh["record"] == here["record"]
    assert fresh["record"]["distribution"] == "pyradiomics-bhklab" and fresh["record"]["revision"]
    assert check_engine(fresh["record"], RadiomicsExtractor()) == []


def test_the_probe_catches_a_filter_that_computes_other_values(monkeypatch):
    """A LoG filter whose values move by 1e-6 (relative; as another SimpleITK build might): the STS features move
    beyond the tolerance, and the probe fails the check."""
    from radiomics import imageoperations

    extractor = RadiomicsExtractor()
    record = engine_record(extractor)
    image, masks = _three_regions(SHARED_DATA, "STS_025")
    before = extractor.extract(image, masks)
    log_image = imageoperations.getLoGImage

    def shifted_log(*args, **kwargs):
        for filtered, name, settings in log_image(*args, **kwargs):
            yield filtered * (1 + 1e-6), name, settings

    monkeypatch.setattr(imageoperations, "getLoGImage", shifted_log)
    after = extractor.extract(image, masks)
    moved = [key for key in before if abs(after[key] - before[key]) > ENGINE_TOLERANCE * abs(before[key])]
    assert moved and all("_log-sigma-" in key for key in moved)
    with pytest.raises(DPETError, match=r"does not reproduce the features .* probe features differ .*log-sigma"):
        check_engine(record, extractor)
    monkeypatch.setattr(imageoperations, "getLoGImage", log_image)
    assert check_engine(record, extractor) == []


def test_the_engine_is_the_distribution_python_imported(tmp_path):
    """Two distributions install the same import name in two folders: the one imported is named; a package that no
    distribution lists (a source tree) gives None. The installed engine is pyradiomics-bhklab."""
    import importlib.util

    for folder, dist, version in (("first", "engine-a", "1.0"), ("second", "engine-b", "2.0")):
        package = tmp_path / folder / "fakeengine"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        info = tmp_path / folder / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "RECORD").write_text("fakeengine/__init__.py,,\n")
    (tmp_path / "source" / "fakeengine").mkdir(parents=True)
    (tmp_path / "source" / "fakeengine" / "__init__.py").write_text("")

    def imported(folder):
        spec = importlib.util.spec_from_file_location("fakeengine", tmp_path / folder / "fakeengine" / "__init__.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    assert module_distribution(imported("second")) == ("engine-b", "2.0")
    assert module_distribution(imported("first")) == ("engine-a", "1.0")
    assert module_distribution(imported("source")) is None
    assert engine_identity()["distribution"] == "pyradiomics-bhklab"


def test_the_probe_is_the_bundles_parameters_every_image_type():
    """The packaged parameters' probe covers shape and every class on all 13 images (Original, 4 LoG, 8 wavelet)."""
    probe = engine_probe(RadiomicsExtractor())
    assert len(probe) == 14 + 13 * 93
    assert all(np.isfinite(value) for value in probe.values())
