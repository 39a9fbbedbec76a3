"""The frozen-encoder deep-feature pathway (`deep_features`, Jang et al. 2025) end to end on a small synthetic
cohort with a seeded random encoder (plumbing: a random encoder carries no pretrained knowledge), its leakage test
on permuted labels with a positive control, MedicalNet weight files, and its settings.

Fast configuration: 60 synthetic cases (45 train, 15 test), the Original-image radiomics, no CNN, 3 folds, a
ResNet10 encoder on 32^3 crops at 2 mm.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAST_RADIOMICS_YAML

from DPETResponseLib.core.errors import ConfigError, InputError
from DPETResponseLib.core.files import sha256_file
from DPETResponseLib.deep.frozen import NO_WEIGHTS, FrozenEncoder, FrozenSettings, build_encoder
from DPETResponseLib.reporting.evaluation import auc
from DPETResponseLib.study.model import StudyConfig, StudyModel

N_TRAIN, N_TEST = 45, 15
FROZEN = {"weights": "random", "arch": "resnet10", "size": 32, "spacing": 2.0, "n_mrmr": 10, "n_features": 3}
#: Permuted-label runs (as Testing/test_protocol.py): three permutations; the mean train_cv AUC is bounded above by
#: about 3 SD of the mean of three AUCs under the null on 45 cases (Hanley-McNeil SD of one AUC 0.087: 0.5 + 3 x 0.050)
#: with a margin for cross-validation's own spread; cross-validation's bias under the null is downwards.
NULL_PERMUTATIONS = (7, 8, 9)
NULL_TRAIN_CV_MAX = 0.66


def _config(**changes) -> StudyConfig:
    settings = dict(n_folds=3, seed=0, deep=False, classifiers=("lr",), radiomics_feature_sets=("original",),
                    decision_weights="learned", deep_features=dict(FROZEN),
                    analysis={"radiomics_params": str(FAST_RADIOMICS_YAML)})
    return StudyConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Feature tables, labels, images and masks of the train and test splits (habitats learned on train)."""
    from DPETResponseLib.extraction import feature_table, with_habitat_model
    from DPETResponseLib.io.images import read_mask, read_pet
    from DPETResponseLib.io.manifest import clinical_columns, read_manifest
    from DPETResponseLib.synthetic import make_cohort

    root = tmp_path_factory.mktemp("deep_features")
    cases = read_manifest(make_cohort(root / "cohort", n=N_TRAIN + N_TEST, seed=0,
                                      splits={"train": N_TRAIN, "test": N_TEST}))
    analysis = with_habitat_model(cases[cases["split"] == "train"], _config().analysis, root / "cache",
                                  progress=False)
    out = {"analysis": analysis, "clinical": clinical_columns(cases)}
    for split in ("train", "test"):
        rows = cases[cases["split"] == split]
        X, errors, _ = feature_table(rows, analysis, root / "cache", progress=False)
        assert len(errors) == 0
        images = [read_pet(rows.at[c, "image"]) for c in X.index]
        masks = [read_mask(rows.at[c, "mask"], image) for c, image in zip(X.index, images)]
        out[split] = (X, rows.loc[X.index, "label"].astype(int).to_numpy(), images, masks)
    return out


def _fit(cohort, y=None, **changes) -> StudyModel:
    X, y_train, images, masks = cohort["train"]
    model = StudyModel(_config(analysis=cohort["analysis"], **changes), cohort["clinical"])
    return model.fit(X, y_train if y is None else y, images, masks, progress=False)


@pytest.fixture(scope="module")
def fitted(cohort):
    return _fit(cohort)


