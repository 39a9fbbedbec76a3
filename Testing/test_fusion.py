"""Decision- and feature-level fusion: stacking mechanics, leakage on random labels, gain from independent signals."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from test_pathways import SIGNALS, feature_table

from DPETResponseLib.core.errors import ConfigError, InputError
from DPETResponseLib.learn.explain import contribution_shares
from DPETResponseLib.learn.fusion import DecisionFusion, FeatureFusion
from DPETResponseLib.learn.pathways import ClinicalPathway, ColumnProbability, ITHPathway, RadiomicsPathway
from DPETResponseLib.reporting.evaluation import auc_ci_delong

FAST_RADIOMICS = dict(classifiers=("lr", "nb"), inner_cv=3)


@pytest.mark.parametrize("weights", ["learned", "equal"])
def test_stacking_meta_learner_is_fit_on_out_of_fold_probabilities(weights):
    X, y = feature_table()
    pathways = {"clinical": ClinicalPathway(), "ith": ITHPathway(), "deep": ColumnProbability()}
    f = DecisionFusion(pathways, cv=5, weights=weights, random_state=3).fit(X, y)
    folds = StratifiedKFold(5, shuffle=True, random_state=3)
    for name, p in pathways.items():
        expected = cross_val_predict(clone(p), X, y, cv=folds, method="predict_proba")[:, 1]
        np.testing.assert_allclose(f.oof_probabilities_[name], expected, rtol=1e-12)
    oof = np.column_stack([f.oof_probabilities_[n] for n in pathways])
    if weights == "learned":  # the study's: one weight per pathway
        meta = LogisticRegression().fit(oof, y)
        coef, intercept = meta.coef_.ravel(), meta.intercept_[0]
    else:  # one unpenalised logistic regression on the mean probability, its slope shared out equally
        meta = LogisticRegression(C=np.inf, max_iter=1000).fit(oof.mean(axis=1, keepdims=True), y)
        coef, intercept = np.full(3, meta.coef_[0, 0] / 3), meta.intercept_[0]
    np.testing.assert_allclose(f.coef_.to_numpy(), coef, rtol=1e-6)
    assert f.intercept_ == pytest.approx(intercept, rel=1e-6)
    # Prediction: the meta-learner on the probabilities of the pathways refit on all training data.
    pp = f.pathway_probabilities(X)
    np.testing.assert_allclose(pp["deep"], X["dl_prob"])  # the pass-through pathway
    np.testing.assert_allclose(f.predict_proba(X)[:, 1], 1 / (1 + np.exp(-(intercept + pp.to_numpy() @ coef))),
                               rtol=1e-6)
    with pytest.raises(ConfigError, match="unknown decision-fusion weights 'median'"):
        DecisionFusion(pathways, weights="median").fit(X, y)


def test_tied_meta_learner_never_turns_pathways_round():
    from DPETResponseLib.learn.fusion import TiedLogisticRegression

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], [30, 20])
    agreeing = np.column_stack([0.3 + 0.4 * y + rng.normal(0, 0.1, 50), rng.uniform(0, 1, 50)])
    meta = TiedLogisticRegression().fit(agreeing, y)
    assert meta.coef_[0, 0] > 0 and meta.coef_[0, 0] == meta.coef_[0, 1]
    reversed_ = TiedLogisticRegression().fit(1 - agreeing, y)  # ranks the cases the wrong way round
    np.testing.assert_array_equal(reversed_.coef_, [[0.0, 0.0]])
    assert reversed_.intercept_[0] == pytest.approx(np.log(20 / 30))  # the base rate, 40%
    np.testing.assert_allclose(reversed_.predict_proba(agreeing)[:, 1], 0.4)


def _covers_half(y, p) -> bool:
    lo, hi = auc_ci_delong(y, p)
    return lo <= 0.5 <= hi


def test_no_leakage_on_random_labels():
    """Random labels, 300 noise radiomics columns: every model's out-of-fold AUC must be chance (DeLong 95% CI
    covers 0.5), while selecting features on all cases first (the leak) makes the same data look predictive."""
    rng = np.random.default_rng(11)
    labels = rng.permutation([0, 1] * 45)
    X, y = feature_table(n=90, seed=11, n_noise=100, radiomics_effect=0, dl_effect=0, ith_effect=0,
                         embedding_effect=0, labels=labels)
    radiomics = RadiomicsPathway(**FAST_RADIOMICS)
    lr_radiomics = RadiomicsPathway(classifiers=("lr",), inner_cv=3)  # inside the fusions: keeps the test fast
    models = {
        "clinical": ClinicalPathway(), "radiomics": radiomics, "ith": ITHPathway(), "deep": ColumnProbability(),
        "decision_fusion": DecisionFusion({"clinical": ClinicalPathway(), "radiomics": lr_radiomics,
                                           "ith": ITHPathway(), "deep": ColumnProbability()}, cv=3),
        "feature_fusion": FeatureFusion(radiomics=lr_radiomics),
    }
    outer = StratifiedKFold(5, shuffle=True, random_state=1)
    for name, model in models.items():
        p = cross_val_predict(model, X, y, cv=outer, method="predict_proba")[:, 1]
        assert _covers_half(y, p), (name, roc_auc_score(y, p), auc_ci_delong(y, p))
    # The control: the same selection chain fit on ALL cases, then only the classifier cross-validated.
    rad = X[[c for c in X.columns if c.startswith(("whole_", "high_", "low_"))]]
    leaked = radiomics.make_selection().fit_transform(rad, y)
    p = cross_val_predict(LogisticRegression(), leaked, y, cv=outer, method="predict_proba")[:, 1]
    assert auc_ci_delong(y, p)[0] > 0.5, roc_auc_score(y, p)


@pytest.mark.parametrize("weights", ["equal", "learned"])
def test_decision_fusion_gains_from_independent_signals(weights):
    # Radiomics: two 1.5-SD shifts (best AUC Phi(1.5) = 0.93); dl_prob: logit shifted by +-0.75 around noise of
    # SD 1 (best AUC Phi(1.5 / sqrt 2) = 0.86), independent of radiomics: together Phi(sqrt(6.75 / 2)) = 0.97.
    X, y = feature_table(n=120, seed=4, dl_effect=0.75)
    Xt, yt = feature_table(n=400, seed=5, dl_effect=0.75)
    pathways = {"clinical": ClinicalPathway(), "radiomics": RadiomicsPathway(**FAST_RADIOMICS),
                "deep": ColumnProbability()}
    f = DecisionFusion(pathways, weights=weights).fit(X, y)
    single = {name: roc_auc_score(yt, p) for name, p in f.pathway_probabilities(Xt).items()}
    fused = roc_auc_score(yt, f.predict_proba(Xt)[:, 1])
    print(weights, round(fused, 3), {k: round(v, 3) for k, v in single.items()})
    assert fused >= max(single.values()) - 0.01, (fused, single)
    assert 0.93 <= fused <= 1.0
    assert f.coef_["radiomics"] > 0 and f.coef_["deep"] > 0
    if weights == "learned":
        assert abs(f.coef_["clinical"]) < f.coef_["radiomics"]  # clinical columns are noise here
    else:  # a noise pathway keeps its share: equal weights cannot drop it, only dilute it
        assert f.coef_["clinical"] == pytest.approx(f.coef_["radiomics"])


def coefficient_shares(fusion: FeatureFusion, X) -> dict:
    """Each input group's share of mean |coefficient x input| over ``X`` (the inputs are standardised)."""
    contributions = fusion.explanation_inputs(X) * fusion.explained_estimator_.coef_.ravel()
    return contribution_shares(contributions, fusion.feature_groups_)


