"""The per-case analysis settings for habitats: population habitats learned on training cases through the cached
cohort runner give the same centroids as fitting the images in memory; missing or unknown settings are errors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from test_subregions import cored_or_solid

from DPETResponseLib.core.errors import ConfigError, InputError
from DPETResponseLib.extraction import with_habitat_model
from DPETResponseLib.features.analysis import analyse_image, default_settings, population_habitats
from DPETResponseLib.features.subregions import PopulationHabitats

FIRST_ORDER_ONLY = """
imageType:
  Original: {}
featureClass:
  firstorder:
setting:
  binWidth: 0.25
  label: 1
  minimumROIDimensions: 2
  minimumROISize: 9
"""


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("habitat_cohort")
    rows, images = [], []
    for i, (scale, core) in enumerate([(1, 8), (0.5, 0), (2, 9), (1.5, 0)]):
        img, mask, _ = cored_or_solid(scale, core, i)
        sitk.WriteImage(img, str(root / f"c{i}_pet.nrrd"))
        sitk.WriteImage(mask, str(root / f"c{i}_mask.nrrd"))
        rows.append({"case_id": f"c{i}", "image": str(root / f"c{i}_pet.nrrd"), "mask": str(root / f"c{i}_mask.nrrd")})
        images.append((img, mask))
    (root / "params.yaml").write_text(FIRST_ORDER_ONLY)
    return root, pd.DataFrame(rows).set_index("case_id"), images


def test_population_habitats_fit_through_the_cache_equal_the_in_memory_fit(cohort):
    root, cases, images = cohort
    settings = with_habitat_model(cases, {"radiomics_params": str(root / "params.yaml")}, root / "cache",
                                  progress=False)
    cached = PopulationHabitats.from_dict(settings["habitat_model"])
    in_memory = population_habitats({"habitat_k": 2, "habitat_radius_mm": 7.0, "habitat_seed": 0}).fit(images)
    assert cached.relative and cached.k == 2
    np.testing.assert_allclose(cached.centroids_, in_memory.centroids_, atol=1e-6)
    # settings with a model, or with per-tumour habitats, are passed through untouched
    assert with_habitat_model(cases, settings, root / "cache", progress=False) == settings
    per_tumour = with_habitat_model(cases, {"habitat_method": "tumour"}, root / "cache", progress=False)
    assert per_tumour == {**default_settings(), "habitat_method": "tumour"}
    assert settings["habitat_method"] == "population"  # explicit: a bundle keeps it whatever the default becomes

    img, mask, truth_high = cored_or_solid(1, 8, 99)
    features, labels, *_ = analyse_image(img, mask, settings, "new")
    assert features["sub_high_fraction"] == pytest.approx((sitk.GetArrayFromImage(labels) == 2).sum()
                                                          / sitk.GetArrayFromImage(mask).sum())
    assert 0.3 < features["sub_high_fraction"] < truth_high + 0.05
    # the low habitat holds the cold core (SUV 3) and the blurred shell around it: measured means 8.2 vs 5.1
    assert features["high_original_firstorder_Mean"] > 1.5 * features["low_original_firstorder_Mean"]


def test_habitat_settings_errors_name_the_case(cohort):
    root, _, images = cohort
    img, mask = images[0]
    params = str(root / "params.yaml")
    with pytest.raises(InputError, match="case7.*habitat_model"):
        analyse_image(img, mask, {"radiomics_params": params, "habitat_method": "population"}, "case7")
    with pytest.raises(ConfigError, match="unknown habitat_method 'voxel'"):
        analyse_image(img, mask, {"radiomics_params": params, "habitat_method": "voxel"}, "case7")


def test_settings_are_checked_at_configuration_with_a_suggestion():
    """A mistyped or unsupported setting is refused when the settings are read, before any work, and the message
    suggests the closest valid name; the caller's settings object is never changed."""
    from DPETResponseLib.protocol import load_config
    from DPETResponseLib.study.model import StudyConfig

    with pytest.raises(ConfigError, match=r"'habitat_radius' \(did you mean 'habitat_radius_mm'\?\)"):
        load_config({"analysis": {"habitat_radius": 5.0}})
    with pytest.raises(ConfigError, match=r"'n_fold' \(did you mean 'n_folds'\?\)"):
        load_config({"n_fold": 3})
    # K habitats other than two: nothing downstream is built for them (the pathways read high_/low_, sub_*)
    with pytest.raises(ConfigError, match="habitat_k=3: only 2 habitats"):
        load_config({"analysis": {"habitat_k": 3}})
    with pytest.raises(ConfigError, match="habitat_k=3"):
        StudyConfig(analysis={"habitat_k": 3})
    with pytest.raises(ConfigError, match=r"'spacng' \(did you mean 'spacing'\?\)"):
        load_config({"deep_overrides": {"spacng": 4.0}}).check()
    with pytest.raises(ConfigError, match="unknown decision-fusion weights"):
        load_config({"decision_weights": "median"}).check()
    # values of the wrong type, in every layer, named with the type expected
    with pytest.raises(ConfigError, match=r"protocol settings: n_folds='5' \(str\) .* expected int"):
        load_config({"n_folds": "5"})
    with pytest.raises(ConfigError, match=r"analysis settings: habitat_radius_mm='7' \(str\) .* expected float"):
        load_config({"analysis": {"habitat_radius_mm": "7"}})
    with pytest.raises(ConfigError, match=r"analysis settings: ith_dims=\[2, '3'\] .* expected list\[int\]"):
        load_config({"analysis": {"ith_dims": [2, "3"]}})
    with pytest.raises(ConfigError, match=r"deep settings: epochs=2.5 \(float\) .* expected int"):
        load_config({"deep_overrides": {"epochs": 2.5}}).check()
    assert load_config({"analysis": {"habitat_radius_mm": 7}}).analysis["habitat_radius_mm"] == 7  # int as float
    # one CNN setting set twice, or one the study sets itself
    with pytest.raises(ConfigError, match=r"deep_epochs and deep_overrides\['epochs'\] both set"):
        load_config({"deep_epochs": 3, "deep_overrides": {"epochs": 4}})
    with pytest.raises(ConfigError, match="deep_overrides cannot set folds: the CNN takes them from n_folds"):
        load_config({"deep_overrides": {"folds": 3}})
    config = StudyConfig(n_folds=3)
    copied = load_config(config)
    copied.analysis["habitat_seed"] = 5
    assert config.analysis["habitat_seed"] == 0 and copied is not config