def test_pathway_trains_in_the_study_and_is_reported(cohort, fitted):
    """`deep_features` is a model of the study with out-of-fold training probabilities and a threshold, an input of
    the decision fusion (with its share of the explanation); its inputs are the encoder's pooled features of the
    tumour and of the peritumoural shell (512 each for ResNet10), and only the RFE-selected ones reach XGBoost."""
    model = fitted
    _, y, _, _ = cohort["train"]
    assert "deep_features" in model.model_names and "deep_features" in model.fusion_decision_.pathways_
    oof = model.oof_["deep_features"].to_numpy()
    assert np.isfinite(oof).all() and oof.std() > 0
    X_test, y_test, images, masks = cohort["test"]
    test = model.predict_proba(X_test, images, masks)
    print(f"deep_features (random ResNet10) OOF AUC {auc(y, oof):.3f} on {len(y)} training cases, "
          f"test AUC {auc(y_test, test['deep_features'].to_numpy()):.3f} on {len(y_test)}; fusion_decision OOF "
          f"{auc(y, model.oof_['fusion_decision'].to_numpy()):.3f}")
    table = model.background_
    for region in ("intra", "peri"):
        assert [c for c in table.columns if c.startswith(f"dlf_{region}_")] == [f"dlf_{region}_{k:03d}"
                                                                                 for k in range(512)]
    pathway = model.pathways_["deep_features"]
    assert len(pathway.used_columns_) == FROZEN["n_features"]
    assert all(c.startswith("dlf_") for c in pathway.used_columns_)
    shares = model.fusion_shares(model.explain(model.complete_tables(X_test, images, masks),
                                               models=("fusion_decision",)))
    assert "deep_features" in shares["fusion_decision"]
    assert sum(shares["fusion_decision"].values()) == pytest.approx(1.0)


def test_one_embedding_space_and_the_bundle_round_trip(cohort, fitted, tmp_path):
    """A training case's features at prediction are those it was trained on (one encoder for every case); the
    bundle keeps the encoder (its state checksum and the weights' source) and predicts the same numbers."""
    from DPETResponseLib.study.bundle import read_bundle

    model = fitted
    X, _, images, masks = cohort["train"]
    dlf = [c for c in model.background_.columns if c.startswith("dlf_")]
    again = model.complete_tables(X.iloc[:4], images[:4], masks[:4])[0]
    np.testing.assert_array_equal(again[dlf].to_numpy(), model.background_[dlf].iloc[:4].to_numpy())

    model.save(tmp_path / "bundle")
    bundle = read_bundle(tmp_path / "bundle")
    record = bundle.manifest["frozen_encoder"]
    assert record["weights"] == "random" and record["arch"] == "resnet10" and record["seed"] == 0
    assert bundle.manifest["config"]["deep_features"] == FROZEN
    loaded = StudyModel.load(tmp_path / "bundle")
    X_test, _, test_images, test_masks = cohort["test"]
    expected = model.predict_proba(X_test, test_images, test_masks)
    pd.testing.assert_frame_equal(loaded.predict_proba(X_test, test_images, test_masks), expected, rtol=0,
                                  atol=1e-12)
    assert loaded.needs_images and loaded.config.needs_images
    with pytest.raises(InputError, match="deep_features pathway reads the images"):
        loaded.predict_proba(X_test, [], [])


def test_the_peritumoural_crop_stays_inside_the_body_masks(cohort, fitted):
    """A model trained with body masks crops its ``dlf_peri_*`` from the shell inside each case's body mask (here the
    half of the image below the tumour's centre row): the encoder's features of that region, computed here; other
    than the unlimited model's, while ``dlf_intra_*`` do not change; without the body masks it is refused."""
    import copy

    import SimpleITK as sitk

    from DPETResponseLib.deep.frozen import INTRA, PERI
    from DPETResponseLib.features.peritumoural import peritumoural_shell

    X, _, images, masks = (part[:4] for part in cohort["test"])
    bodies = []
    for mask in masks:
        tumour = sitk.GetArrayFromImage(mask)
        half = np.zeros_like(tumour)
        half[:, : int(np.argwhere(tumour)[:, 1].mean())] = 1
        body = sitk.GetImageFromArray(half)
        body.CopyInformation(mask)
        bodies.append(body)
    limited = copy.copy(fitted)
    limited.body_mask = True
    table = limited.complete_tables(X, images, masks, body_masks=bodies)[0]
    width = cohort["analysis"]["peritumoural_mm"]
    shells = [peritumoural_shell(m, width, body=b) for m, b in zip(masks, bodies)]
    expected = fitted.frozen_encoder_.features(images, {INTRA: masks, PERI: shells}, X.index)
    peri = [c for c in expected.columns if c.startswith("dlf_peri_")]
    intra = [c for c in expected.columns if c.startswith("dlf_intra_")]
    np.testing.assert_allclose(table[peri].to_numpy(), expected[peri].to_numpy(), rtol=0, atol=1e-6)
    unlimited = fitted.complete_tables(X, images, masks)[0]
    np.testing.assert_array_equal(table[intra].to_numpy(), unlimited[intra].to_numpy())
    assert not np.allclose(table[peri].to_numpy(), unlimited[peri].to_numpy())
    with pytest.raises(InputError, match="crops shells inside the body masks: got 0 body masks for 4 cases"):
        limited.complete_tables(X, images, masks)