@pytest.mark.parametrize("radiomics_effect, embedding_effect, dominant",
                         [(0.0, 2.0, "deep"), (1.5, 0.0, "radiomics")])
def test_feature_fusion_contribution_shares_follow_the_signal(radiomics_effect, embedding_effect, dominant):
    X, y = feature_table(n=120, seed=8, radiomics_effect=radiomics_effect, embedding_effect=embedding_effect)
    f = FeatureFusion(radiomics=RadiomicsPathway(**FAST_RADIOMICS), n_components=8).fit(X, y)
    assert len(f.feature_groups_["deep"]) == 8 and f.feature_groups_["deep"][0] == "dl_emb_pc0"
    assert 1 <= len(f.feature_groups_["radiomics"]) <= 5
    if radiomics_effect:
        assert set(SIGNALS) <= set(f.feature_groups_["radiomics"])
    shares = coefficient_shares(f, X)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares[dominant] > 0.6, shares
    Xt, yt = feature_table(n=300, seed=9, radiomics_effect=radiomics_effect, embedding_effect=embedding_effect)
    assert roc_auc_score(yt, f.predict_proba(Xt)[:, 1]) > 0.85


def test_feature_fusion_fuses_every_pathway_input():
    """Clinical, ITH, selected radiomics and embedding PCs side by side in one logistic regression; the signal
    planted in a clinical column (age shifted by 1.5 SD: best AUC Phi(1.5 / sqrt 2) = 0.86) is found there."""
    def table(n, seed):
        X, y = feature_table(n=n, seed=seed, radiomics_effect=0, ith_effect=0, embedding_effect=0)
        X["age"] = 50 + 8 * (1.5 * y + np.random.default_rng(seed).normal(size=n))
        return X, y

    X, y = table(160, 12)
    f = FeatureFusion(radiomics=RadiomicsPathway(**FAST_RADIOMICS), clinical=ClinicalPathway(),
                      ith_columns=("ith_score2d",), n_components=4).fit(X, y)
    assert list(f.feature_groups_) == ["clinical", "ith", "radiomics", "deep"]
    assert f.feature_groups_["clinical"] == ["age", "pet_SUVmax", "grade_G1", "grade_G2", "grade_G3"]
    assert f.feature_groups_["ith"] == ["ith_score2d"]
    assert f.feature_groups_["deep"] == ["dl_emb_pc0", "dl_emb_pc1", "dl_emb_pc2", "dl_emb_pc3"]
    assert list(f.explanation_inputs(X).columns) == [n for names in f.feature_groups_.values() for n in names]
    assert coefficient_shares(f, X)["clinical"] > 0.5, coefficient_shares(f, X)
    Xt, yt = table(400, 13)
    assert 0.78 < roc_auc_score(yt, f.predict_proba(Xt)[:, 1]) <= 0.9
    # Without the CNN (a study with deep off): no embedding group, and the embeddings are not even read.
    no_cnn = FeatureFusion(radiomics=RadiomicsPathway(**FAST_RADIOMICS), clinical=ClinicalPathway(),
                           ith_columns=("ith_score2d",), embedding_prefix=None).fit(X, y)
    assert list(no_cnn.feature_groups_) == ["clinical", "ith", "radiomics"]
    assert not any(c.startswith("dl_") for c in no_cnn.columns_)
    with pytest.raises(InputError, match=r"no deep-embedding column \(dl_emb_\*\)"):
        FeatureFusion(radiomics=RadiomicsPathway(**FAST_RADIOMICS)).fit(X.filter(regex="^(?!dl_emb_)"), y)


