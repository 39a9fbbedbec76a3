"""The study's models trained together: every pathway, both fusions, thresholds, and their save/load as a bundle.

`StudyModel.fit` sees only training cases. Out-of-fold (OOF) probabilities on the training cases feed the
stacking meta-learner and fix each model's decision threshold, so no test case touches anything learned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ..core.errors import ConfigError, unknown_names_error
from ..core.names import BODY_MASK, PERITUMOURAL, SITE, site_label
from ..core.settings import check_field_types
from ..features.analysis import check_settings, default_settings

PATHWAYS = ("baseline", "clinical", "radiomics", "radiomics_whole", "peritumoural", "ith", "deep")
#: The pathway of another modality (``radiomics_<modality>``): its tumour's radiomics, for the cases that have it.
MODALITY_PATHWAY = "radiomics_{}"
#: Pathways trained only when their settings are given (`deep_features`: the frozen encoder's features).
OPTIONAL_PATHWAYS = ("deep_features",)
#: The comparator every model is tested against (reported first).
BASELINE = "baseline"
FUSIONS = ("fusion_feature", "fusion_decision", "fusion_feature_e2e")
DECISION_FUSION_INPUTS = ("baseline", "clinical", "radiomics", "peritumoural", "ith", "deep", "deep_features")
DEEP_READERS = ("deep", "fusion_decision", "fusion_feature")  # the table models that read the CNN's columns
SCHEMA_NAME = "dpetresponse-study"
#: StudyConfig fields that set one CNN (DeepConfig) setting each.
DEEP_SHORTCUTS = {"deep_epochs": "epochs", "deep_arch": "arch", "deep_pretrained": "pretrained"}
#: CNN settings the study sets itself (from the named StudyConfig field, or from the fusion it trains).
DEEP_DERIVED = {"folds": "n_folds", "seed": "seed", "extra_dim": "the end-to-end fusion",
                "modalities": "the manifest's image_<modality> columns"}


@dataclass
class StudyConfig:
    """Protocol settings (JSON-able). ``deep_preset``: "dpet" (64^3 at 1 mm), "cpu" or "cpu-fast";
    ``deep_overrides``: DeepConfig fields set on top of the preset (e.g. ``{"spacing": 4.0}`` for large tumours
    on whole-body PET). ``deep_features``: the frozen-encoder pathway's settings (`deep.frozen.FrozenSettings`:
    ``weights``, a local MedicalNet .pth file or "random", and ``arch``, ...); None leaves the pathway out.
    ``harmonise``: with a ``site`` column of two or more sites, the radiomics pathways' features (and the feature
    fusion's radiomics groups) are harmonised by ComBat inside every training fold (`learn.harmonise`).
    ``clinical_predictors``: the manifest's clinical columns the models use (None: every one), e.g. to keep a
    second outcome column out of the predictors."""

    n_folds: int = 5
    seed: int = 0
    deep: bool = True
    deep_preset: str = "cpu"
    deep_epochs: int | None = None
    deep_arch: str | None = None
    deep_pretrained: str | None = None
    deep_overrides: dict = field(default_factory=dict)
    deep_features: dict | None = None
    e2e_fusion: bool = True
    decision_weights: str = "auto"
    classifiers: tuple[str, ...] = ("lr", "rf", "xgb", "knn", "nb")
    radiomics_feature_sets: tuple[str, ...] = ("original", "original+log", "all")
    n_mrmr: int = 20
    max_features: int = 5
    embedding_components: int = 8
    harmonise: bool = True
    clinical_predictors: list[str] | None = None
    analysis: dict = field(default_factory=default_settings)

    def __post_init__(self):
        check_field_types(self, "protocol settings")
        check_settings(self.analysis)  # an unknown or unsupported analysis setting fails here, before any work
        if self.deep_features is not None:
            _frozen_settings(self)  # unknown names, no weights, bad values
        twice = [f"{name} and deep_overrides[{key!r}]" for name, key in DEEP_SHORTCUTS.items()
                 if getattr(self, name) is not None and key in self.deep_overrides]
        if twice:
            raise ConfigError(f"protocol settings: {'; '.join(twice)} both set the same CNN setting; keep one")
        derived = sorted(set(self.deep_overrides) & set(DEEP_DERIVED))
        if derived:
            raise ConfigError(f"protocol settings: deep_overrides cannot set {', '.join(derived)}: the CNN takes "
                              f"them from {', '.join(DEEP_DERIVED[k] for k in derived)}, so that its folds are the "
                              "study's")

    def check(self) -> None:
        """Refuse settings that would fail later in training (meta-learner weights, CNN settings), before any work."""
        from ..learn.fusion import make_meta_learner
        from ..learn.pathways import CLASSIFIERS, FEATURE_SETS

        make_meta_learner(self.decision_weights)
        for what, names, known in (("classifiers", self.classifiers, CLASSIFIERS),
                                   ("radiomics feature sets", self.radiomics_feature_sets, FEATURE_SETS)):
            if not names or set(names) - set(known):
                raise unknown_names_error(what, set(names) - set(known) or {"(none given)"}, known)
        if self.deep:
            _deep_config(self).check()
        if self.deep_features is not None:
            _frozen_settings(self).check_weights_file()

    @property
    def needs_images(self) -> bool:
        """Whether training reads the images (the CNN, or the frozen encoder of the deep_features pathway)."""
        return self.deep or self.deep_features is not None

    @classmethod
    def from_dict(cls, values: dict) -> "StudyConfig":
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise unknown_names_error("protocol settings", unknown, cls.__dataclass_fields__)
        values = dict(values)
        for name in ("classifiers", "radiomics_feature_sets"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def _folds(config: StudyConfig):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=config.n_folds, shuffle=True, random_state=config.seed)


def _frozen_settings(config: StudyConfig):
    from ..deep.frozen import FrozenSettings

    return FrozenSettings.from_dict(config.deep_features)


def _deep_config(config: StudyConfig, extra_dim: int = 0, modalities=()):
    from ..deep.train import DeepConfig

    deep = DeepConfig.preset(config.deep_preset)
    deep.folds = config.n_folds
    deep.seed = config.seed
    deep.extra_dim = extra_dim
    deep.modalities = tuple(modalities)  # a channel pair per other modality (deep.data)
    for name, key in DEEP_SHORTCUTS.items():
        if getattr(config, name) is not None:
            setattr(deep, key, getattr(config, name))
    unknown = set(config.deep_overrides) - set(deep.__dataclass_fields__)
    if unknown:
        raise unknown_names_error("deep settings in deep_overrides", unknown, deep.__dataclass_fields__)
    for name, value in config.deep_overrides.items():  # any DeepConfig field, e.g. spacing/size for whole-body PET
        setattr(deep, name, value)
    return deep


class StudyModel:
    """All pathways and fusions of the study, fit on a training feature table (+ images for the CNN).
    ``modalities``: the other modalities of the training manifest (``image_<modality>``), each a pathway
    ``radiomics_<modality>`` fit on the cases that have it (`MODALITY_PATHWAY`) and an input of both fusions.
    ``body_mask``: the peritumoural features were computed with the shell limited to each case's body mask, so
    every case it scores needs one (`require_body_masks`)."""

    def __init__(self, config: StudyConfig, clinical_columns: list[str], modalities=(), body_mask: bool = False):
        self.config = config
        self.clinical_columns = list(clinical_columns)
        self.modalities = list(modalities)
        self.body_mask = bool(body_mask)

    @staticmethod
    def limits_shells(config: StudyConfig, columns) -> bool:
        """Whether a model trained with these settings on a manifest with these columns limits its peritumoural
        shells to body masks."""
        return BODY_MASK in columns and check_settings(config.analysis)["peritumoural_mm"] > 0

    def require_body_masks(self, given: bool, where: str) -> None:
        """Refuses cases (``where``: the manifest or the case) whose body masks (``given``) differ from training's:
        their peritumoural shells would not be the ones the model learned from."""
        from ..core.errors import InputError

        if check_settings(self.config.analysis)["peritumoural_mm"] == 0:  # no shell: a body mask changes nothing
            return
        if self.body_mask and not given:
            raise InputError(f"{where}: this model's peritumoural shells were limited to each case's body mask; "
                             "give the body masks (manifest column body_mask, predict --body-mask)")
        if given and not self.body_mask:
            raise InputError(f"{where}: body masks given, but this model's peritumoural shells were not limited to "
                             "one (trained without a body_mask column); leave them out or retrain with them")

    # ---- training -------------------------------------------------------------------------------------------
    def _make_pathways(self) -> dict:
        from ..learn.pathways import (
            BaselinePathway,
            ClinicalPathway,
            ColumnProbability,
            DeepFeaturePathway,
            ITHPathway,
            RadiomicsPathway,
        )

        radiomics = dict(n_mrmr=self.config.n_mrmr, max_features=self.config.max_features,
                         classifiers=self.config.classifiers, feature_sets=self.config.radiomics_feature_sets,
                         inner_cv=self.config.n_folds, random_state=self.config.seed, site_column=self.site_column_)
        pathways = {
            BASELINE: BaselinePathway(clinical_columns=self.clinical_columns, inner_cv=self.config.n_folds,
                                      random_state=self.config.seed),
            "clinical": ClinicalPathway(clinical_columns=self.clinical_columns),
            # the subregions' radiomics and their composition (sub_: habitat volumes and high-uptake fraction)
            "radiomics": RadiomicsPathway(regions=("whole", "high", "low", "sub"), **radiomics),
            "radiomics_whole": RadiomicsPathway(regions=("whole",), **radiomics),
            "ith": ITHPathway(columns=tuple(c for c in ("ith_score2d", "ith_score3d") if c in self._columns)),
        }
        if any(str(c).startswith(f"{PERITUMOURAL}_") for c in self._columns):  # analysis.peritumoural_mm > 0
            pathways["peritumoural"] = RadiomicsPathway(regions=(PERITUMOURAL,), **radiomics)
        if self.config.deep:
            pathways["deep"] = ColumnProbability(column="dl_prob")
        if self.config.deep_features is not None:
            settings = _frozen_settings(self.config)
            pathways["deep_features"] = DeepFeaturePathway(n_mrmr=settings.n_mrmr, n_features=settings.n_features,
                                                           random_state=self.config.seed)
        for modality in self.modalities:
            if MODALITY_PATHWAY.format(modality) not in self.skipped_pathways_:
                pathways[MODALITY_PATHWAY.format(modality)] = RadiomicsPathway(
                    regions=(_modality_region(modality),), available_only=True, **radiomics)
        return pathways

    def _skipped_modalities(self, X: pd.DataFrame, y: np.ndarray) -> dict[str, str]:
        """The modality pathways that cannot be trained, with the reason: too few training cases of a class have
        the modality for the study's cross-validation (each fold's training part must hold both classes)."""
        skipped = {}
        for modality in self.modalities:
            present = _has_modality(X, modality)
            counts = np.bincount(y[present], minlength=2)
            if counts.min() < self.config.n_folds:
                skipped[MODALITY_PATHWAY.format(modality)] = (
                    f"{int(present.sum())} training cases have {modality} ({counts[1]} positive, {counts[0]} "
                    f"negative): {self.config.n_folds}-fold cross-validation needs at least {self.config.n_folds} "
                    "of each class")
        return skipped

    def _harmonisation(self, X: pd.DataFrame) -> tuple[str | None, list[str]]:
        """The site column the radiomics are harmonised by and the training sites, or (None, sites) without
        harmonisation (``harmonise`` off, no ``site`` column, one site). A site too small for ComBat inside the
        cross-validation's folds, or a training case without a site, is refused before any fitting."""
        from ..core.errors import InputError

        if SITE not in X.columns:
            return None, []
        counts = X[SITE].dropna().map(site_label).value_counts()
        if not self.config.harmonise or len(counts) < 2:
            return None, sorted(counts.index)
        unknown = X.index[X[SITE].isna()]
        if len(unknown):
            raise InputError(f"harmonisation by site: training case(s) {', '.join(map(str, unknown[:10]))} have no "
                             "site; give every case its site, or set harmonise to false")
        needed = 2 * self.config.n_folds
        small = {site: int(n) for site, n in counts.items() if n < needed}
        if small:
            listed = ", ".join(f"{site!r} ({n} cases)" for site, n in small.items())
            raise InputError(f"harmonisation by site: site(s) {listed} have fewer than {needed} training cases; "
                             "ComBat is fit inside every fold of the "
                             f"{self.config.n_folds}-fold cross-validation and its inner folds, which needs at least 2 "
                             "cases of each site in each: merge small sites, or set harmonise to false")
        return SITE, sorted(counts.index)

    def _decision_fusion_inputs(self) -> list[str]:
        """The pathways the decision fusion stacks: `DECISION_FUSION_INPUTS`, then each modality's."""
        return [n for n in (*DECISION_FUSION_INPUTS, *map(MODALITY_PATHWAY.format, self.modalities))
                if n in self.pathways_]

    def missing_modalities(self, X: pd.DataFrame) -> dict[str, list[str]]:
        """{case: [modality, ...]}: the model's modalities a case of the table ``X`` lacks (none of its columns)."""
        missing = {str(case): [] for case in X.index}
        for modality in self.modalities:
            for case in X.index[~_has_modality(X, modality)]:
                missing[str(case)].append(modality)
        return missing

    def _decision_fusion_params(self) -> dict:
        return dict(weights=self.config.decision_weights, cv=self.config.n_folds, random_state=self.config.seed)

    def fit(self, X: pd.DataFrame, y: np.ndarray, images: list, masks: list, progress: bool = True,
            modality_images: dict | None = None, body_masks: list | None = None) -> "StudyModel":
        """Fit every pathway, fusion, CNN and threshold on the training table ``X`` and labels ``y``; ``images`` and
        ``masks``: the cases' PET and tumour mask where the CNN or the frozen encoder needs them; ``modality_images``:
        ``{modality: ([image or None per case], [mask or None per case])}`` for the CNN's other channels;
        ``body_masks``: the cases' body masks where the frozen encoder crops shells limited by them."""
        from sklearn.base import clone
        from sklearn.model_selection import cross_val_predict

        from ..learn.fusion import DecisionFusion, FeatureFusion, make_meta_learner
        from ..reporting.evaluation import youden_threshold

        y = np.asarray(y, dtype=int)
        make_meta_learner(self.config.decision_weights)  # an unknown setting fails before any training
        X = X.copy()
        self._columns = list(X.columns)
        folds = _folds(self.config)
        oof: dict[str, np.ndarray] = {}

        self.deep_model_ = None
        if self.config.deep:
            from ..deep.train import train_deep

            self.deep_model_ = train_deep(images, masks, y, _deep_config(self.config, modalities=self.modalities),
                                          progress=progress, modalities=self._cnn_inputs(modality_images, len(y)))
            X = self._with_deep_columns(X, self.deep_model_.oof_prob, self.deep_model_.oof_embedding)

        self.frozen_encoder_ = None
        if self.config.deep_features is not None:
            from ..deep.frozen import FrozenEncoder

            # Label-free and fit on nothing: every case's features come from this one encoder (one embedding space).
            self.frozen_encoder_ = FrozenEncoder.from_settings(_frozen_settings(self.config), self.config.seed)
            X = self._with_frozen_features(X, images, masks, body_masks)

        self.skipped_pathways_ = self._skipped_modalities(X, y)
        self.site_column_, self.sites_ = self._harmonisation(X)
        self.pathways_ = self._make_pathways()
        for name, pathway in self.pathways_.items():
            oof[name] = cross_val_predict(clone(pathway), X, y, cv=folds, method="predict_proba")[:, 1]
            pathway.fit(X, y)

        inputs = {n: self.pathways_[n] for n in self._decision_fusion_inputs()}
        # The pathways above, their OOF probabilities on the same folds: nothing is cross-validated or refit again.
        self.fusion_decision_ = DecisionFusion.from_fitted(inputs, oof, y, **self._decision_fusion_params())
        # The stacked model's own OOF estimate: the meta-learner cross-validated on the pathways' OOF probabilities.
        level1 = pd.DataFrame({n: oof[n] for n in inputs}).fillna(self.fusion_decision_.missing_fill_).to_numpy()
        meta = make_meta_learner(self.config.decision_weights, self.config.n_folds, self.config.seed)
        oof["fusion_decision"] = cross_val_predict(meta, level1, y, cv=folds, method="predict_proba")[:, 1]

        fusion_feature = FeatureFusion(radiomics=clone(self.pathways_["radiomics"]),
                                       clinical=clone(self.pathways_["clinical"]),
                                       ith_columns=self.pathways_["ith"].columns,
                                       peritumoural=(clone(self.pathways_["peritumoural"])
                                                     if "peritumoural" in self.pathways_ else None),
                                       deep_features=(clone(self.pathways_["deep_features"])
                                                      if "deep_features" in self.pathways_ else None),
                                       modalities={n: clone(self.pathways_[n]) for n in inputs
                                                   if n in map(MODALITY_PATHWAY.format, self.modalities)} or None,
                                       embedding_prefix="dl_emb_" if self.config.deep else None,
                                       n_components=self.config.embedding_components, random_state=self.config.seed)
        oof["fusion_feature"] = cross_val_predict(clone(fusion_feature), X, y, cv=folds, method="predict_proba")[:, 1]
        self.fusion_feature_ = fusion_feature.fit(X, y)

        self.e2e_model_ = None
        if self.config.deep and self.config.e2e_fusion:
            from ..deep.train import train_deep

            # The radiomics vector the CNN learns to project: a label-free reduction (principal components of
            # the standardised whole/high/low radiomics), so that the CNN folds' out-of-fold estimates see no
            # label outside their training folds. (The study projected its 5 label-selected features; selecting
            # them on all training cases would leak into every fold's estimate.)
            self.e2e_reduction_ = _radiomics_reduction(self.config).fit(_radiomics_inputs(X))
            self.e2e_model_ = train_deep(images, masks, y,
                                         _deep_config(self.config, extra_dim=self.config.embedding_components,
                                                      modalities=self.modalities),
                                         extra=self._e2e_inputs(X), progress=progress,
                                         modalities=self._cnn_inputs(modality_images, len(y)))
            oof["fusion_feature_e2e"] = self.e2e_model_.oof_prob

        self.oof_ = pd.DataFrame(oof, index=X.index)
        # A modality pathway has no OOF probability for the cases without the modality: thresholds on the others.
        self.thresholds_ = {name: float(youden_threshold(y[np.isfinite(p)], p[np.isfinite(p)]))
                            for name, p in oof.items()}
        self.oof_thresholds_ = pd.DataFrame({name: _nested_thresholds(y, p, folds.split(X, y))
                                             for name, p in oof.items()}, index=X.index)
        self.background_ = X
        return self

    # ---- prediction -----------------------------------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return list(self.thresholds_)

    def _with_deep_columns(self, X: pd.DataFrame, prob, embedding) -> pd.DataFrame:
        X = X.drop(columns=[c for c in X.columns if c.startswith("dl_")])
        emb = pd.DataFrame(np.asarray(embedding), index=X.index,
                           columns=[f"dl_emb_{i:03d}" for i in range(np.asarray(embedding).shape[1])])
        return pd.concat([X.assign(dl_prob=np.asarray(prob)), emb], axis=1)

    @property
    def needs_images(self) -> bool:
        """Whether prediction reads the images (a CNN, or the deep_features pathway's frozen encoder)."""
        return self.deep_model_ is not None or self.frozen_encoder_ is not None

    def _with_frozen_features(self, X: pd.DataFrame, images: list, masks: list,
                              body_masks: list | None = None) -> pd.DataFrame:
        """``X`` with the frozen encoder's features of its cases (``dlf_intra_*`` on the tumour; ``dlf_peri_*`` on
        the peritumoural shell of ``analysis.peritumoural_mm``, the ``peri_`` features' shell, inside ``body_masks``
        for a model trained with them); without the deep_features pathway, ``X``."""
        if self.frozen_encoder_ is None:
            return X
        from ..core.errors import InputError
        from ..deep.frozen import INTRA, PERI, PREFIX

        if len(images) != len(X) or len(masks) != len(X):
            raise InputError(f"the deep_features pathway reads the images: got {len(images)} images and "
                             f"{len(masks)} masks for {len(X)} cases")
        regions = {INTRA: list(masks)}
        width = check_settings(self.config.analysis)["peritumoural_mm"]
        if width > 0:
            from ..features.peritumoural import peritumoural_shell

            if self.body_mask and (body_masks is None or len(body_masks) != len(X)):
                raise InputError(f"the deep_features pathway crops shells inside the body masks: got "
                                 f"{0 if body_masks is None else len(body_masks)} body masks for {len(X)} cases")
            bodies = body_masks if self.body_mask else [None] * len(X)
            regions[PERI] = [peritumoural_shell(mask, width, body=body, case=str(case))
                             for mask, body, case in zip(masks, bodies, X.index)]
        features = self.frozen_encoder_.features(images, regions, X.index)
        return pd.concat([X.drop(columns=[c for c in X.columns if str(c).startswith(PREFIX)]), features], axis=1)

    def _cnn_inputs(self, modality_images: dict | None, n: int) -> dict | None:
        """The CNN's other modalities: every one of the model's, ``None`` images and masks where not given."""
        if not self.modalities:
            return None
        given = modality_images or {}
        return {m: given.get(m, ([None] * n, [None] * n)) for m in self.modalities}

    def _e2e_inputs(self, X: pd.DataFrame) -> np.ndarray:
        return self.e2e_reduction_.transform(_radiomics_inputs(X)).astype(np.float32)

    def complete_tables(self, X: pd.DataFrame, images: list, masks: list,
                        modality_images: dict | None = None, body_masks: list | None = None) -> list[pd.DataFrame]:
        """The feature table of new cases completed with the deep columns: one table per fold model of the CNN,
        holding that model's probability and embedding. Each is the kind of input the fusions and thresholds were
        fit on (a training case's deep columns came from the one fold model that had not seen it); the fold
        models' embedding coordinates need not agree, so embeddings are never averaged. Without a CNN: ``[X]``.
        The frozen encoder's features (deep_features pathway), one embedding space, are the same in every table.
        ``modality_images`` and ``body_masks`` as for `fit` (a modality left out is missing for every case). The
        columns of a modality no case of ``X`` has are added, empty."""
        absent = [c for c in self._columns if c not in X.columns
                  and str(c).startswith(tuple(f"{m}_" for m in self.modalities))]
        X = pd.concat([X, pd.DataFrame(np.nan, index=X.index, columns=absent)], axis=1) if absent else X
        X = self._with_frozen_features(X, images, masks, body_masks)
        if self.deep_model_ is None:
            return [X]
        return [self._with_deep_columns(X, prob, embedding)
                for prob, embedding in self.deep_model_.fold_outputs(
                    images, masks, modalities=self._cnn_inputs(modality_images, len(images)))]

    @property
    def estimators_(self) -> dict:
        """Every fitted table model by name: the pathways and the two table-based fusions."""
        return {**self.pathways_, "fusion_decision": self.fusion_decision_, "fusion_feature": self.fusion_feature_}

    def _tables_for(self, name: str, tables: list[pd.DataFrame]) -> list[pd.DataFrame]:
        """The tables model ``name`` is run on: all fold tables where it reads the deep columns, else the first
        (the others differ only there)."""
        return tables if self.deep_model_ is not None and name in DEEP_READERS else tables[:1]

    def predict_proba(self, X: pd.DataFrame, images: list, masks: list,
                      modality_images: dict | None = None, body_masks: list | None = None) -> pd.DataFrame:
        """pCR probability of new cases: one column per model (NaN where a modality's pathway has no input)."""
        return self.predict_completed(self.complete_tables(X, images, masks, modality_images, body_masks), images,
                                      masks, modality_images)

    def predict_completed(self, tables: list[pd.DataFrame], images: list, masks: list,
                          modality_images: dict | None = None) -> pd.DataFrame:
        """`predict_proba` on the tables `complete_tables` made (the CNN is not run twice). A model that reads
        the deep columns is run once per fold table and its K probabilities are pooled (`pool_probabilities`):
        K whole pipelines, each fed what it was fit on."""
        from ..learn.pathways import pool_probabilities

        out = {}
        for name, estimator in self.estimators_.items():
            probs = [estimator.predict_proba(table)[:, 1] for table in self._tables_for(name, tables)]
            out[name] = probs[0] if len(probs) == 1 else pool_probabilities(probs)
        if self.e2e_model_ is not None:
            out["fusion_feature_e2e"] = self.e2e_model_.predict(
                images, masks, extra=self._e2e_inputs(tables[0]),
                modalities=self._cnn_inputs(modality_images, len(images)))
        return pd.DataFrame(out, index=tables[0].index)[self.model_names]

    def imputed_inputs(self, X: pd.DataFrame) -> dict[str, dict[str, list[str]]]:
        """{model: {case: [columns]}}: the columns each model uses that are missing (NaN) for a case in ``X`` (a
        table from `complete_tables`) and were therefore imputed from the training data. Models and cases without
        any are left out."""
        used = {name: estimator.used_columns_ for name, estimator in self.estimators_.items()}
        if self.e2e_model_ is not None:
            used["fusion_feature_e2e"] = list(self.e2e_reduction_.feature_names_in_)
        flagged = {}
        lacking = self.missing_modalities(X)
        for name, columns in used.items():
            missing = X.reindex(columns=columns).isna()
            # a modality's pathway gives no probability for a case without the modality: nothing is imputed there
            per_case = {str(case): [c for c in columns if row[c]] for case, row in missing.iterrows()
                        if row.any() and not any(name == MODALITY_PATHWAY.format(m) for m in lacking[str(case)])}
            if per_case:
                flagged[name] = per_case
        return {name: flagged[name] for name in self.model_names if name in flagged}

    def explain(self, tables: list[pd.DataFrame], models=("radiomics", "fusion_decision", "fusion_feature")) -> dict:
        """SHAP values (log-odds) per model for the rows of the tables `complete_tables` made; for a model run on
        every fold table, the mean of its K explanations (exactly the explanation of the pooled log-odds)."""
        from ..learn.explain import shap_values

        explanations = {}
        for name in models:
            if name not in self.estimators_:
                continue
            values = [shap_values(self.estimators_[name], self.background_, table)
                      for table in self._tables_for(name, tables)]
            mean = sum(values[1:], values[0]) / len(values)
            mean.attrs["base_value"] = float(np.mean([v.attrs["base_value"] for v in values]))
            explanations[name] = mean
        return explanations

    def fusion_shares(self, explanations: dict) -> dict[str, dict[str, float]]:
        """What each fusion rests on, from ``explain``'s SHAP values: the feature fusion's input groups (clinical,
        ith, radiomics, deep) and the decision fusion's pathways, each as a share of the model's mean |SHAP|."""
        from ..learn.explain import contribution_shares

        shares = {}
        if "fusion_feature" in explanations:
            shares["fusion_feature"] = contribution_shares(explanations["fusion_feature"],
                                                           self.fusion_feature_.feature_groups_)
        if "fusion_decision" in explanations:
            values = explanations["fusion_decision"]
            shares["fusion_decision"] = contribution_shares(values, {name: [name] for name in values.columns})
        return shares

    def choices(self) -> dict:
        """What was chosen inside the training cases, with the inner-CV scores it was chosen by: each radiomics
        pathway's feature set and classifier; the decision fusion's screening (each pathway's out-of-fold AUC) and
        weighting. Saved in the bundle (``choices``) and reported by evaluate."""
        out = {}
        for name, pathway in self.pathways_.items():
            if hasattr(pathway, "feature_set_"):
                out[name] = {"feature_set": pathway.feature_set_, "classifier": pathway.classifier_name_,
                             "inner_cv_auc": dict(pathway.inner_cv_auc_)}
        meta = self.fusion_decision_.meta_
        names = list(self.fusion_decision_.pathways_)
        fusion = {"weights": getattr(meta, "weights_", self.config.decision_weights),
                  "coefficients": dict(zip(names, map(float, meta.coef_.ravel())))}
        if hasattr(meta, "screened_"):
            fusion.update({"input_auc": dict(zip(names, map(float, meta.input_auc_))),
                           "screened_out": [n for n, s in zip(names, meta.screened_) if not s],
                           "inner_cv_auc": dict(meta.inner_cv_auc_)})
        out["fusion_decision"] = fusion
        return out

    def radiomics_engine_notes(self) -> list[str]:
        """`features.radiomics.check_engine` of a loaded bundle's radiomics engine against this process's: raises
        if this engine does not reproduce the bundle's probe features, else the notes on any difference. Checked
        once per loaded model (the probe takes about a second; neither the bundle nor the engine changes after); a
        model fit in this process (no bundle manifest) used this very engine."""
        if not hasattr(self, "_engine_notes"):
            from ..features.analysis import radiomics_extractor, resolve_settings
            from ..features.radiomics import check_engine

            manifest = getattr(self, "manifest_", None)
            self._engine_notes = [] if manifest is None else check_engine(
                manifest.get("radiomics_engine"),
                radiomics_extractor(resolve_settings(self.config.analysis)["radiomics_params_text"]))
        return list(self._engine_notes)

    def gradcam(self, image, mask, modality_images: dict | None = None):
        """The CNN's heat map of one case on its PET grid (None without a CNN); ``modality_images``: ``{modality:
        (image, mask)}`` of the case's other modalities."""
        if self.deep_model_ is None:
            return None
        given = {m: (None, None) for m in self.modalities} | (modality_images or {})
        return self.deep_model_.gradcam(image, mask, modalities=given if self.modalities else None)

    # ---- bundle ---------------------------------------------------------------------------------------------
    def save(self, path, overwrite: bool = False, extra_manifest: dict | None = None):
        import torch

        from ..core.files import plain
        from ..features.analysis import radiomics_extractor, resolve_settings
        from ..features.radiomics import engine_record
        from .bundle import write_bundle

        # Each pathway once: the decision fusion is stored as its meta-learner and rebuilt on the pathways at load.
        estimators = {**self.pathways_, "fusion_decision_meta": self.fusion_decision_.meta_,
                      "fusion_feature": self.fusion_feature_}
        manifest = {
            "decision_fusion_inputs": list(self.fusion_decision_.pathways_),
            "kind": SCHEMA_NAME,
            "config": self.config.to_dict(),
            "clinical_columns": self.clinical_columns,
            "modalities": self.modalities,
            "body_mask": self.body_mask,
            "harmonisation": {"site_column": self.site_column_, "sites": self.sites_},
            "pathways": list(self.pathways_),
            "skipped_pathways": self.skipped_pathways_,
            "columns": self._columns,
            "thresholds": self.thresholds_,
            "models": self.model_names,
            # null: no probability (a modality pathway's case without the modality)
            "training_oof": {"case_id": list(map(str, self.oof_.index)),
                             **{c: plain(self.oof_[c].to_numpy()) for c in self.oof_.columns}},
            "training_oof_thresholds": {c: self.oof_thresholds_[c].tolist() for c in self.oof_thresholds_.columns},
            "choices": self.choices(),
            # The engine that computed the training features and its probe features: predict checks them.
            "radiomics_engine": engine_record(radiomics_extractor(
                resolve_settings(self.config.analysis)["radiomics_params_text"])),
            **(extra_manifest or {}),
        }
        tensors = {}
        numeric = self.background_.select_dtypes(include=[np.number])
        other = self.background_.drop(columns=numeric.columns)
        manifest["background"] = {"index": list(map(str, self.background_.index)),
                                  "numeric_columns": list(numeric.columns),
                                  "other": {c: other[c].astype(object).where(other[c].notna(), None).tolist()
                                            for c in other.columns}}
        tensors["background"] = {"values": torch.from_numpy(numeric.to_numpy(dtype=np.float64).copy())}
        if self.deep_model_ is not None:
            manifest["deep_config"], parts = self.deep_model_.to_parts()
            tensors.update({f"deep_{k}": v for k, v in parts.items()})
        if self.e2e_model_ is not None:
            manifest["e2e_config"], parts = self.e2e_model_.to_parts()
            tensors.update({f"e2e_{k}": v for k, v in parts.items()})
            estimators["e2e_reduction"] = self.e2e_reduction_
        if self.frozen_encoder_ is not None:  # its weights and the checksum of the file they came from
            manifest["frozen_encoder"], tensors["frozen_encoder"] = self.frozen_encoder_.to_parts()
        write_bundle(path, manifest, estimators, tensors, overwrite=overwrite)

    @classmethod
    def load(cls, path) -> "StudyModel":
        from ..core.errors import BundleError
        from ..learn.fusion import DecisionFusion
        from .bundle import read_bundle

        bundle = read_bundle(path)
        manifest = bundle.manifest
        if manifest.get("kind") != SCHEMA_NAME:
            raise BundleError(f"{path}: not a DPETResponse study bundle (kind={manifest.get('kind')!r})")
        config = StudyConfig.from_dict(manifest["config"])
        model = cls(config, manifest["clinical_columns"], manifest.get("modalities", []),
                    body_mask=manifest.get("body_mask", False))
        model.skipped_pathways_ = manifest.get("skipped_pathways", {})
        harmonisation = manifest.get("harmonisation", {})
        model.site_column_, model.sites_ = harmonisation.get("site_column"), harmonisation.get("sites", [])
        model._columns = manifest["columns"]
        model.thresholds_ = manifest["thresholds"]
        oof = dict(manifest["training_oof"])
        model.oof_ = pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in oof.items() if k != "case_id"},
                                  index=oof["case_id"])
        model.oof_thresholds_ = pd.DataFrame(manifest["training_oof_thresholds"], index=oof["case_id"])
        est = dict(bundle.estimators)
        model.fusion_feature_ = est.pop("fusion_feature")
        model.pathways_ = {name: est[name] for name in manifest.get("pathways", (*PATHWAYS, *OPTIONAL_PATHWAYS))
                           if name in est}
        inputs = manifest["decision_fusion_inputs"]
        model.fusion_decision_ = DecisionFusion.from_parts(
            {name: model.pathways_[name] for name in inputs}, est.pop("fusion_decision_meta"),
            {name: model.oof_[name].to_numpy() for name in inputs}, **model._decision_fusion_params())
        bg = manifest["background"]
        numeric = pd.DataFrame(bundle.tensors["background"]["values"].numpy(), index=bg["index"],
                               columns=bg["numeric_columns"])
        model.background_ = pd.concat([numeric, pd.DataFrame(bg["other"], index=bg["index"])], axis=1)
        model.deep_model_ = model.e2e_model_ = None
        if "deep_config" in manifest:
            from ..deep.train import DeepModel

            model.deep_model_ = DeepModel.from_parts(manifest["deep_config"], _parts(bundle.tensors, "deep_"))
        if "e2e_config" in manifest:
            from ..deep.train import DeepModel

            model.e2e_model_ = DeepModel.from_parts(manifest["e2e_config"], _parts(bundle.tensors, "e2e_"))
            model.e2e_reduction_ = est.pop("e2e_reduction")
        model.frozen_encoder_ = None
        if "frozen_encoder" in manifest:
            from ..deep.frozen import FrozenEncoder

            model.frozen_encoder_ = FrozenEncoder.from_parts(manifest["frozen_encoder"],
                                                             bundle.tensors["frozen_encoder"])
        model.manifest_ = manifest
        return model