def test_analysis_code_version_covers_every_module_the_analysis_runs(tmp_path):
    """The feature cache is keyed on a digest of the analysis code: every library module that analysing a case
    loads is in it, and an edit of any of them changes it."""
    import shutil
    import subprocess
    import sys

    from DPETResponseLib.features import analysis

    img, mask, _ = cored_or_solid(1, 8, 3)
    sitk.WriteImage(img, str(tmp_path / "pet.nrrd"))
    sitk.WriteImage(mask, str(tmp_path / "mask.nrrd"))
    (tmp_path / "params.yaml").write_text(FIRST_ORDER_ONLY)
    script = f"""
import sys
from DPETResponseLib.features.analysis import analyse_case
analyse_case({str(tmp_path / 'pet.nrrd')!r}, {str(tmp_path / 'mask.nrrd')!r},
             {{"radiomics_params": {str(tmp_path / 'params.yaml')!r}, "habitat_method": "tumour"}}, "c")
print(" ".join(sorted(m.split(".", 1)[1] for m in sys.modules if m.startswith("DPETResponseLib."))))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    loaded = set(run.stdout.split())
    assert "features.radiomics" in loaded, loaded
    outside = {m for m in loaded if m.split(".")[0] not in analysis.ANALYSIS_FOLDERS}
    assert not outside, f"modules the analysis runs, outside ANALYSIS_FOLDERS: {sorted(outside)}"
    package = tmp_path / "package"
    shutil.copytree(Path(analysis.__file__).parents[1], package)
    assert analysis.code_digest(package) == analysis.analysis_code_version()
    sources = [s for folder in analysis.ANALYSIS_FOLDERS for s in sorted((package / folder).rglob("*.py"))]
    assert len(sources) >= 12
    for source in sources:
        original = source.read_bytes()
        source.write_bytes(original + b"\n")
        assert analysis.code_digest(package) != analysis.analysis_code_version(), source
        source.write_bytes(original)


def test_extract_and_train_give_the_same_features(tmp_path):
    """`extract` and `train` on one manifest with one settings file learn the habitats on the same cases (the
    labelled train split: an unlabelled train case is in neither) and share one cache: train computes nothing
    that extract already did, and its training table equals extract's rows for those cases."""
    import json

    from DPETResponseLib.cli import main
    from DPETResponseLib.study.model import StudyModel
    from DPETResponseLib.synthetic import make_cohort

    manifest = make_cohort(tmp_path / "cohort", n=30, seed=3)
    cases = pd.read_csv(manifest)
    unlabelled = cases.index[cases["split"] == "train"][0]
    cases.loc[unlabelled, "label"] = np.nan
    cases.to_csv(manifest, index=False)
    (tmp_path / "params.yaml").write_text(FIRST_ORDER_ONLY)
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"n_folds": 3, "deep": False, "classifiers": ["lr"],
                                    "analysis": {"radiomics_params": str(tmp_path / "params.yaml")}}))
    assert main(["extract", str(manifest), "--out", str(tmp_path / "features.csv"), "--config", str(settings)]) == 0
    entries = set((manifest.parent / ".dpet-cache" / "analyse_case").rglob("*.json"))
    assert len(entries) == 30
    assert main(["train", str(manifest), "--out", str(tmp_path / "bundle"), "--config", str(settings)]) == 0
    assert set((manifest.parent / ".dpet-cache" / "analyse_case").rglob("*.json")) == entries  # all reused
    extracted = pd.read_csv(tmp_path / "features.csv", index_col="case_id")
    sidecar = json.loads((tmp_path / "features.json").read_text())
    model = StudyModel.load(tmp_path / "bundle")
    assert model.config.analysis["habitat_model"] == sidecar["settings"]["habitat_model"]
    trained = model.background_
    n_train = int(((cases["split"] == "train") & cases["label"].notna()).sum())
    assert cases.loc[unlabelled, "case_id"] not in trained.index and len(trained) == n_train
    features = [c for c in trained.columns if c.startswith(("pet_", "whole_", "high_", "low_", "sub_", "ith_"))]
    assert len(features) > 50
    np.testing.assert_array_equal(trained[features].to_numpy(float),
                                  extracted.loc[trained.index, features].to_numpy(float))


def test_train_reads_no_held_out_image(tmp_path, monkeypatch):
    """Leakage, structurally: `train` (features, population-habitat centroids, every fit) reads the images of the
    labelled training cases and of no other case."""
    import DPETResponseLib.io.images as io
    from DPETResponseLib.io.manifest import read_manifest, training_cases
    from DPETResponseLib.protocol import train
    from DPETResponseLib.synthetic import make_cohort

    manifest = make_cohort(tmp_path / "cohort", n=24, seed=5)
    (tmp_path / "params.yaml").write_text(FIRST_ORDER_ONLY)
    read = []
    original = io.read_pet
    monkeypatch.setattr(io, "read_pet", lambda path, *args, **kwargs: read.append(Path(path).resolve())
                        or original(path, *args, **kwargs))
    train(manifest, tmp_path / "bundle", config={"n_folds": 3, "deep": False, "classifiers": ["lr"],
                                                  "analysis": {"radiomics_params": str(tmp_path / "params.yaml")}},
          jobs=1, progress=False)
    cases = read_manifest(manifest)
    expected = {Path(p).resolve() for p in training_cases(cases)["image"]}
    assert set(read) == expected and len(expected) < len(cases)