def _stacking_inputs(n: int, seed: int, shifts) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold-like probabilities of ``len(shifts)`` pathways: logit = shift * (2y - 1) + N(0, 1)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    P = np.column_stack([1 / (1 + np.exp(-(s * (2 * y - 1) + rng.normal(size=n)))) for s in shifts])
    return P, y


def test_screened_stacker_drops_pathways_at_chance():
    """An input whose training AUC does not exceed 0.5 by one standard error (Hanley-McNeil, checked by hand) gets
    weight 0, and the fusion is not dragged down as a tied mean of every input is (one informative input, three at
    chance)."""
    from DPETResponseLib.learn.fusion import ScreenedStacker, TiedLogisticRegression, auc_standard_error

    assert auc_standard_error(0.5, 50, 50) == pytest.approx(np.sqrt((0.25 + 49 * (1 / 3 - 0.25) + 49 * (1 / 3 - 0.25))
                                                                    / 2500))
    P, y = _stacking_inputs(200, 0, (1.0, 0.0, 0.0, 0.0))
    stacker = ScreenedStacker(cv=5).fit(P, y)
    auc = np.array([roc_auc_score(y, P[:, j]) for j in range(4)])
    expected = auc - 0.5 > np.array([auc_standard_error(a, 100, 100) for a in auc])
    assert stacker.screened_.tolist() == expected.tolist() and expected[0] and expected.sum() < 4
    assert not (stacker.kept_ & ~expected).any() and stacker.kept_[0]
    assert (stacker.coef_[0, ~stacker.kept_] == 0).all() and stacker.coef_[0, 0] > 0
    assert set(stacker.inner_cv_auc_) == {"equal", "learned", "best"}
    assert stacker.weights_ == max(stacker.inner_cv_auc_, key=stacker.inner_cv_auc_.get)
    Pt, yt = _stacking_inputs(4000, 1, (1.0, 0.0, 0.0, 0.0))
    screened = roc_auc_score(yt, stacker.predict_proba(Pt)[:, 1])
    tied_all = roc_auc_score(yt, TiedLogisticRegression().fit(P, y).predict_proba(Pt)[:, 1])
    assert screened > tied_all + 0.03, (screened, tied_all)


def test_screened_stacker_choice_is_nested_and_null_is_chance():
    """On inputs that carry nothing, cross-validating the stacker (its screening and choice refit in each fold) gives
    an AUC near 0.5; one dominant input is what "best" picks."""
    from DPETResponseLib.learn.fusion import ScreenedStacker

    P, y = _stacking_inputs(150, 2, (0.0, 0.0, 0.0))
    oof = cross_val_predict(ScreenedStacker(cv=3), P, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                            method="predict_proba")[:, 1]
    assert 0.35 < roc_auc_score(y, oof) < 0.65
    P, y = _stacking_inputs(300, 3, (2.0, 0.3, 0.3))
    stacker = ScreenedStacker(candidates=("best",)).fit(P, y)
    assert stacker.weights_ == "best" and stacker.coef_[0, 1:].tolist() == [0.0, 0.0]
    with pytest.raises(ConfigError, match="candidates must be among equal, learned, best"):
        ScreenedStacker(candidates=("median",)).fit(P, y)
