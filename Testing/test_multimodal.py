"""Other modalities beside the PET: the manifest's image_<modality>/mask_<modality> columns, each modality's own
analysis (units checked, MR normalised), missing modalities, and the model end to end on the STS patients' PET, CT
and T1 MR (separate acquisitions on their own grids, not registered; CT missing for 10 of 35 in the data, MR
dropped here for a third of the cases)."""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from conftest import FAST_RADIOMICS_YAML, SHARED_DATA

from DPETResponseLib.core.errors import InputError, ManifestError
from DPETResponseLib.features.analysis import analyse_modality_image, modality_settings
from DPETResponseLib.io.manifest import (
    ManifestWarning,
    clinical_columns,
    missing_modalities,
    modalities,
    read_manifest,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from sts_multimodal import build_manifest  # noqa: E402  (the benchmark's manifest of the same patients)

TESTING = FAST_RADIOMICS_YAML.parent
FAST_MODALITIES = {"ct": str(TESTING / "fast_radiomics_ct.yaml"), "mr": str(TESTING / "fast_radiomics_unitless.yaml")}
STS = SHARED_DATA / "sts_pet"


# ---- manifest ---------------------------------------------------------------------------------------------------
def _files(folder, n: int) -> list[str]:
    for i in range(n):
        for name in ("pet", "pet_mask", "ct", "ct_mask", "mr"):
            (folder / f"{name}{i}.nii.gz").write_bytes(b"x")
    return [f"c{i}" for i in range(n)]


def _manifest(folder, rows: dict) -> str:
    path = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def _rows(folder, n: int = 10) -> dict:
    ids = _files(folder, n)
    return {"case_id": ids, "image": [f"pet{i}.nii.gz" for i in range(n)],
            "mask": [f"pet_mask{i}.nii.gz" for i in range(n)], "label": [i % 2 for i in range(n)], "split": "train",
            "image_ct": [f"ct{i}.nii.gz" if i != 3 else "" for i in range(n)],
            "mask_ct": [f"ct_mask{i}.nii.gz" if i != 3 else "" for i in range(n)],
            "image_mr": [f"mr{i}.nii.gz" if i % 4 else "" for i in range(n)],
            "age": [50 + i for i in range(n)], "site": ["A", "B"] * (n // 2),
            "patient_name": [f"Patient {i}" for i in range(n)], "grade": ["high", "low"] * (n // 2)}


def test_manifest_reads_modalities_site_and_leaves_identifiers_out(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cases = read_manifest(_manifest(tmp_path, _rows(tmp_path)))
    assert modalities(cases) == ["ct", "mr"]
    # the site and the image columns are no predictors; the identifier column is left out, with a warning naming it
    assert clinical_columns(cases) == ["age", "grade"]
    assert list(cases.attrs["left_out_columns"]) == ["patient_name"]
    assert any("'patient_name'" in str(w.message) and w.category is ManifestWarning for w in caught)
    assert cases["site"].tolist() == ["A", "B"] * 5
    assert cases.loc["c1", "image_ct"] == str((tmp_path / "ct1.nii.gz").resolve())
    assert "mask_mr" not in cases.columns  # no mask column: the PET's mask, on the MR's grid (checked at analysis)
    assert missing_modalities(cases.loc["c3"], ["ct", "mr"]) == ["ct"]
    assert missing_modalities(cases.loc["c4"], ["ct", "mr"]) == ["mr"]
    assert missing_modalities(cases.loc["c1"], ["ct", "mr"]) == []


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(mask_ct=[""] + r["mask_ct"][1:]), "c0 (image_ct without mask_ct)"),
    (lambda r: r.update(image_ct=[""] + r["image_ct"][1:]), "c0 (mask_ct without image_ct)"),
    (lambda r: r.update(mask_us=r["mask_ct"]), "'mask_us' has no image column 'image_us'"),
    (lambda r: r.update(image_CT=r.pop("image_ct"), mask_CT=r.pop("mask_ct")), "'image_CT' is not image_<modality>"),
    (lambda r: r.update(image_pet=r.pop("image_mr")), "modality name 'pet' is taken"),
    (lambda r: r.update(image_ct=["missing.nii.gz"] + r["image_ct"][1:]), "c0 image_ct"),
    (lambda r: r.update(ct_scan=r.pop("image_ct"), ct_seg=r.pop("mask_ct")), "'ct_scan', 'ct_seg' hold file paths"),
])
def test_manifest_refuses_what_it_cannot_read_right(tmp_path, change, message):
    rows = _rows(tmp_path)
    change(rows)
    with pytest.raises(ManifestError) as err:
        read_manifest(_manifest(tmp_path, rows))
    assert message in str(err.value)


# ---- per-modality analysis --------------------------------------------------------------------------------------
def _sts_modality(case: str, name: str) -> tuple[sitk.Image, sitk.Image]:
    return (sitk.ReadImage(str(STS / case / f"{name}_image.nii.gz"), sitk.sitkFloat32),
            sitk.ReadImage(str(STS / case / f"{name}_mask.nii.gz")))


def test_ct_in_hounsfield_units_and_stored_values_refused():
    image, mask = _sts_modality("STS_001", "CT")
    settings = modality_settings({"modality_params": FAST_MODALITIES}, "ct")
    features, _ = analyse_modality_image(image, mask, settings, "STS_001")
    shifted, _ = analyse_modality_image(image + 100.0, mask, settings, "STS_001")
    # HU are absolute: no normalisation, the mean moves by exactly the shift
    assert shifted["ct_whole_original_firstorder_Mean"] - features["ct_whole_original_firstorder_Mean"] == \
        pytest.approx(100.0, abs=1e-3)
    # raw stored values (air at 0, soft tissue about 1024 + 40): the DICOM rescale was not applied
    with pytest.raises(InputError, match="does not look like Hounsfield units"):
        analyse_modality_image(image + 1024.0, mask, settings, "STS_001")


def test_mr_features_do_not_depend_on_the_arbitrary_mr_scale():
    image, mask = _sts_modality("STS_001", "MR_T1")
    settings = modality_settings({"modality_params": FAST_MODALITIES}, "mr")
    assert settings["kind"] == "unitless"
    features, _ = analyse_modality_image(image, mask, settings, "STS_001")
    rescaled, _ = analyse_modality_image(image * 7.0 + 100.0, mask, settings, "STS_001")
    assert set(features) == set(rescaled) and all(name.startswith("mr_whole_original_") for name in features)
    for name, value in features.items():
        assert rescaled[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


# ---- the model end to end on STS PET + CT + MR ------------------------------------------------------------------
@pytest.fixture(scope="module")
def sts_run(tmp_path_factory):
    from DPETResponseLib.protocol import evaluate, train

    folder = tmp_path_factory.mktemp("sts_multimodal")
    # 9 of 35 held out; the MR of every third case left out on top of the data's missing CTs; two sites (the
    # radiomics are harmonised by ComBat inside the folds)
    manifest = str(build_manifest(folder, held_out_every=4, drop_mr_every=3, clinical=["age"]))
    rows = pd.read_csv(manifest)
    rows["site"] = np.where(np.arange(len(rows)) % 2, "B", "A")
    rows.to_csv(manifest, index=False)
    config = {"n_folds": 3, "seed": 0, "deep_preset": "cpu-fast", "deep_epochs": 2, "e2e_fusion": False,
              "deep_overrides": {"spacing": 8.0, "size": 16}, "classifiers": ["lr"],
              "radiomics_feature_sets": ["original"],
              "analysis": {"habitat_method": "tumour", "radiomics_params": str(FAST_RADIOMICS_YAML),
                           "peritumoural_mm": 0.0, "ith_dims": [2], "modality_params": FAST_MODALITIES}}
    model = train(manifest, folder / "bundle", config=config, jobs=2, cache_dir=folder / "cache", progress=False)
    report = evaluate(folder / "bundle", manifest, folder / "report", jobs=2, cache_dir=folder / "cache",
                      progress=False, n_boot=100)
    metrics = json.loads((report.parent / "metrics.json").read_text())
    predictions = pd.read_csv(report.parent / "predictions.csv", index_col="case_id")
    return {"folder": folder, "manifest": manifest, "model": model, "metrics": metrics,
            "predictions": predictions, "cases": read_manifest(manifest)}


def test_training_with_incomplete_cases_scores_each_modality_on_the_cases_that_have_it(sts_run):
    cases, metrics, model = sts_run["cases"], sts_run["metrics"], sts_run["model"]
    assert model.modalities == ["ct", "mr"]
    assert {"radiomics_ct", "radiomics_mr"} <= set(model.pathways_)
    assert {"radiomics_ct", "radiomics_mr"} <= set(model.fusion_decision_.pathways_)
    assert {"radiomics_ct", "radiomics_mr"} <= set(model.fusion_feature_.feature_groups_)
    train_cases = cases[cases["split"] == "train"]
    block = metrics["splits"]["train_cv"]
    lacking = {m: int((train_cases[f"image_{m}"] == "").sum()) for m in ("ct", "mr")}
    assert lacking["ct"] > 0 and lacking["mr"] > 0
    assert block["missing_modalities"] == lacking
    # each modality's pathway is scored on the training cases that have the modality, every other model on all
    assert block["models"]["radiomics_ct"]["n"] == len(train_cases) - lacking["ct"]
    assert block["models"]["radiomics_mr"]["n"] == len(train_cases) - lacking["mr"]
    for name in ("baseline", "deep", "fusion_decision", "fusion_feature"):
        assert block["models"][name]["n"] == len(train_cases)
    test_cases = cases[cases["split"] == "test"]
    flagged = metrics["splits"]["test"]["cases_missing_modalities"]
    assert flagged == {c: [m for m in ("ct", "mr") if row[f"image_{m}"] == ""] for c, row in test_cases.iterrows()
                       if (row[["image_ct", "image_mr"]] == "").any()}
    assert sts_run["predictions"].loc[list(flagged), "radiomics_mr"].isna().tolist() == \
        ["mr" in flagged[c] for c in flagged]


def test_sites_harmonise_the_radiomics_and_get_a_table_per_split(sts_run):
    cases, metrics, model = sts_run["cases"], sts_run["metrics"], sts_run["model"]
    assert (model.site_column_, model.sites_) == ("site", ["A", "B"])
    assert "harmonise" in model.pathways_["radiomics_ct"].model_.named_steps
    assert "site" not in model.clinical_columns
    predictions = sts_run["predictions"]
    for split, block in metrics["splits"].items():
        rows = predictions[predictions["split"] == split]
        sites = cases.loc[rows.index, "site"]
        assert {s: v["n"] for s, v in block["sites"].items()} == sites.value_counts().to_dict()
        assert {s: v["n_positive"] for s, v in block["sites"].items()} == \
            rows.groupby(sites)["label"].sum().astype(int).to_dict()


def _case_files(cases, case_id, names):
    row = cases.loc[case_id]
    return {m: (row[f"image_{m}"], row[f"mask_{m}"]) for m in names if row[f"image_{m}"]}


def test_predict_without_a_modality_flags_it_and_equals_evaluate(sts_run):
    from DPETResponseLib.protocol import predict_files

    cases, folder = sts_run["cases"], sts_run["folder"]
    held_out = cases[cases["split"] == "test"]
    case_id = next(c for c, row in held_out.iterrows() if row["image_mr"] == "" and row["image_ct"])
    row = cases.loc[case_id]
    result = predict_files(folder / "bundle", row["image"], mask=row["mask"], clinical={"age": row["age"]},
                           modalities=_case_files(cases, case_id, ("ct", "mr")), site=row["site"])
    assert result.missing_modalities == ["mr"]
    assert "radiomics_mr" not in result.probabilities and "radiomics_ct" in result.probabilities
    assert any(c.startswith("mr_whole_") for c in result.imputed_inputs["fusion_feature"])
    expected = sts_run["predictions"].loc[case_id]
    for name, p in result.probabilities.items():
        assert p == pytest.approx(expected[name], abs=1e-6), name
    # the same patient predicted from the PET alone: both modalities missing, their pathways silent
    alone = predict_files(folder / "bundle", row["image"], mask=row["mask"], site=row["site"])
    assert alone.missing_modalities == ["ct", "mr"]
    assert not {"radiomics_ct", "radiomics_mr"} & set(alone.probabilities)
    with pytest.raises(InputError, match="modalities us given, but the model was trained with ct, mr"):
        predict_files(folder / "bundle", row["image"], mask=row["mask"], site=row["site"],
                      modalities={"us": (row["image_ct"], row["mask_ct"])})
    # the radiomics are harmonised by site: a patient without a training site is refused
    with pytest.raises(InputError, match=r"harmonises its radiomics by site .*training sites: A, B.*\(got 'C'\)"):
        predict_files(folder / "bundle", row["image"], mask=row["mask"], site="C")


def test_cli_predict_takes_modality_options(sts_run, capsys):
    from DPETResponseLib.cli import main
    from DPETResponseLib.scene import clinical_schema

    cases, folder = sts_run["cases"], sts_run["folder"]
    case_id = next(c for c, row in cases.iterrows() if row["image_ct"] and row["image_mr"] and row["split"] == "test")
    row = cases.loc[case_id]
    assert main(["predict", str(folder / "bundle"), "--image", row["image"], "--mask", row["mask"],
                 "--image-mr", row["image_mr"], "--mask-mr", row["mask_mr"], "--clinical", f"age={row['age']}",
                 "--site", row["site"], "--out", str(folder / "one")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["missing_modalities"] == ["ct"]
    assert json.loads((folder / "one" / "prediction.json").read_text())["missing_modalities"] == ["ct"]
    assert printed["probabilities"]["radiomics_mr"] == pytest.approx(sts_run["predictions"].loc[case_id,
                                                                                                "radiomics_mr"],
                                                                     abs=1e-6)
    # the site as a clinical value (the Slicer module's form offers the bundle's training sites)
    assert clinical_schema(folder / "bundle")["site"] == {"kind": "category", "values": ["A", "B"]}
    assert main(["predict", str(folder / "bundle"), "--image", row["image"], "--mask", row["mask"],
                 "--image-mr", row["image_mr"], "--mask-mr", row["mask_mr"], "--clinical", f"age={row['age']}",
                 f"site={row['site']}"]) == 0
    assert json.loads(capsys.readouterr().out)["probabilities"] == printed["probabilities"]
    assert main(["predict", str(folder / "bundle"), "--image", row["image"], "--mask", row["mask"],
                 "--site", row["site"], "--image-mr", row["image_mr"]]) == 2
    assert "missing --mask-mr" in capsys.readouterr().err


def test_gradcam_and_cnn_take_the_other_modalities(sts_run):
    """The CNN has a channel pair per modality; a case's heat map lies on its PET grid whatever it has."""
    from conftest import assert_heat_map_on_pet_grid

    from DPETResponseLib.io.images import read_mask, read_modality, read_pet

    model, cases = sts_run["model"], sts_run["cases"]
    assert model.deep_model_.config.modalities == ("ct", "mr")
    row = cases.iloc[0]
    image = read_pet(row["image"])
    mask = read_mask(row["mask"], image)
    ct = read_modality(row["image_ct"], "ct")
    heat = model.gradcam(image, mask, {"ct": (ct, read_mask(row["mask_ct"], ct))})
    assert_heat_map_on_pet_grid(heat, image)
    assert np.isfinite(sitk.GetArrayViewFromImage(heat)).all()


def test_a_modality_without_a_mask_column_needs_the_pet_mask_on_its_grid(tmp_path):
    """No mask_mr column: the MR is read with the PET's mask, which must lie on the MR's grid; the STS MR is not on
    the PET's, so the case fails with a message naming the MR image, not the PET."""
    from DPETResponseLib.extraction import modality_features

    manifest = pd.read_csv(build_manifest(tmp_path, clinical=[])).head(2).drop(columns="mask_mr")
    manifest.to_csv(tmp_path / "no_mr_mask.csv", index=False)
    cases = read_manifest(tmp_path / "no_mr_mask.csv")
    table, errors = modality_features(cases, {"modality_params": FAST_MODALITIES}, ["mr"], tmp_path / "cache",
                                      progress=False)
    assert sorted(errors["case_id"]) == sorted(cases.index)
    assert table.columns.empty  # no MR feature for any case
    assert all(m.startswith("mr: ") and "is not on the mr image grid" in m for m in errors["message"])
