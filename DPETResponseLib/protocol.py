"""The study end to end: `train` on a manifest's train split, `evaluate` on its test splits, `predict` one patient,
and the `demo` that runs all of it on the synthetic D-PET cohort."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .core.errors import DPETError, InputError
from .core.names import BODY_MASK
from .study.model import BASELINE, StudyConfig, StudyModel

log = logging.getLogger(__name__)
PARTITIONS_FILE = "partitions.csv"  # `evaluate --partitions`: every partition's test-part probabilities


def load_config(config) -> StudyConfig:
    """A StudyConfig from None (defaults), a dict, a JSON file path, or a StudyConfig (copied: the caller's object
    is never changed)."""
    if config is None:
        return StudyConfig()
    if isinstance(config, StudyConfig):
        return StudyConfig.from_dict(config.to_dict())  # to_dict (dataclasses.asdict) copies nested values
    if isinstance(config, (str, Path)):
        try:
            config = json.loads(Path(config).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DPETError(f"cannot read protocol settings {config}: {err}") from None
    return StudyConfig.from_dict(config)


def _images(cases: pd.DataFrame, modalities=()) -> tuple[list, list, dict]:
    """The cases' PET images and tumour masks, and ``{modality: (images, masks)}`` of the other ``modalities``
    (None where a case lacks one; a modality without a mask column is read with the PET's mask)."""
    from .core.names import modality_columns
    from .io.images import read_mask, read_modality, read_pet

    images, masks, others = [], [], {m: ([], []) for m in modalities}
    for case_id, row in cases.iterrows():
        image = read_pet(row["image"], case=case_id)
        images.append(image)
        masks.append(read_mask(row["mask"], image, case=case_id))
        for name in modalities:
            image_column, mask_column = modality_columns(name)
            path = row.get(image_column) or ""
            other = read_modality(path, name, case=case_id) if path else None
            others[name][0].append(other)
            others[name][1].append(read_mask(row.get(mask_column) or row["mask"], other, case=case_id,
                                             reference_name=f"{name} image") if other is not None else None)
    return images, masks, others


def _model_images(model: StudyModel, cases: pd.DataFrame) -> tuple[list, list, dict]:
    """`_images` of what ``model`` reads: the PET, and the other modalities where it has a CNN; none at all where it
    reads no image."""
    if not model.needs_images:
        return [], [], {}
    return _images(cases, model.modalities if model.config.deep else ())


def _body_masks(model: StudyModel, cases: pd.DataFrame, images: list) -> list | None:
    """The cases' body masks on their PETs' grids where ``model``'s frozen encoder crops shells inside them."""
    if not (model.body_mask and model.config.deep_features):
        return None
    from .io.images import read_mask

    return [read_mask(path, image, case=case_id) for (case_id, path), image in zip(cases[BODY_MASK].items(), images)]


def _cache(cache_dir, manifest) -> Path:
    from .io.manifest import default_cache_dir

    return Path(cache_dir) if cache_dir else default_cache_dir(manifest)


def train(manifest, out, config=None, jobs: int = 1, cache_dir=None, fast: bool = False, progress: bool = True,
          overwrite: bool = False, label_column: str = "label") -> StudyModel:
    """Fit every pathway and fusion on the manifest's ``train`` split and write the model bundle to ``out``.
    ``label_column``: the manifest column holding the 0/1 outcome (recorded in the bundle's ``training`` block)."""
    from .extraction import feature_table, with_habitat_model
    from .io.manifest import modalities, read_manifest, training_cases, validate_for_training
    from .io.suv import rule_counts

    config = load_config(config)
    if fast:
        config.deep_preset = "cpu-fast"
    config.check()
    cases = read_manifest(manifest, label_column=label_column)
    predictors = _predictors(config, cases, manifest)
    names = modalities(cases)
    model = StudyModel(config, predictors, names, body_mask=StudyModel.limits_shells(config, cases.columns))
    train_cases = training_cases(cases)
    validate_for_training(train_cases, n_folds=config.n_folds, early_stopping=config.deep)
    log.info(f"training on {len(train_cases)} cases of {manifest}")
    started = time.time()
    # Habitat centroids are learned on the training cases only (label-free); the bundle keeps them in its settings.
    config.analysis = with_habitat_model(train_cases, config.analysis, _cache(cache_dir, manifest), jobs=jobs,
                                         progress=progress)
    X, errors, suv = feature_table(train_cases, config.analysis, _cache(cache_dir, manifest), jobs=jobs,
                                   progress=progress)
    train_cases = train_cases.loc[X.index]
    validate_for_training(train_cases, n_folds=config.n_folds, early_stopping=config.deep)
    images, masks, others = _images(train_cases, names if config.deep else ()) if config.needs_images else ([], [], {})
    model.fit(X, train_cases["label"].astype(int).to_numpy(), images, masks, progress=progress,
              modality_images=others, body_masks=_body_masks(model, train_cases, images))
    for name, reason in model.skipped_pathways_.items():
        log.warning(f"{name} left out: {reason}")
    model.save(out, overwrite=overwrite, extra_manifest={
        "training": {"manifest": str(Path(manifest).resolve()), "label_column": label_column,
                     "n_cases": int(len(train_cases)), "n_failed": int(len(errors)),
                     "seconds": round(time.time() - started, 1),
                     "suv_conversion": rule_counts(suv)},
        "oracle": _oracle(manifest),
    })
    log.info(f"trained in {time.time() - started:.0f} s; bundle: {out}")
    return model


def _predictors(config: StudyConfig, cases: pd.DataFrame, manifest) -> list[str]:
    """The clinical columns the models use: the settings' ``clinical_predictors``, each a clinical column of the
    manifest, or every clinical column."""
    from .core.errors import ConfigError
    from .io.manifest import clinical_columns

    available = clinical_columns(cases)
    if config.clinical_predictors is None:
        return available
    unknown = [c for c in config.clinical_predictors if c not in available]
    if unknown:
        raise ConfigError(f"clinical_predictors {', '.join(unknown)}: not clinical columns of {manifest} (its "
                          f"clinical columns: {', '.join(available) or 'none'})")
    return list(config.clinical_predictors)


def _oracle(manifest) -> dict | None:
    path = Path(manifest).resolve().parent / "oracle.json"
    return json.loads(path.read_text()) if path.is_file() else None


def label_column_of(model: StudyModel) -> str:
    """The manifest column a bundle's models were trained to predict ("label" for bundles that do not say)."""
    return model.manifest_.get("training", {}).get("label_column", "label")


def evaluate(bundle, manifest, out, jobs: int = 1, cache_dir=None, progress: bool = True,
             n_boot: int = 2000, label_column: str | None = None, partitions: int = 0,
             test_fraction: float | None = None, partition_habitats: str = "refit") -> Path:
    """Evaluate a bundle on every labelled split other than ``train``; writes metrics.json, predictions.csv and
    the HTML report (ROC, calibration, decision curves, SHAP, Grad-CAM) to ``out``. Returns the report's path.

    The outcome is the bundle's label column (``label_column``, if given, must be the same). ``partitions`` N > 0
    also re-fits the bundle's settings on N independent stratified partitions of the labelled cases (`_partitions`;
    ``test_fraction`` defaults to the manifest's held-out share) into metrics.json's ``partitions`` and
    partitions.csv."""
    from .extraction import feature_table
    from .io.manifest import read_manifest
    from .reporting.evaluation import evaluate_split
    from .reporting.report import write_report
    from .study.record import provenance_record, run_record

    model = StudyModel.load(bundle)
    outcome = label_column_of(model)
    if label_column is not None and label_column != outcome:
        raise DPETError(f"label column {label_column!r} is not the one bundle {bundle} was trained on ({outcome!r}): "
                        f"its models predict {outcome!r}; leave out --label-column or train on {label_column!r}")
    cases = read_manifest(manifest, label_column=outcome)
    model.require_body_masks(BODY_MASK in cases.columns, f"manifest {manifest}")
    planned = _plan_partitions(model, cases, partitions, test_fraction, partition_habitats) if partitions else None
    labelled = cases[cases["label"].notna()]
    test_cases = labelled[~labelled["split"].fillna("").isin(["train", ""])]
    metrics = {"splits": {}, "outcome": {"column": outcome,
                                         "ignored_columns": cases.attrs.get("outcome_columns_ignored", [])},
               "settings": model.manifest_["config"],
               "thresholds": model.thresholds_, "choices": model.choices()}
    # Cross-validated (out-of-fold) training estimates, labelled `train_cv`: the only figures a cohort without
    # a held-out split can give, and a check on overfitting where it has one.
    oof = model.oof_.loc[model.oof_.index.isin(labelled.index)]
    # Every model is compared with the simple baseline (bundles trained without one have no reference).
    reference = BASELINE if BASELINE in model.model_names else None
    if len(oof):
        y = labelled.loc[oof.index, "label"].astype(int).to_numpy()
        # Threshold metrics with each case's nested threshold (chosen on the other folds), like its AUC out of sample.
        nested = model.oof_thresholds_.loc[oof.index]
        metrics["splits"]["train_cv"] = evaluate_split(y, {m: oof[m].to_numpy() for m in model.model_names},
                                                       {m: nested[m].to_numpy() for m in model.model_names},
                                                       reference_model=reference, n_boot=n_boot)
        _count_missing_modalities(metrics["splits"]["train_cv"], model.missing_modalities(model.background_),
                                  oof.index, model.modalities)
        _site_table(metrics["splits"]["train_cv"], cases, oof.index, y, oof)
    predictions = pd.concat([pd.DataFrame({"split": "train_cv", "label": labelled.loc[oof.index, "label"]}),
                             oof[model.model_names]], axis=1)
    tables, analysed, errors = None, list(oof.index), pd.DataFrame()
    if len(test_cases):
        X, errors, suv = feature_table(test_cases, model.config.analysis, _cache(cache_dir, manifest), jobs=jobs,
                                       progress=progress, modality_names=model.modalities)
        metrics["suv_conversion"] = suv
        test_cases = test_cases.loc[X.index]
        analysed += list(X.index)
        images, masks, others = _model_images(model, test_cases)
        tables = model.complete_tables(X, images, masks, others, body_masks=_body_masks(model, test_cases, images))
        probs = model.predict_completed(tables, images, masks, others)
        held_out = pd.concat([test_cases[["split", "label"]], probs], axis=1)
        predictions = pd.concat([predictions, held_out])
        imputed = model.imputed_inputs(tables[0])
        lacking = model.missing_modalities(tables[0])
        for split, rows in held_out.groupby("split"):
            y = rows["label"].astype(int).to_numpy()
            block = evaluate_split(y, {m: rows[m].to_numpy() for m in model.model_names}, model.thresholds_,
                                   reference_model=reference, n_boot=n_boot)
            _count_imputed(block, imputed, rows.index)
            _count_missing_modalities(block, lacking, rows.index, model.modalities)
            _site_table(block, cases, rows.index, y, rows[model.model_names])
            metrics["splits"][split] = block
    elif not len(oof):
        raise DPETError(f"{manifest}: no labelled case to evaluate on")
    if model.manifest_.get("oracle"):
        metrics["oracle"] = model.manifest_["oracle"]
    metrics["run"] = run_record(model, bundle, manifest, cases, analysed, errors, n_boot)
    metrics["provenance"] = provenance_record(model, cases)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if planned is not None:
        from .core.files import atomic_write

        metrics["partitions"], partition_predictions = _partitions(model, planned, _cache(cache_dir, manifest),
                                                                   jobs=jobs, progress=progress)
        with atomic_write(out / PARTITIONS_FILE) as tmp:
            partition_predictions.to_csv(tmp, index=False)
    if tables is None:  # a cross-validation-only cohort: explain the training cases
        tables, test_cases = [model.background_], labelled.loc[labelled.index.isin(model.background_.index)]
    figures, metrics["fusion_shares"] = _explanation_figures(model, tables, test_cases, out)
    predictions = predictions.rename_axis("case_id").reset_index()
    return write_report(out, predictions, metrics, figures=figures)


def _plan_partitions(model: StudyModel, cases: pd.DataFrame, n: int, test_fraction: float | None,
                     habitats: str) -> dict:
    """The partitions `_partitions` will fit, drawn and checked before any other work."""
    from .partitions import HABITAT_CHOICES, manifest_test_fraction, partition_cases, partition_seeds

    if habitats not in HABITAT_CHOICES:
        raise DPETError(f"partition habitats {habitats!r}: choose from {', '.join(HABITAT_CHOICES)}")
    model.config.check()  # settings that cannot train here (a CNN weights file not found ...) fail now
    seeds = partition_seeds(n, model.config.seed)
    fraction = manifest_test_fraction(cases) if test_fraction is None else float(test_fraction)
    parts = partition_cases(cases, seeds, fraction, n_folds=model.config.n_folds, early_stopping=model.config.deep)
    if model.config.analysis.get("habitat_method") != "population":
        habitats = "per tumour (no centroids)"
    return {"seeds": seeds, "test_fraction": fraction, "habitats": habitats, "parts": parts}


def _partitions(model: StudyModel, planned: dict, cache: Path, jobs: int = 1,
                progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """Jang's design: the bundle's settings re-fit on each planned partition's training part (population habitats
    learned there too unless ``habitats`` is "bundle"; features from the shared cache), each model scored on the
    test part at the threshold fit on that part's training OOF probabilities. Returns metrics.json's
    ``partitions`` block and every test-part probability (partitions.csv)."""
    from .extraction import feature_table, with_habitat_model
    from .io.manifest import validate_for_training
    from .partitions import partition_scores, summarise

    config, seeds = model.config, planned["seeds"]
    scores, sizes, rows = [], [], []
    thresholds: dict[str, list[float]] = {}
    started = time.time()
    for i, (seed, part) in enumerate(zip(seeds, planned["parts"])):
        log.info(f"partition {i + 1}/{len(seeds)} (seed {seed}): {int((part['split'] == 'train').sum())} training, "
                 f"{int((part['split'] == 'test').sum())} test cases")
        settings = load_config(config)
        if planned["habitats"] == "refit":
            settings.analysis = with_habitat_model(part[part["split"] == "train"],
                                                   {**config.analysis, "habitat_model": None}, cache, jobs=jobs,
                                                   progress=progress)
        X, errors, _ = feature_table(part, settings.analysis, cache, jobs=jobs, progress=progress,
                                     modality_names=model.modalities)
        part = part.loc[X.index]
        validate_for_training(part, n_folds=config.n_folds, early_stopping=config.deep)
        train_part, test_part = part[part["split"] == "train"], part[part["split"] == "test"]
        fitted = StudyModel(settings, model.clinical_columns, model.modalities, body_mask=model.body_mask)
        images, masks, others = _model_images(model, train_part)
        fitted.fit(X.loc[train_part.index], train_part["label"].astype(int).to_numpy(), images, masks,
                   progress=progress, modality_images=others, body_masks=_body_masks(model, train_part, images))
        images, masks, others = _model_images(model, test_part)
        probs = fitted.predict_proba(X.loc[test_part.index], images, masks, others,
                                     body_masks=_body_masks(model, test_part, images))
        y = test_part["label"].astype(int).to_numpy()
        scores.append(partition_scores(y, probs, fitted.thresholds_))
        for name in fitted.model_names:
            thresholds.setdefault(name, []).append(fitted.thresholds_[name])
        sizes.append({"seed": seed, "train": int(len(train_part)), "test": int(len(test_part)),
                      "test_positive": int(y.sum()), "failed": int(len(errors))})
        rows.append(pd.concat([pd.DataFrame({"partition": i, "seed": seed, "label": y}, index=test_part.index),
                               probs], axis=1))
    block = {"n": len(seeds), "seeds": seeds, "test_fraction": planned["test_fraction"],
             "n_cases": int(len(planned["parts"][0])), "habitats": planned["habitats"], "sizes": sizes,
             "thresholds": thresholds, "seconds": round(time.time() - started, 1), "models": summarise(scores)}
    return block, pd.concat(rows).rename_axis("case_id").reset_index()


def _count_imputed(block: dict, imputed: dict, cases) -> None:
    """Each model's count of the split's cases whose inputs included an imputed value (``n_imputed``), and
    which columns they were (``imputed_inputs``: {model: {case: [columns]}})."""
    cases = set(map(str, cases))
    block["imputed_inputs"] = {}
    for name, stats in block["models"].items():
        per_case = {case: columns for case, columns in imputed.get(name, {}).items() if case in cases}
        stats["n_imputed"] = len(per_case)
        if per_case:
            block["imputed_inputs"][name] = per_case


def _site_table(block: dict, cases: pd.DataFrame, index, y, probabilities: pd.DataFrame) -> None:
    """The split's results per site (``sites``: cases, events, event rate, each model's AUC) where the manifest has
    a site column."""
    from .core.names import SITE
    from .reporting.evaluation import per_site

    if SITE in cases.columns:
        block["sites"] = per_site(y, cases.loc[index, SITE].to_numpy(),
                                  {m: probabilities[m].to_numpy() for m in probabilities.columns})


def _count_missing_modalities(block: dict, lacking: dict, cases, names) -> None:
    """How many of the split's cases lack each of the model's other modalities (``missing_modalities``: {modality:
    count}, and the cases in ``cases_missing_modalities``); nothing for a PET-only model."""
    if not names:
        return
    per_case = {str(c): lacking[str(c)] for c in cases if lacking.get(str(c))}
    block["missing_modalities"] = {m: sum(m in listed for listed in per_case.values()) for m in names}
    block["cases_missing_modalities"] = per_case


def _explanation_figures(model: StudyModel, tables: list, cases, out: Path) -> tuple[dict, dict]:
    """SHAP summaries per model, what each fusion rests on (shares of mean |SHAP|, also returned) and Grad-CAM
    montages of a few cases."""
    from .reporting.figures import gradcam_montage, plot_contribution_shares, plot_shap_summary

    figures = {}
    explanations = model.explain(tables)
    for name, values in explanations.items():
        path = out / f"shap_{name}.png"
        plot_shap_summary(values, _explained_inputs(values, tables[0]), path)
        figures[f"SHAP summary: {name}"] = path
    shares = model.fusion_shares(explanations)
    if shares:
        figures["Fusion: share of each input in mean |SHAP|"] = plot_contribution_shares(
            shares, out / "fusion_shares.png")
    if model.deep_model_ is not None:
        shown = cases.iloc[:3]
        images, masks, others = _images(shown, model.modalities)
        for i, (case_id, image, mask) in enumerate(zip(shown.index, images, masks)):
            path = out / f"gradcam_{case_id}.png"
            case_others = {m: (others[m][0][i], others[m][1][i]) for m in model.modalities}
            gradcam_montage(image, mask, model.gradcam(image, mask, case_others), path)
            figures[f"Grad-CAM: {case_id} (label {int(shown.loc[case_id, 'label'])})"] = path
    return figures, shares


def _explained_inputs(values: pd.DataFrame, X: pd.DataFrame) -> pd.DataFrame:
    """The feature values behind SHAP values, where they are table columns (colours in the beeswarm)."""
    cols = [c for c in values.columns if c in X.columns]
    return X.loc[values.index, cols].reindex(columns=values.columns)


def predict(bundle, image, mask=None, seed_xyz=None, case_id: str = "case", clinical: dict | None = None,
            model: StudyModel | None = None, modalities: dict | None = None, site: str | None = None,
            body_mask=None):
    """Predict one patient from a PET (SUV sitk.Image) and a tumour mask or a seed point (LPS mm).

    ``clinical`` holds the patient's clinical values by manifest column name; columns left out are imputed with
    the training medians/modes (said in the result's warnings). ``modalities``: the bundle's other modalities the
    patient has, ``{name: (image, tumour mask on that image's grid)}``; those left out are listed in the result's
    ``missing_modalities``. ``site``: the patient's centre, needed by a model that harmonises by site (one of its
    training sites; also taken from ``clinical``'s site column). ``body_mask``: the patient's body or breast mask
    on the PET's grid, for a model trained with them (`StudyModel.require_body_masks`)."""
    from .features.analysis import analyse_image
    from .results import PredictionResult

    model = model or StudyModel.load(bundle)
    engine_notes = model.radiomics_engine_notes()  # refuses an engine that does not reproduce the bundle's features
    model.require_body_masks(body_mask is not None, f"case {case_id}")
    if mask is None:
        if seed_xyz is None:
            raise InputError("give a tumour mask or a seed point", case=case_id)
        from .features.segmentation import segment_from_seed

        mask = segment_from_seed(image, seed_xyz=seed_xyz, case=case_id)
    features, subregions, warnings, shell = analyse_image(image, mask, model.config.analysis, case_id,
                                                          body=body_mask)
    other, other_warnings = _modality_features(model, modalities or {}, case_id)
    warnings = engine_notes + warnings + other_warnings
    X = pd.DataFrame([{**features, **other}], index=[case_id]).apply(pd.to_numeric, errors="coerce")
    clinical = dict(clinical or {})
    if model.site_column_ is not None and site is None:  # the Slicer module's form gives the site as a field
        site = clinical.pop(model.site_column_, None)
    unknown = set(clinical) - set(model.clinical_columns)
    if unknown:
        raise InputError(f"clinical values {sorted(unknown)} are not among the model's clinical columns "
                         f"{model.clinical_columns}", case=case_id)
    missing = [c for c in model.clinical_columns if c not in clinical]
    if missing:
        warnings.append(f"clinical values not given, imputed from training data: {', '.join(missing)}")
    for column in model.clinical_columns:
        X[column] = clinical.get(column, np.nan)
    if model.site_column_ is not None:
        X[model.site_column_] = _site_of(model, site, case_id)
    others = {m: ([modalities[m][0]], [modalities[m][1]]) for m in (modalities or {})}
    tables = model.complete_tables(X, [image], [mask], others, body_masks=None if body_mask is None else [body_mask])
    imputed = {name: per_case[case_id] for name, per_case in model.imputed_inputs(tables[0]).items()}
    probs = model.predict_completed(tables, [image], [mask], others).iloc[0].dropna()  # none: a modality not given
    shap = {name: values.iloc[0].to_dict() for name, values in model.explain(tables).items()}
    return PredictionResult(
        case_id=case_id,
        probabilities={m: float(probs[m]) for m in probs.index},
        decision={m: int(probs[m] >= model.thresholds_[m]) for m in probs.index},
        missing_modalities=model.missing_modalities(tables[0])[case_id],
        thresholds=dict(model.thresholds_),
        pet_metrics={k: float(v) for k, v in features.items() if k.startswith("pet_")},
        shap={m: {k: float(v) for k, v in d.items()} for m, d in shap.items()}, imputed_inputs=imputed,
        mask=mask, subregions=subregions, peritumoural=shell, gradcam=model.gradcam(image, mask, modalities),
        warnings=warnings,
    )


def _site_of(model: StudyModel, site, case_id: str) -> str:
    """The patient's site for a model that harmonises by site: one of its training sites."""
    from .core.names import site_label

    if site is None or site_label(site) not in model.sites_:
        raise InputError(f"this model harmonises its radiomics by site (ComBat, training sites: "
                         f"{', '.join(model.sites_)}): give the patient's site, one of those"
                         + (f" (got {site!r})" if site is not None else ""), case=case_id)
    return site_label(site)


def _modality_features(model: StudyModel, modalities: dict, case_id: str) -> tuple[dict, list[str]]:
    """The features of the other modalities given to `predict` (``{name: (image, mask)}``, a mask of None: the
    PET's grid is not assumed, so a mask is required) and their warnings; a modality the bundle was not trained
    with is refused."""
    from .features.analysis import analyse_modality_image, modality_settings

    unknown = sorted(set(modalities) - set(model.modalities))
    if unknown:
        raise InputError(f"modalities {', '.join(unknown)} given, but the model was trained with "
                         f"{', '.join(model.modalities) or 'the PET alone'}", case=case_id)
    features, warnings = {}, []
    for name, (image, mask) in modalities.items():
        if image is None or mask is None:
            raise InputError(f"modality {name}: give its image and its tumour mask (on the {name} image's grid)",
                             case=case_id)
        values, notes = analyse_modality_image(image, mask, modality_settings(model.config.analysis, name), case_id)
        features.update(values)
        warnings += notes
    return features, warnings


def predict_files(bundle, image_path, mask=None, seed_xyz=None, out_dir=None, clinical: dict | None = None,
                  dicom_out=None, modalities: dict | None = None, site: str | None = None, body_mask=None):
    """`dpet-response predict`: reads the files, predicts, and writes the prediction folder
    (`results.PREDICTION_FILES`) to ``out_dir`` and the DICOM SEG, SR and Grad-CAM map
    (`reporting.dicom.write_dicom_outputs`) to ``dicom_out`` when given; ``dicom_out`` needs a DICOM PET, which is
    checked before any work. ``modalities``: ``{name: (image path, mask path)}`` of the bundle's other modalities
    the patient has; ``body_mask``: the path of the patient's body mask on the PET's grid."""
    from .io.images import read_mask, read_modality, read_pet_with_provenance
    from .reporting.dicom import dicom_pet_datasets, write_dicom_outputs

    case_id = Path(image_path).name.split(".")[0]
    if dicom_out is not None:
        dicom_pet_datasets(image_path, case=case_id)
    image, suv_record = read_pet_with_provenance(image_path, case=case_id)
    mask_image = read_mask(mask, image, case=case_id) if mask is not None else None
    other = {}
    for name, (other_path, other_mask) in (modalities or {}).items():
        other_image = read_modality(other_path, name, case=case_id)
        other[name] = (other_image, read_mask(other_mask, other_image, case=case_id, reference_name=f"{name} image")
                       if other_mask else None)
    body = read_mask(body_mask, image, case=case_id) if body_mask is not None else None
    result = predict(bundle, image, mask=mask_image, seed_xyz=seed_xyz, case_id=case_id, clinical=clinical,
                     modalities=other, site=site, body_mask=body)
    result.suv_conversion = suv_record
    if out_dir is not None:
        result.write(out_dir)
    if dicom_out is not None:
        write_dicom_outputs(result, image_path, dicom_out, case=case_id)
    return result


def run_demo(out, n: int = 147, seed: int = 0, fast: bool = False) -> Path:
    """Synthetic D-PET cohort -> features -> train -> evaluate -> HTML report (prints where it is)."""
    from .synthetic import make_cohort

    out = Path(out)
    started = time.time()
    log.info(f"1/3 writing a synthetic D-PET cohort of {n} cases to {out / 'cohort'}")
    manifest = make_cohort(out / "cohort", n=n, seed=seed, progress=True)
    config = StudyConfig(seed=seed, deep_preset="cpu-fast")
    if fast:
        config.n_folds = 3
        config.deep_epochs = 5
        config.classifiers = ("lr", "nb")
    log.info("2/3 training every pathway and fusion on the train split")
    train(manifest, out / "bundle", config=config, jobs=2, cache_dir=out / "cache", overwrite=True)
    log.info("3/3 evaluating on the test splits")
    report = evaluate(out / "bundle", manifest, out / "report", jobs=2, cache_dir=out / "cache")
    metrics = json.loads((Path(report).parent / "metrics.json").read_text())
    _print_summary(metrics)
    log.info(f"done in {time.time() - started:.0f} s. Report: {report}")
    return Path(report)


def _print_summary(metrics: dict) -> None:
    oracle = metrics.get("oracle") or {}
    for split, block in metrics["splits"].items():
        line = f"{split} (n={block['n']}): " + ", ".join(
            f"{m} {v['auc']:.2f}" + (" (constant)" if "constant" in v else "")
            + (f" ({v['n_imputed']} with imputed inputs)" if v.get("n_imputed") else "")
            for m, v in block["models"].items() if v.get("auc") is not None)
        if split in oracle.get("auc_by_split", {}):
            line += f" | oracle {oracle['auc_by_split'][split]:.2f}"
        log.info(line)
        if block.get("reference_verdict"):
            log.info("  %s", block["reference_verdict"]["text"])
