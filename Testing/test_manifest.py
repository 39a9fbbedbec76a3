"""read_manifest / validate_for_training / clinical_columns: paths, dtypes, and every manifest problem's message."""

import re
import warnings

import pandas as pd
import pytest

from DPETResponseLib.core.errors import ManifestError
from DPETResponseLib.io.manifest import ManifestWarning, clinical_columns, read_manifest, validate_for_training

HEADER = "case_id,image,mask,label,split"


def _write(folder, lines, files=True):
    """A manifest in ``folder`` whose image/mask paths exist (created empty) unless ``files`` is False."""
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    if files:
        for line in lines[1:]:
            for name in line.split(",")[1:3]:
                if name and not name.startswith("/"):
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    (folder / name).touch()
    return path


def test_paths_labels_splits_and_clinical_dtypes(tmp_path):
    absolute = tmp_path / "elsewhere" / "p3.nii.gz"
    absolute.parent.mkdir()
    absolute.touch()
    path = _write(tmp_path, [
        HEADER + ",age,grade,ki67",
        "P1,img/p1.nii.gz,img/p1_mask.nii.gz,1,train,54,G3,30.5",
        "P2,img/p2.nii.gz,img/p2_mask.nii.gz,0,Train,61,G2,",
        f"P3,{absolute},img/p3_mask.nii.gz,,test2,47,NA,12",
        "P4,img/p4.nii.gz,img/p4_mask.nii.gz,1.0,,70,G1,unknown",
    ])
    df = read_manifest(path)
    assert list(df.index) == ["P1", "P2", "P3", "P4"] and df.index.name == "case_id"
    assert df.loc["P1", "image"] == str(tmp_path / "img" / "p1.nii.gz")
    assert df.loc["P3", "image"] == str(absolute)
    assert df["label"].dtype == "Int64" and df["label"].tolist()[:2] == [1, 0]
    assert pd.isna(df.loc["P3", "label"]) and df.loc["P4", "label"] == 1
    assert df.loc["P2", "split"] == "train" and df.loc["P3", "split"] == "test2" and pd.isna(df.loc["P4", "split"])
    assert clinical_columns(df) == ["age", "grade", "ki67"]
    assert df["age"].dtype == "int64" and df["age"].sum() == 54 + 61 + 47 + 70
    assert df["ki67"].dtype == "float64" and df["ki67"].isna().tolist() == [False, True, False, True]
    assert pd.api.types.is_string_dtype(df["grade"]) and df["grade"].isna().tolist() == [False, False, True, False]
    assert df.attrs["warnings"] == []


@pytest.mark.parametrize("lines,files,expected", [
    ([HEADER.replace(",label", ""), "P1,a.nii,b.nii,train"], True,
     r"missing required column\(s\) label \(found: case_id, image, mask, split"),
    ([HEADER, "P1,a1.nii,b1.nii,1,train", "P2,a2.nii,b2.nii,0,train", "P1,a3.nii,b3.nii,0,test",
      "P2,a4.nii,b4.nii,1,test"], True, r"duplicate case_id\(s\) P1, P2"),
    ([HEADER, "P1,a1.nii,b1.nii,1,train", "P2,a2.nii,,0,train", "P3,a3.nii,b3.nii,0,test"], False,
     r"4 missing file\(s\): P1 image .*a1.nii, P1 mask .*b1.nii, P2 image .*a2.nii, P2 mask \(no path given\)"),
    ([HEADER, "P1,a1.nii,b1.nii,2,train", "P2,a2.nii,b2.nii,yes,train", "P3,a3.nii,b3.nii,0,test"], True,
     r"label column 'label' must be 0, 1 or empty \(unknown\): P1='2', P2='yes'"),
    ([HEADER, "P1,a1.nii,b1.nii,1,validation"], True,
     r"split must be train, test, test2, ... or empty: P1='validation'"),
    ([HEADER], True, r"lists no cases"),
])
def test_manifest_problems_are_listed(tmp_path, lines, files, expected):
    path = _write(tmp_path, lines, files=files)
    if not files:  # leave P3's files in place: only the missing ones must be listed
        (tmp_path / "a3.nii").touch()
        (tmp_path / "b3.nii").touch()
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert re.search(expected, str(info.value)), str(info.value)
    assert str(path) in str(info.value)
    assert "P3" not in str(info.value)  # P3 is a good row wherever it appears


