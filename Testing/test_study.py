"""StudyModel at prediction feeds each fused model the kind of input it was fit on.

The fusions and thresholds are fit on the CNN's out-of-fold outputs: each training case's probability and
embedding come from the one fold model that had not seen it. Fold models trained apart need not share embedding
coordinates, so a new case's inputs must come from one fold model at a time (K pipelines, pooled at the end),
never from the mean of K embeddings written in K different coordinate systems.

The CNN is replaced by a stub whose K fold "models" write the same informative signal in their own coordinates (a
random rotation each): the worst case of unaligned fold models, with a known answer.
"""

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import DPETResponseLib.deep.train as deep_train
from DPETResponseLib.study.model import StudyConfig, StudyModel

K, DIM = 3, 6


class UnalignedFoldModels:
    """K fold models: case signal ``s`` -> embedding ``Q_k @ [s, 0.5 s, noise...]`` and probability ``expit(s +
    noise_k)``. ``images`` are the cases' signals (the stub reads no image)."""

    def __init__(self, signals: np.ndarray, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.rotations = [np.linalg.qr(rng.normal(size=(DIM, DIM)))[0] for _ in range(K)]
        self.seed = seed
        self.fold_of_case = np.arange(len(signals)) % K
        outputs = self.fold_outputs(list(signals), None)
        self.oof_prob = np.array([outputs[f][0][i] for i, f in enumerate(self.fold_of_case)])
        self.oof_embedding = np.array([outputs[f][1][i] for i, f in enumerate(self.fold_of_case)])

    def fold_outputs(self, images, masks, modalities=None):
        s = np.asarray(images, dtype=float)
        rng = np.random.default_rng([self.seed, len(s), int(1e6 * abs(s).sum()) % 2**31])
        latent = np.column_stack([s, 0.5 * s, rng.normal(0, 0.3, (len(s), DIM - 2))])
        return [(expit(s + rng.normal(0, 0.3, len(s))), latent @ q.T) for q in self.rotations]

    def predict(self, images, masks):
        """What the ensemble's `predict` returned before the fix: (mean probability, mean embedding)."""
        outputs = self.fold_outputs(images, masks)
        return np.mean([p for p, _ in outputs], axis=0), np.mean([e for _, e in outputs], axis=0)


def _table(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Feature table, labels and the cases' deep signal: radiomics and ITH columns are noise with one weak
    informative feature, the clinical column is noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    signal = 1.5 * (y - 0.5) + rng.normal(0, 1, n)
    X = pd.DataFrame({f"{region}_original_firstorder_F{j}": rng.normal(size=n)
                      for region in ("whole", "high", "low") for j in range(4)},
                     index=[f"c{seed}_{i}" for i in range(n)])
    X["whole_original_firstorder_F0"] += 0.8 * y
    X["sub_high_fraction"] = rng.uniform(size=n)
    X["ith_score2d"] = rng.normal(size=n) + 0.3 * y
    X["pet_SUVmax"] = rng.uniform(2, 10, n)
    X["age"] = rng.normal(55, 10, n)
    return X, y, signal


@pytest.fixture(scope="module")
def fitted():
    X, y, signal = _table(120, seed=1)
    stub = UnalignedFoldModels(signal)
    original = deep_train.train_deep
    deep_train.train_deep = lambda *args, **kwargs: stub
    try:
        config = StudyConfig(n_folds=3, deep=True, e2e_fusion=False, classifiers=("lr",), embedding_components=4)
        model = StudyModel(config, ["age"]).fit(X, y, list(signal), [None] * len(y), progress=False)
    finally:
        deep_train.train_deep = original
    return model, stub


def test_fusion_gets_at_prediction_the_deep_inputs_it_was_fit_on(fitted):
    """The feature fusion's deep inputs (its embedding PCs) for new cases spread like its training inputs. The
    mean of K unaligned embeddings shrinks them towards zero (about 1/sqrt(K) of their spread: 0.58 for K = 3),
    an input the fusion never saw."""
    model, _ = fitted
    X_new, _, signal_new = _table(300, seed=2)
    seen = []
    fusion = model.fusion_feature_
    original = fusion.predict_proba
    fusion.predict_proba = lambda table: seen.append(table) or original(table)
    try:
        model.predict_proba(X_new, list(signal_new), [None] * len(X_new))
    finally:
        del fusion.predict_proba

    def deep_pcs(table):
        inputs = fusion.explanation_inputs(table)
        return inputs[[c for c in inputs.columns if c.startswith("dl_emb_pc")]]

    training_sd = deep_pcs(model.background_).std()
    prediction_sd = pd.concat([deep_pcs(t) for t in seen]).std()
    ratio = prediction_sd / training_sd
    print("SD of the fusion's deep PCs, prediction / training:", ratio.round(3).to_dict())
    assert ratio.between(0.8, 1.25).all()


def test_deployed_probability_pools_the_fold_pipelines(fitted):
    """Every model that reads the CNN's columns is run once per fold model's output and pooled in log-odds; the
    models that do not read them are unchanged. Computed here by hand from the stub's fold outputs."""
    model, stub = fitted
    X_new, _, signal_new = _table(40, seed=3)
    deployed = model.predict_proba(X_new, list(signal_new), [None] * len(X_new))
    by_fold = [X_new.assign(dl_prob=p, **{f"dl_emb_{j:03d}": e[:, j] for j in range(DIM)})
               for p, e in stub.fold_outputs(list(signal_new), None)]
    for name in ("deep", "fusion_decision", "fusion_feature"):
        log_odds = [np.log(p / (1 - p)) for p in (model.estimators_[name].predict_proba(t)[:, 1] for t in by_fold)]
        np.testing.assert_allclose(deployed[name], expit(np.mean(log_odds, axis=0)), rtol=1e-9)
    for name in ("baseline", "clinical", "radiomics", "radiomics_whole", "ith"):
        np.testing.assert_array_equal(deployed[name], model.pathways_[name].predict_proba(by_fold[0])[:, 1])
    # SHAP of a pooled model: the mean of the fold pipelines' explanations, adding up to the pooled log-odds
    values = model.explain(model.complete_tables(X_new, list(signal_new), None), models=("fusion_feature",))
    total = values["fusion_feature"].sum(axis=1) + values["fusion_feature"].attrs["base_value"]
    np.testing.assert_allclose(total, np.log(deployed["fusion_feature"] / (1 - deployed["fusion_feature"])),
                               atol=1e-6)


def test_imputed_inputs_name_each_model_that_used_one(fitted):
    """A missing clinical value reaches the baseline, the clinical pathway, the feature fusion and the decision fusion
    where it weights one of those (not radiomics, ITH or the CNN); a missing radiomics feature flags the models that
    selected it, and only if they did."""
    model, _ = fitted
    X, _, _ = _table(4, seed=4)
    X.loc[X.index[0], "age"] = np.nan
    selected = model.pathways_["radiomics"].selected_features_[0]
    unselected = next(c for c in X.columns if c.startswith("low_") and
                      c not in model.pathways_["radiomics"].selected_features_ and
                      c not in model.pathways_["radiomics_whole"].selected_features_ and
                      c not in model.fusion_feature_.used_columns_)
    X.loc[X.index[1], selected] = np.nan
    X.loc[X.index[2], unselected] = np.nan
    flagged = model.imputed_inputs(model.complete_tables(X, [0.0] * len(X), None)[0])
    first, second = X.index[0], X.index[1]
    weight = model.fusion_decision_.coef_
    clinical_readers = {"baseline", "clinical", "fusion_feature"} | (
        {"fusion_decision"} if weight[["baseline", "clinical"]].ne(0).any() else set())
    assert {name for name, cases in flagged.items() if first in cases} == clinical_readers
    assert all(flagged[name][first] == ["age"] for name in clinical_readers)
    assert "radiomics" in flagged and flagged["radiomics"][second] == [selected]
    assert ("fusion_decision" in {name for name, cases in flagged.items() if second in cases}) == (
        weight["radiomics"] != 0)
    assert not any(X.index[2] in cases or X.index[3] in cases for cases in flagged.values())


def test_train_cv_thresholds_are_chosen_without_the_case_s_fold():
    """Each training case's threshold for the train_cv metrics is Youden's on the other folds' out-of-fold
    probabilities: changing one fold's labels and probabilities leaves that fold's thresholds as they were, and
    moves the others'."""
    from sklearn.model_selection import StratifiedKFold

    from DPETResponseLib.reporting.evaluation import youden_threshold
    from DPETResponseLib.study.model import _nested_thresholds

    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    p = expit(1.2 * y + rng.normal(size=60))
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(p, y))
    thresholds = _nested_thresholds(y, p, folds)
    for train_idx, test_idx in folds:
        assert np.all(thresholds[test_idx] == youden_threshold(y[train_idx], p[train_idx]))
    changed_p = p.copy()
    fold0 = folds[0][1]
    changed_p[fold0] = rng.uniform(size=len(fold0))
    again = _nested_thresholds(y, changed_p, folds)
    np.testing.assert_array_equal(again[fold0], thresholds[fold0])
    assert not np.array_equal(again[folds[1][1]], thresholds[folds[1][1]])


def test_thresholds_come_from_out_of_fold_probabilities(fitted):
    """Every model's threshold is Youden's on its out-of-fold training probabilities, nothing else."""
    from DPETResponseLib.reporting.evaluation import youden_threshold

    model, _ = fitted
    _, y, _ = _table(120, seed=1)
    assert set(model.thresholds_) == set(model.oof_.columns)
    for name, threshold in model.thresholds_.items():
        assert threshold == youden_threshold(y, model.oof_[name].to_numpy()), name


def test_decision_fusion_stacks_the_fitted_pathways_once(tmp_path):
    """`StudyModel.fit` stacks the pathways it has already fit, on their out-of-fold probabilities: the fusion holds
    those very objects, and its probabilities equal those of a `DecisionFusion` that cross-validates and refits
    clones of them itself on the same folds (the work done twice before). The bundle stores each pathway once and
    a loaded model predicts as the fitted one."""
    from sklearn.base import clone

    from DPETResponseLib.learn.fusion import DecisionFusion
    from DPETResponseLib.study.bundle import read_bundle

    X, y, _ = _table(90, seed=2)
    config = StudyConfig(n_folds=3, deep=False, classifiers=("lr", "nb"), decision_weights="learned")
    model = StudyModel(config, ["age"]).fit(X, y, [], [], progress=False)
    fusion = model.fusion_decision_
    assert list(fusion.pathways_) == ["baseline", "clinical", "radiomics", "ith"]
    assert all(fusion.pathways_[name] is model.pathways_[name] for name in fusion.pathways_)
    standalone = DecisionFusion({name: clone(p) for name, p in fusion.pathways_.items()}, cv=3, weights="learned",
                                random_state=0).fit(X, y)
    for name in fusion.pathways_:
        np.testing.assert_array_equal(fusion.oof_probabilities_[name], standalone.oof_probabilities_[name])
    np.testing.assert_allclose(fusion.predict_proba(X), standalone.predict_proba(X), rtol=0, atol=1e-12)

    model.save(tmp_path / "bundle")
    stored = read_bundle(tmp_path / "bundle").estimators
    assert sorted(stored) == ["baseline", "clinical", "fusion_decision_meta", "fusion_feature", "ith", "radiomics",
                              "radiomics_whole"]
    loaded = StudyModel.load(tmp_path / "bundle")
    assert all(loaded.fusion_decision_.pathways_[n] is loaded.pathways_[n] for n in fusion.pathways_)
    for name in fusion.pathways_:
        np.testing.assert_array_equal(loaded.fusion_decision_.oof_probabilities_[name], fusion.oof_probabilities_[name])
    np.testing.assert_allclose(loaded.predict_proba(X, [], []), model.predict_proba(X, [], []), rtol=0, atol=1e-12)