def test_a_bundle_whose_encoder_was_changed_is_refused(fitted):
    record, state = fitted.frozen_encoder_.to_parts()
    state["conv1.weight"] = state["conv1.weight"] + 1e-3
    with pytest.raises(InputError, match="state sha256 mismatch"):
        FrozenEncoder.from_parts(record, state)


def _null_train_cv(cohort) -> list[float]:
    _, y, _, _ = cohort["train"]
    aucs = []
    for seed in NULL_PERMUTATIONS:
        permuted = np.random.default_rng(seed).permutation(y)
        model = _fit(cohort, permuted)
        assert model.oof_["deep_features"].std() > 0, "a constant model hides any leak"
        aucs.append(auc(permuted, model.oof_["deep_features"].to_numpy()))
    return aucs


def test_permuted_labels_give_chance_train_cv_auc(cohort):
    """Leakage test: with permuted labels the pathway's out-of-fold AUC stays at chance (mean of three
    permutations), so nothing in it (mRMR, RFE, XGBoost, the features) sees a label outside its training fold."""
    aucs = _null_train_cv(cohort)
    print("deep_features train_cv AUC on permuted labels:", [round(a, 3) for a in aucs])
    assert np.mean(aucs) <= NULL_TRAIN_CV_MAX


def test_leakage_check_catches_in_sample_estimates(cohort, monkeypatch):
    """Positive control: the same check on a leaky protocol (out-of-fold estimates replaced by in-sample ones)
    must fail."""
    import sklearn.model_selection
    from sklearn.base import clone

    def in_sample(estimator, X, y, cv=None, method="predict_proba", **kwargs):
        return getattr(clone(estimator).fit(X, y), method)(X)

    monkeypatch.setattr(sklearn.model_selection, "cross_val_predict", in_sample)
    aucs = _null_train_cv(cohort)
    print("deep_features in-sample AUC on permuted labels:", [round(a, 3) for a in aucs])
    assert np.mean(aucs) > NULL_TRAIN_CV_MAX


def _medicalnet_file(path, arch: str, seed: int) -> dict:
    """A MedicalNet-style checkpoint of a seeded encoder: {"state_dict": {"module.<key>": ...}} with a
    segmentation head (``conv_seg``) and without BatchNorm's ``num_batches_tracked``, as MedicalNet's files are."""
    state = {k: v for k, v in build_encoder(arch, seed).state_dict().items() if not k.endswith("num_batches_tracked")}
    checkpoint = {f"module.{k}": v.clone() for k, v in state.items()}
    checkpoint["module.conv_seg.0.weight"] = torch.zeros(32, 512, 2, 2, 2)
    torch.save({"state_dict": checkpoint, "epoch": 1}, path)
    return state