def _modality_region(modality: str) -> str:
    """The region of another modality's features (``<modality>_whole_...``, `features.analysis`)."""
    return f"{modality}_whole"


def _has_modality(X: pd.DataFrame, modality: str) -> np.ndarray:
    """Which cases of the table have ``modality``: any of its features present (the rule its pathway,
    ``RadiomicsPathway(available_only=True)``, fits and predicts by)."""
    from ..learn.pathways import radiomics_columns
    from ..learn.tables import rows_holding

    return rows_holding(X, radiomics_columns(X, (_modality_region(modality),)))


def _nested_thresholds(y: np.ndarray, oof: np.ndarray, folds) -> np.ndarray:
    """Each training case's decision threshold for the out-of-fold (``train_cv``) metrics: Youden's on the
    out-of-fold probabilities of the OTHER folds' cases, so that no case's label chooses its own threshold."""
    from ..reporting.evaluation import youden_threshold

    thresholds = np.full(len(y), np.nan)
    for train_idx, test_idx in folds:
        scored = train_idx[np.isfinite(oof[train_idx])]
        thresholds[test_idx] = youden_threshold(y[scored], oof[scored])
    return thresholds


def _radiomics_inputs(X: pd.DataFrame) -> pd.DataFrame:
    from ..learn.pathways import radiomics_columns

    return X[radiomics_columns(X)].replace([np.inf, -np.inf], np.nan)


def _radiomics_reduction(config: StudyConfig):
    """Median imputation, standardisation and PCA: the end-to-end fusion's label-free radiomics vector."""
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                         PCA(n_components=config.embedding_components, random_state=config.seed))


def _parts(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
