"""Pathway estimators on synthetic feature tables with known informative columns and known coefficients."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from DPETResponseLib.core.errors import ConfigError, InputError
from DPETResponseLib.learn.pathways import (
    ClinicalPathway,
    ColumnProbability,
    ITHPathway,
    RadiomicsPathway,
    clinical_columns,
    make_classifier,
)

SIGNALS = ("whole_original_firstorder_Signal", "high_original_glszm_Signal")


def feature_table(n=90, seed=0, n_noise=60, radiomics_effect=1.5, dl_effect=1.5, ith_effect=0.8,
                  embedding_effect=1.0, labels=None):
    """A feature table shaped like the cohort's: ``n_noise`` noise radiomics columns per region (scales 1..n),
    two informative radiomics columns (``SIGNALS``, mean shift ``radiomics_effect`` SD between classes),
    ``ith_score2d`` (shift ``ith_effect``), ``dl_prob`` (logit shift ``dl_effect``, independent noise),
    16 embedding columns of which 2 are shifted by ``embedding_effect``, and clinical noise (age with missing values,
    grade).
    ``labels`` replaces the balanced labels (e.g. random ones)."""
    rng = np.random.default_rng(seed)
    if labels is None:
        y = np.array([0, 1] * (n // 2))
        rng.shuffle(y)
    else:
        y = np.asarray(labels)
    cols = {}
    for region in ("whole", "high", "low"):
        for i in range(n_noise):
            cols[f"{region}_original_glcm_Noise{i:03d}"] = rng.normal(size=n) * (i + 1)
    cols[SIGNALS[0]] = radiomics_effect * y + rng.normal(size=n)
    cols[SIGNALS[1]] = -radiomics_effect * y + rng.normal(size=n)
    cols["pet_SUVmax"] = rng.gamma(4, 2, size=n)
    cols["sub_high_fraction"] = rng.uniform(size=n)
    cols["ith_score2d"] = ith_effect * y + rng.normal(size=n)
    cols["dl_prob"] = 1 / (1 + np.exp(-(dl_effect * (2 * y - 1) + rng.normal(size=n))))
    for i in range(16):
        cols[f"dl_emb_{i:03d}"] = rng.normal(size=n) + (embedding_effect * y if i < 2 else 0)
    cols["age"] = rng.integers(30, 70, size=n).astype(float)
    cols["grade"] = rng.choice(["G1", "G2", "G3"], size=n)
    cols["label"] = y
    cols["split"] = "train"
    X = pd.DataFrame(cols, index=pd.Index([f"case{seed}_{i:03d}" for i in range(n)], name="case_id"))
    X.loc[X.index[:3], "age"] = np.nan
    return X, y


def test_radiomics_pathway_recovers_informative_columns_and_generalises():
    X, y = feature_table()
    m = RadiomicsPathway(classifiers=("lr", "nb", "knn"), inner_cv=3).fit(X, y)
    assert set(SIGNALS) <= set(m.selected_features_) and len(m.selected_features_) <= 5
    assert set(m.inner_cv_auc_) == {"all/lr", "all/nb", "all/knn"}
    assert f"{m.feature_set_}/{m.classifier_name_}" == max(m.inner_cv_auc_, key=m.inner_cv_auc_.get)
    # Two independent unit-variance columns shifted by 1.5 SD: Mahalanobis distance D = sqrt(2) * 1.5, so the
    # best possible AUC is Phi(D / sqrt(2)) = Phi(1.5) = 0.933; on 400 new cases the pathway must come close.
    Xt, yt = feature_table(n=400, seed=1)
    auc = roc_auc_score(yt, m.predict_proba(Xt)[:, 1])
    assert 0.87 <= auc <= 0.97
    # Regions restrict the columns: whole only -> only whole_ features, the whole_ signal among them.
    whole = RadiomicsPathway(regions=("whole",), classifiers=("lr",)).fit(X, y)
    assert all(f.startswith("whole_") for f in whole.selected_features_)
    assert SIGNALS[0] in whole.selected_features_ and whole.inner_cv_auc_ == {}


def test_radiomics_pathway_with_every_classifier_is_deterministic():
    X, y = feature_table(seed=2)
    a = RadiomicsPathway(inner_cv=3, random_state=7).fit(X, y)
    b = RadiomicsPathway(inner_cv=3, random_state=7).fit(X, y)
    assert set(a.inner_cv_auc_) == {"all/lr", "all/rf", "all/xgb", "all/knn", "all/nb"}
    assert all(v > 0.75 for v in a.inner_cv_auc_.values())  # every classifier sees the 2 informative columns
    assert a.inner_cv_auc_ == b.inner_cv_auc_
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    xgb = make_classifier("xgb")
    assert xgb.get_params()["n_jobs"] == 1 and xgb.get_params()["tree_method"] == "hist"


def test_clinical_pathway_columns_and_known_coefficient():
    X, y = feature_table()
    assert clinical_columns(X) == ["age", "grade"]  # label/split are manifest bookkeeping, not clinical
    m = ClinicalPathway().fit(X, y)
    assert m.columns_ == ["age", "grade", "pet_SUVmax"] and m.categorical_ == ["grade"]
    assert list(m.explanation_inputs(X).columns) == ["age", "pet_SUVmax", "grade_G1", "grade_G2", "grade_G3"]
    # Known truth: logit(pCR) = 1.0 * (age - 50) / 10 + 0 * grade, n = 4000 -> the LR coefficient of the
    # scaled age (SD ~ 10 within [30, 70), uniform SD 11.5) is 11.5 / 10 = 1.15 per SD.
    rng = np.random.default_rng(5)
    n = 4000
    big = pd.DataFrame({"age": rng.uniform(30, 70, n), "grade": rng.choice(["G1", "G2"], n)})
    yy = (rng.uniform(size=n) < 1 / (1 + np.exp(-(big.age - 50) / 10))).astype(int)
    fitted = ClinicalPathway(clinical_columns=["age", "grade"], include_suvmax=False).fit(big, yy)
    coef = dict(zip(fitted.explanation_inputs(big).columns, fitted.explained_estimator_.coef_.ravel()))
    assert coef["age"] == pytest.approx(big.age.std(ddof=0) / 10, rel=0.1)
    assert abs(coef["grade_G1"]) < 0.1
    # An unseen category and a missing value still predict (one-hot ignores, median imputes).
    new = pd.DataFrame({"age": [np.nan, 60.0], "grade": ["G9", "G1"]})
    p = fitted.predict_proba(new)
    assert p.shape == (2, 2) and np.allclose(p.sum(axis=1), 1)


def test_ith_pathway_known_coefficient():
    rng = np.random.default_rng(6)
    n = 4000
    X = pd.DataFrame({"ith_score2d": rng.normal(2.0, 0.5, n)})
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-1.2 * (X.ith_score2d - 2.0) / 0.5))).astype(int)
    m = ITHPathway().fit(X, y)
    assert m.explained_estimator_.coef_.ravel()[0] == pytest.approx(1.2, rel=0.1)


def test_column_probability_passes_through_and_imputes_training_median():
    X = pd.DataFrame({"dl_prob": [0.1, 0.2, 0.9, np.nan, 0.7]})
    m = ColumnProbability().fit(X, [0, 0, 1, 1, 1])
    assert m.median_ == pytest.approx(0.45)  # median of 0.1, 0.2, 0.7, 0.9
    np.testing.assert_allclose(m.predict_proba(X)[:, 1], [0.1, 0.2, 0.9, 0.45, 0.7])
    np.testing.assert_allclose(m.predict_proba(X).sum(axis=1), 1.0)
    with pytest.raises(InputError, match=r"dl_prob must be a probability.*caseB"):
        m.predict_proba(pd.DataFrame({"dl_prob": [0.5, 1.5]}, index=["caseA", "caseB"]))


def test_estimator_contract_and_bad_input():
    X, y = feature_table()
    p = RadiomicsPathway(n_mrmr=7, classifiers=("lr",))
    assert clone(p).get_params()["n_mrmr"] == 7
    with pytest.raises(InputError, match="lacks column.*ith_score3d"):
        ITHPathway(columns=("ith_score3d",)).fit(X, y)
    with pytest.raises(InputError, match="no radiomics column for region"):
        RadiomicsPathway(regions=("core",)).fit(X, y)
    with pytest.raises(InputError, match="pandas DataFrame"):
        ClinicalPathway().fit(X.to_numpy(), y)
    with pytest.raises(ConfigError, match="unknown classifier 'svm'"):
        RadiomicsPathway(classifiers=("lr", "svm")).fit(X, y)
    with pytest.raises(InputError, match="both classes"):
        ITHPathway().fit(X, np.zeros(len(X)))
    broken = X.copy()
    broken.loc["case0_004", "whole_original_glcm_Noise001"] = np.inf
    with pytest.raises(InputError, match="infinite values in column.*whole_original_glcm_Noise001.*case0_004"):
        RadiomicsPathway(classifiers=("lr",)).fit(broken, y)
    fitted = ITHPathway().fit(X, y)
    with pytest.raises(InputError, match="lacks column.*ith_score2d"):
        fitted.predict_proba(X.drop(columns="ith_score2d"))


def test_feature_set_is_chosen_inside_the_training_cases():
    """The radiomics pathway compares feature sets by inner CV: with the signal only in wavelet columns it takes
    "all"; with the signal only in the Original image and every filtered column noise, "all" has the signal too,
    so the comparison is scored, recorded per candidate, and the columns follow the choice."""
    from DPETResponseLib.learn.pathways import feature_set_columns

    X, y = feature_table(n=120, seed=3, radiomics_effect=0.0)
    rng = np.random.default_rng(3)
    for i in range(40):
        X[f"whole_log-sigma-2-0-mm-3D_firstorder_Noise{i}"] = rng.normal(size=len(y))
        X[f"whole_wavelet-LLH_glcm_Noise{i}"] = rng.normal(size=len(y))
    X["whole_wavelet-HHH_firstorder_Signal"] = 1.5 * y + rng.normal(size=len(y))
    columns = [c for c in X.columns if c.startswith(("whole_", "sub_"))]
    assert feature_set_columns(columns, "original") == [c for c in columns if "_original_" in c or c.startswith("sub_")]
    assert "whole_log-sigma-2-0-mm-3D_firstorder_Noise0" in feature_set_columns(columns, "original+log")
    assert "whole_wavelet-LLH_glcm_Noise0" not in feature_set_columns(columns, "original+log")
    with pytest.raises(ConfigError, match="unknown radiomics feature set 'wavelet'"):
        feature_set_columns(columns, "wavelet")
    m = RadiomicsPathway(regions=("whole", "sub"), classifiers=("lr",), inner_cv=3,
                         feature_sets=("original", "original+log", "all")).fit(X, y)
    assert set(m.inner_cv_auc_) == {"original/lr", "original+log/lr", "all/lr"}
    assert m.feature_set_ == "all" and m.inner_cv_auc_["all/lr"] > m.inner_cv_auc_["original/lr"] + 0.1
    assert "whole_wavelet-HHH_firstorder_Signal" in m.selected_features_
    assert set(m.columns_) == set(feature_set_columns(columns, "all"))


def test_baseline_uses_whole_tumour_first_order_shape_and_clinical_columns():
    """The baseline reads the PET metrics, the whole tumour's Original first-order and shape features and the
    clinical columns, nothing else, and finds a signal planted in a shape feature (population AUC of a 1.5 SD shift:
    Phi(1.5 / sqrt 2) = 0.86)."""
    from DPETResponseLib.learn.pathways import BaselinePathway

    def table(n, seed):
        X, y = feature_table(n=n, seed=seed, radiomics_effect=0.0)
        rng = np.random.default_rng(seed)
        X["whole_original_shape_Sphericity"] = 1.5 * y + rng.normal(size=n)
        X["whole_original_firstorder_Mean"] = rng.normal(size=n)
        X["whole_wavelet-LLH_firstorder_Mean"] = 3.0 * y + rng.normal(size=n)  # not the baseline's: left out
        return X, y

    X, y = table(150, 1)
    m = BaselinePathway().fit(X, y)
    assert m.columns_ == ["whole_original_firstorder_Signal", "pet_SUVmax", "whole_original_shape_Sphericity",
                          "whole_original_firstorder_Mean", "age", "grade"]
    assert m.used_columns_ == m.columns_
    Xt, yt = table(400, 2)
    assert 0.78 < roc_auc_score(yt, m.predict_proba(Xt)[:, 1]) < 0.92
    with pytest.raises(InputError, match="no PET metric or whole-tumour first-order/shape column"):
        BaselinePathway().fit(X[["age", "grade"]], y)