def test_medicalnet_weights_file_loads_into_the_encoder(tmp_path, cohort):
    """A MedicalNet-style .pth file loads into the encoder: every tensor is the file's (not the seed's
    initialisation), the bundle record holds the file's sha256, and a file of another depth is refused."""
    path = tmp_path / "resnet_10_23dataset.pth"
    state = _medicalnet_file(path, "resnet10", seed=5)
    encoder = FrozenEncoder.from_settings(FrozenSettings.from_dict({**FROZEN, "weights": str(path)}), seed=0)
    loaded = encoder.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert not torch.equal(loaded["conv1.weight"], build_encoder("resnet10", 0).state_dict()["conv1.weight"])
    assert encoder.record["weights_sha256"] == sha256_file(path) and encoder.record["weights"] == path.name
    _, _, images, masks = cohort["test"]
    random5 = FrozenEncoder.from_settings(FrozenSettings.from_dict(FROZEN), seed=5)
    crops = torch.stack([encoder.crop(images[0], masks[0])])
    np.testing.assert_array_equal(encoder.embed(crops), random5.embed(crops))

    other = tmp_path / "resnet_18.pth"
    _medicalnet_file(other, "resnet18", seed=0)
    with pytest.raises(InputError, match="do not fit"):
        FrozenEncoder.from_settings(FrozenSettings.from_dict({**FROZEN, "weights": str(other)}))


def test_settings_are_checked_where_read(tmp_path):
    """No weights: one clear line; an unknown name: the closest one; a missing file: refused before any work."""
    with pytest.raises(ConfigError) as err:
        StudyConfig.from_dict({"deep_features": {"arch": "resnet34"}})
    assert str(err.value) == NO_WEIGHTS and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="did you mean 'arch'"):
        StudyConfig(deep_features={"weights": "random", "achr": "resnet18"})
    with pytest.raises(ConfigError, match="unknown arch 'resnet101'"):
        StudyConfig(deep_features={"weights": "random", "arch": "resnet101"})
    with pytest.raises(ConfigError, match="n_features"):
        StudyConfig(deep_features={"weights": "random", "n_mrmr": 3, "n_features": 5})
    with pytest.raises(ConfigError, match="expected int"):
        StudyConfig(deep_features={"weights": "random", "size": "64"})
    config = StudyConfig(deep=False, deep_features={"weights": str(tmp_path / "missing.pth")})
    with pytest.raises(ConfigError, match="weights file not found"):
        config.check()
    assert StudyConfig(deep=False).needs_images is False and config.needs_images is True


def test_pathway_selects_inside_its_fit_and_recovers_informative_features():
    """On a table of 200 frozen-feature columns (constant ones among them) of which two carry the label, the chain
    (constants dropped, mRMR 10, RFE 2, XGBoost) keeps exactly those two, explains itself on them, and a clone
    refit on other cases selects again; a table without dlf_ columns is refused."""
    from sklearn.base import clone
    from sklearn.metrics import roc_auc_score

    from DPETResponseLib.learn.pathways import DeepFeaturePathway, clinical_columns

    def table(n, seed):
        rng = np.random.default_rng(seed)
        y = np.arange(n) % 2
        X = pd.DataFrame(rng.normal(size=(n, 200)), columns=[f"dlf_intra_{k:03d}" for k in range(200)])
        X["dlf_intra_010"] += 2.0 * y
        X["dlf_peri_000"] = -2.0 * y + rng.normal(size=n)
        X[["dlf_intra_100", "dlf_intra_101"]] = 0.0
        X["age"] = rng.normal(50, 10, n)
        return X, y

    X, y = table(120, 0)
    assert clinical_columns(X) == ["age"]
    pathway = DeepFeaturePathway(n_mrmr=10, n_features=2).fit(X, y)
    assert sorted(pathway.used_columns_) == ["dlf_intra_010", "dlf_peri_000"]
    assert list(pathway.explanation_inputs(X).columns) == pathway.used_columns_
    X_new, y_new = table(200, 1)
    assert roc_auc_score(y_new, pathway.predict_proba(X_new)[:, 1]) > 0.9
    refit = clone(pathway).fit(X.iloc[:60], y[:60])
    assert refit.get_params() == pathway.get_params() and len(refit.used_columns_) == 2
    with pytest.raises(InputError, match="no frozen-encoder feature"):
        DeepFeaturePathway().fit(X[["age"]], y)
