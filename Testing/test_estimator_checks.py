"""scikit-learn's estimator checks (``parametrize_with_checks``) on the learning estimators.

ClinicalEncoder and the fusions take the feature table as a DataFrame and pick their columns by name, so every
check that fits them on a NumPy array fails by design: ``EXPECTED_FAILURES`` lists those checks with the reason,
strictly (a listed check that passes fails the test, so the list stays exact). The main points of those checks
(parameters left as given, same numbers on refit, each case predicted on its own) are tested on a table in
``test_table_estimators_keep_the_contract``.
"""

import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks
from test_pathways import feature_table

from DPETResponseLib.core.errors import InputError
from DPETResponseLib.learn.fusion import DecisionFusion, FeatureFusion, TiedLogisticRegression
from DPETResponseLib.learn.pathways import (
    ClinicalEncoder,
    ClinicalPathway,
    ColumnProbability,
    ITHPathway,
    RadiomicsPathway,
)
from DPETResponseLib.learn.selection import LassoSelector, MannWhitneySelector, MRMRSelector, VarianceCorrelationFilter


def fast_radiomics():
    return RadiomicsPathway(n_mrmr=3, max_features=2, classifiers=("lr",), inner_cv=2)


def table_estimators():
    return [
        ClinicalEncoder(columns=("age", "grade")),
        DecisionFusion({"ith": ITHPathway(), "deep": ColumnProbability()}, cv=2),
        FeatureFusion(radiomics=fast_radiomics(), clinical=ClinicalPathway(), ith_columns=("ith_score2d",),
                      n_components=2),
    ]


ESTIMATORS = [
    VarianceCorrelationFilter(),
    MannWhitneySelector(min_features=2),
    MRMRSelector(n_features=2),
    LassoSelector(max_features=2, cv=2, Cs=3),
    TiedLogisticRegression(),
    *table_estimators(),
]

TABLE = "needs the feature table as a DataFrame with named columns; the check fits on an array"
ON_A_TABLE = (  # every check that fits or transforms, for all three table estimators
    "check_array_api_input",  # skipped, like every estimator's, unless SCIPY_ARRAY_API=1 was set before import
    "check_complex_data", "check_dict_unchanged", "check_dont_overwrite_parameters", "check_dtype_object",
    "check_estimator_sparse_array", "check_estimator_sparse_matrix", "check_estimator_sparse_tag",
    "check_estimators_dtypes", "check_estimators_empty_data_messages", "check_estimators_fit_returns_self",
    "check_estimators_nan_inf", "check_estimators_overwrite_params", "check_estimators_pickle",
    "check_f_contiguous_array_estimator", "check_fit1d", "check_fit2d_1feature", "check_fit2d_1sample",
    "check_fit2d_predict1d", "check_fit_check_is_fitted", "check_fit_idempotent", "check_fit_score_takes_y",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance", "check_n_features_in",
    "check_n_features_in_after_fitting", "check_pipeline_consistency", "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
)
ON_A_TABLE_TRANSFORMER = ("check_transformer_data_not_an_array", "check_transformer_general",
                          "check_transformer_preserve_dtypes")
ON_A_TABLE_CLASSIFIER = (
    "check_classifier_data_not_an_array", "check_classifiers_classes", "check_classifiers_one_label",
    "check_classifiers_regression_target", "check_classifiers_train", "check_requires_y_none",
    "check_supervised_y_2d", "check_supervised_y_no_nan",
)
LABELS_0_1 = {  # pCR labels are 0/1 throughout the library; these checks binarise their target to {1, 2}
    "check_estimators_dtypes": "labels must be 0/1 (pCR); the check's binary target is {1, 2}",
    "check_fit2d_1feature": "labels must be 0/1 (pCR); the check's binary target is {1, 2}",
}
EXPECTED_FAILURES = {
    "MannWhitneySelector": LABELS_0_1,
    "MRMRSelector": LABELS_0_1,
    "LassoSelector": LABELS_0_1,
    "ClinicalEncoder": dict.fromkeys(ON_A_TABLE + ON_A_TABLE_TRANSFORMER, TABLE),
    "DecisionFusion": dict.fromkeys(ON_A_TABLE + ON_A_TABLE_CLASSIFIER, TABLE),
    "FeatureFusion": dict.fromkeys(ON_A_TABLE + ON_A_TABLE_CLASSIFIER, TABLE),
}


def expected_failures(estimator) -> dict[str, str]:
    return EXPECTED_FAILURES.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failures, xfail_strict=True)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", table_estimators(), ids=lambda e: type(e).__name__)
def test_table_estimators_keep_the_contract(estimator):
    """On a feature table, what the checks above cannot test for the table estimators: fit returns self and
    leaves the parameters as given; refitting, a clone and an unpickled copy give the same numbers; each case's
    output does not depend on the other cases or their order; a fusion given no label raises InputError."""
    X, y = feature_table(n=40, n_noise=5)
    params = {name: joblib.hash(value) for name, value in estimator.get_params().items()}
    output = "transform" if hasattr(estimator, "transform") else "predict_proba"
    assert estimator.fit(X, y) is estimator
    assert {name: joblib.hash(value) for name, value in estimator.get_params().items()} == params
    first = getattr(estimator, output)(X)
    for other in (estimator.fit(X, y), clone(estimator).fit(X, y), pickle.loads(pickle.dumps(estimator))):
        np.testing.assert_array_equal(getattr(other, output)(X), first)
    some = X.iloc[[7, 3, 30, 0]]
    np.testing.assert_allclose(getattr(estimator, output)(some), first[[7, 3, 30, 0]], rtol=0, atol=1e-12)
    if output == "predict_proba":
        with pytest.raises(InputError, match="requires y to be passed"):
            clone(estimator).fit(X, None)