def test_all_problems_reported_at_once(tmp_path):
    path = _write(tmp_path, [HEADER, "P1,a1.nii,b1.nii,3,train", "P1,a2.nii,b2.nii,0,train"], files=False)
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    message = str(info.value)
    assert "duplicate case_id(s) P1" in message and "4 missing file(s)" in message and "P1='3'" in message


def test_body_mask_column_is_a_path_for_every_case_and_no_predictor(tmp_path):
    """``body_mask``: resolved like the images, never a clinical column; a case without one, or a body mask file that
    does not exist, is refused by name (every case needs one once the column is given)."""
    lines = [HEADER + ",body_mask,age", "P1,a1.nii,b1.nii,1,train,body/p1.nii,54",
             "P2,a2.nii,b2.nii,0,train,body/p2.nii,61"]
    path = _write(tmp_path, lines)
    (tmp_path / "body").mkdir()
    for case in ("p1", "p2"):
        (tmp_path / "body" / f"{case}.nii").touch()
    df = read_manifest(path)
    assert df.loc["P2", "body_mask"] == str(tmp_path / "body" / "p2.nii")
    assert clinical_columns(df) == ["age"]
    path = _write(tmp_path, [*lines, "P3,a3.nii,b3.nii,0,test,,47", "P4,a4.nii,b4.nii,1,test,body/p4.nii,50"])
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    message = str(info.value)
    assert "'body_mask' is empty for P3" in message
    assert re.search(r"1 missing file\(s\): P4 body_mask .*p4.nii", message)
    assert "P1" not in message and "P2" not in message


def test_another_label_column_is_the_outcome_and_no_outcome_is_a_predictor(tmp_path):
    """``label_column="response"``: response is read as the label (0/1/unknown), and neither it nor the manifest's
    label column is a clinical column; the manifest needs no label column then."""
    path = _write(tmp_path, [HEADER + ",response,age", "P1,a1.nii,b1.nii,1,train,0,54", "P2,a2.nii,b2.nii,0,train,1,61",
                             "P3,a3.nii,b3.nii,1,test,,47", "P4,a4.nii,b4.nii,,test,1.0,70"])
    df = read_manifest(path, label_column="response")
    assert df["label"].dtype == "Int64" and df["label"].tolist()[:2] == [0, 1] and df.loc["P4", "label"] == 1
    assert pd.isna(df.loc["P3", "label"])
    assert clinical_columns(df) == ["age"] and "response" not in df.columns
    assert df.attrs["label_column"] == "response" and df.attrs["outcome_columns_ignored"] == ["label"]
    default = read_manifest(path)
    assert default["label"].tolist()[:3] == [1, 0, 1] and default.attrs["outcome_columns_ignored"] == []
    without_label = _write(tmp_path, ["case_id,image,mask,split,response", "P1,a1.nii,b1.nii,train,1"])
    assert read_manifest(without_label, label_column="response")["label"].tolist() == [1]


@pytest.mark.parametrize("lines,label_column,expected", [
    ([HEADER + ",response", "P1,a1.nii,b1.nii,1,train,1", "P2,a2.nii,b2.nii,0,train,2",
      "P3,a3.nii,b3.nii,0,test,no"], "response",
     r"label column 'response' must be 0, 1 or empty \(unknown\): P2='2', P3='no'"),
    ([HEADER, "P1,a1.nii,b1.nii,1,train"], "response",
     r"missing required column\(s\) response \(the label column\) \(found: case_id, image, mask, label, split; "
     r"required: case_id, image, mask, response, split\)"),
    ([HEADER, "P1,a1.nii,b1.nii,1,train"], "split", r"label column 'split': name a manifest column with the 0/1 "
                                                    r"outcome, not one of case_id, image, mask, split"),
])
def test_bad_label_column_is_named(tmp_path, lines, label_column, expected):
    path = _write(tmp_path, lines)
    with pytest.raises(ManifestError, match=expected):
        read_manifest(path, label_column=label_column)


