"""What an evaluation records about its cohort (study.record): per split, cases listed, labelled, analysed and
failed, events, and clinical values missing per column."""

import numpy as np
import pandas as pd

from DPETResponseLib.study.record import _mask_format, _split_counts


def test_split_counts_follow_the_manifest():
    cases = pd.DataFrame({
        "case_id": [f"c{i}" for i in range(7)],
        "image": "x", "mask": "m.nii.gz",
        "label": pd.array([1, 0, 1, pd.NA, 0, 1, 0], dtype="Int64"),
        "split": ["train", "train", "train", "train", "test", "test", "test"],
        "age": [50, np.nan, 61, np.nan, 40, np.nan, np.nan],
        "grade": ["2", "3", None, "1", "2", "2", "3"],
    }).set_index("case_id")
    counts = _split_counts(cases, analysed={"c0", "c1", "c2", "c4", "c5"}, failed={"c6": "mask empty"})
    assert counts["train"] == {"listed": 4, "labelled": 3, "events": 2, "analysed": 3, "failed": {},
                               "clinical_missing": {"age": 1, "grade": 1}}  # c3 is unlabelled: not counted
    assert counts["test"] == {"listed": 3, "labelled": 3, "events": 1, "analysed": 2, "failed": {"c6": "mask empty"},
                              "clinical_missing": {"age": 2, "grade": 0}}


def test_mask_formats_are_named(tmp_path):
    assert [_mask_format(p) for p in ("a/b.nii.gz", "b.NII", "c.seg.nrrd", "d.dcm", "e.mha", "f.xyz")] == \
        ["NIfTI", "NIfTI", "NRRD", "DICOM (RTSTRUCT or SEG)", "MetaImage", ".xyz"]
    assert _mask_format(str(tmp_path)) == "DICOM folder"