def test_mixed_type_clinical_column_warns_and_keeps_text(tmp_path):
    path = _write(tmp_path, [HEADER + ",age,ki67", "P1,a1.nii,b1.nii,1,train,54,20", "P2,a2.nii,b2.nii,0,train,61,<10",
                             "P3,a3.nii,b3.nii,0,train,47,high"])
    with pytest.warns(ManifestWarning, match=r"clinical column 'ki67' mixes numbers \(20\) and text \(<10, high\)"):
        df = read_manifest(path)
    assert df["ki67"].tolist() == ["20", "<10", "high"] and df["age"].dtype == "int64"
    assert len(df.attrs["warnings"]) == 1


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match=r"manifest .*nope.csv not found"):
        read_manifest(tmp_path / "nope.csv")


def _cohort(train_pos, train_neg, test_pos=2, test_neg=2):
    rows = [(1, "train")] * train_pos + [(0, "train")] * train_neg + [(1, "test")] * test_pos + [(0, "test")] * test_neg
    return pd.DataFrame({"label": pd.array([r[0] for r in rows], dtype="Int64"), "split": [r[1] for r in rows]},
                        index=[f"P{i}" for i in range(len(rows))])


def test_validate_for_training_accepts_enough_cases_of_each_class():
    validate_for_training(_cohort(5, 9), n_folds=5)  # 5 of the minority class: one per fold
    # the CNN's early-stopping split takes one more of each class out of each fold's training part
    with pytest.raises(ManifestError, match="5-fold cross-validation with the CNN needs at least 6 of each class"):
        validate_for_training(_cohort(5, 9), n_folds=5, early_stopping=True)
    validate_for_training(_cohort(6, 9), n_folds=5, early_stopping=True)


@pytest.mark.parametrize("cohort,n_folds,expected", [
    (_cohort(4, 20), 5, r"split 'train' has 24 labelled cases \(4 positive, 20 negative\): 5-fold cross-validation "
                        r"needs at least 5 of each class"),
    (_cohort(0, 20), 5, r"split 'train' has one class only \(0 positive, 20 negative\)"),
    (_cohort(10, 10, test_pos=3, test_neg=0), 5, r"split 'test' has one class only \(3 positive, 0 negative\)"),
    (_cohort(0, 0), 5, r"no labelled case in split 'train' \(splits found: test\)"),
])
def test_validate_for_training_problems(cohort, n_folds, expected):
    with pytest.raises(ManifestError, match=expected):
        validate_for_training(cohort, n_folds=n_folds)


def test_real_sts_cohort_manifest(tmp_path, shared_data):
    """The 35 STS patients with their outcome (lung metastases, 13 positive) and clinical columns."""
    outcomes = pd.read_csv(shared_data / "sts_pet" / "outcomes.csv")
    sts = shared_data / "sts_pet"
    manifest = outcomes.rename(columns={"patient_id": "case_id", "lung_mets": "label"})
    manifest.insert(1, "image", [str(sts / c / "PET_image.nii.gz") for c in manifest["case_id"]])
    manifest.insert(2, "mask", [str(sts / c / "PET_mask.nii.gz") for c in manifest["case_id"]])
    manifest.insert(4, "split", "train")
    manifest.to_csv(tmp_path / "sts.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ManifestWarning)
        df = read_manifest(tmp_path / "sts.csv")
    assert len(df) == 35 and int(df["label"].sum()) == 13
    assert df["age"].dtype == "int64" and pd.api.types.is_string_dtype(df["sex"])
    assert clinical_columns(df)[:3] == ["age", "sex", "histological_type"]
    validate_for_training(df, n_folds=5)
    with pytest.raises(ManifestError, match=r"35 labelled cases \(13 positive, 22 negative\): 14-fold"):
        validate_for_training(df, n_folds=14)
