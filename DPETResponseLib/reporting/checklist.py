"""The reporting checklists an evaluation can fill: TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) and METRICS
(Kocak et al., Insights Imaging 2024;15:8).

`build_checklist(metrics)` fills, from metrics.json alone (its `splits`, `settings`, `choices`, `run` and
`provenance` blocks), every item the run knows the answer to; the others say "to be completed by the authors".
Item numbers and topics are the checklists' own; the requirement texts are short paraphrases. A filled item has
``status`` "filled" (the run answers it) or "partly filled" (the run gives facts, the authors complete them), a
``value`` sentence and, where it has numbers, ``data`` (what a test checks against the run).
"""

from __future__ import annotations

from ..io.suv import rule_counts
from .evaluation import ALPHA, significant

FILLED, PARTLY, TO_COMPLETE = "filled", "partly filled", "to be completed by the authors"
#: The model on clinical columns alone: METRICS item 24's non-radiomic comparator.
NON_RADIOMIC = "clinical"
CHECKLIST_FILE = "checklist.json"

TRIPOD_AI = {
    "1": "Title", "2": "Abstract", "3a": "Background: healthcare context and rationale",
    "3b": "Background: target population and intended use", "3c": "Background: known health inequalities",
    "4": "Objectives", "5a": "Data: sources", "5b": "Data: dates", "6a": "Participants: setting and centres",
    "6b": "Participants: eligibility criteria", "6c": "Participants: treatments", "7": "Data preparation",
    "8a": "Outcome: definition, how and when assessed", "8b": "Outcome: assessors' qualifications",
    "8c": "Outcome: blinding", "9a": "Predictors: choice of initial predictors",
    "9b": "Predictors: definition, how and when measured", "9c": "Predictors: assessors' qualifications",
    "10": "Sample size", "11": "Missing data", "12a": "Analytical methods: use of the data (partitioning)",
    "12b": "Analytical methods: handling of predictors", "12c": "Analytical methods: model type, building steps, "
    "hyperparameter tuning, internal validation", "12d": "Analytical methods: heterogeneity across clusters",
    "12e": "Analytical methods: performance measures and plots", "12f": "Analytical methods: model updating",
    "12g": "Analytical methods: how predictions were calculated in the evaluation", "13": "Class imbalance",
    "14": "Fairness", "15": "Model output", "16": "Training versus evaluation", "17": "Ethical approval",
    "18a": "Open science: funding", "18b": "Open science: conflicts of interest", "18c": "Open science: protocol",
    "18d": "Open science: registration", "18e": "Open science: data sharing", "18f": "Open science: code sharing",
    "19": "Patient and public involvement", "20a": "Participants: flow, with and without the outcome",
    "20b": "Participants: characteristics, missing data", "20c": "Participants: development vs evaluation data",
    "21": "Model development: participants and outcome events in each analysis", "22": "Model specification",
    "23a": "Model performance with confidence intervals", "23b": "Model performance: heterogeneity across clusters",
    "24": "Model updating", "25": "Interpretation", "26": "Limitations",
    "27a": "Usability: handling of poor-quality or unavailable input data",
    "27b": "Usability: user interaction and expertise", "27c": "Future research",
}

METRICS = {
    "1": "Adherence to radiomics and/or machine learning-specific checklists or guidelines",
    "2": "Eligibility criteria that describe a representative study population",
    "3": "High-quality reference standard with a clear definition", "4": "Multi-center",
    "5": "Clinical translatability of the imaging data source for radiomics analysis",
    "6": "Imaging protocol with acquisition parameters",
    "7": "The interval between imaging used and reference standard",
    "8": "Transparent description of segmentation methodology",
    "9": "Formal evaluation of fully automated segmentation",
    "10": "Test set segmentation masks produced by a single reader or automated tool",
    "11": "Appropriate use of image preprocessing techniques with transparent description",
    "12": "Use of standardized feature extraction software",
    "13": "Transparent reporting of feature extraction parameters",
    "14": "Removal of non-robust features", "15": "Removal of redundant features",
    "16": "Appropriateness of dimensionality compared to data size",
    "17": "Robustness assessment of end-to-end deep learning pipelines", "18": "Proper data partitioning process",
    "19": "Handling of confounding factors", "20": "Use of appropriate performance evaluation metrics for task",
    "21": "Consideration of uncertainty", "22": "Calibration assessment",
    "23": "Use of uni-parametric imaging or proof of its inferiority",
    "24": "Comparison with a non-radiomic approach or proof of added clinical value",
    "25": "Comparison with simple or classical statistical models", "26": "Internal testing", "27": "External testing",
    "28": "Data availability", "29": "Code availability", "30": "Model availability",
}

REFERENCES = {"TRIPOD+AI": "Collins GS et al. BMJ 2024;385:e078378",
              "METRICS": "Kocak B et al. Insights Imaging 2024;15:8"}

#: How the pipelines handle missing inputs (learn.pathways and learn.fusion: SimpleImputer fit on the training cases).
IMPUTATION = ("missing inputs are imputed inside each model's pipeline with the training cases' median (numbers) or "
              "most frequent category (categories); at prediction and evaluation the same training values are used")
PERFORMANCE = ("AUC with DeLong and stratified percentile bootstrap 95% CIs; sensitivity, specificity, accuracy, "
               "balanced accuracy, PPV and NPV at the training (Youden) threshold; Brier score; calibration slope "
               "and intercept (calibration-in-the-large) with a 5-bin calibration plot; decision curves (net "
               "benefit); paired two-sided DeLong tests between models (not adjusted for multiplicity); SHAP "
               "explanations of every model and Grad-CAM maps of the CNN")


def _split_events(metrics: dict) -> dict:
    return {s: {"n": b.get("n"), "events": b.get("n_positive")} for s, b in metrics["splits"].items()}


def _evaluation_splits(metrics: dict) -> list[str]:
    return [s for s in metrics["splits"] if s != "train_cv"]


def _performance(metrics: dict) -> dict:
    return {s: {m: {"auc": v["auc"], "auc_ci": v["auc_ci"]} for m, v in b.get("models", {}).items() if "auc" in v}
            for s, b in metrics["splits"].items()}


def _above(metrics: dict, reference: str) -> dict[str, list[str]]:
    """Per split where ``reference`` was compared: the models with a higher AUC and a paired DeLong p < ALPHA."""
    out = {}
    for split, block in metrics["splits"].items():
        pairs = [c for c in block.get("comparisons", []) if reference in (c["model_a"], c["model_b"])]
        if pairs:
            out[split] = [c["model_b"] if c["model_a"] == reference else c["model_a"] for c in pairs
                          if significant(c["p_value"]) and (c["diff"] < 0) == (c["model_a"] == reference)]
    return out


def _partitions(metrics: dict) -> dict | None:
    """The repeated-partition design and each model's mean and SD, where the run made them."""
    block = metrics.get("partitions")
    if not block:
        return None
    return {"n": block["n"], "test_fraction": block["test_fraction"], "seeds": block["seeds"],
            "habitats": block.get("habitats"),
            "models": {m: {k: {"mean": v["mean"], "sd": v["sd"]} for k, v in stats.items()}
                       for m, stats in block["models"].items()}}


def _partitions_text(design: dict) -> str:
    return (f"{design['n']} independent stratified partitions of the labelled cases ({design['test_fraction']:.0%} "
            f"test, seeds {design['seeds'][0]}-{design['seeds'][-1]}), every model re-fit on each training part")


def _prevalence(counts: dict) -> str:
    return "events (label 1) per split: " + "; ".join(f"{s} {c['events'] / c['n']:.0%}" for s, c in counts.items()
                                                    if c["n"])


def _fmt_counts(counts: dict) -> str:
    return "; ".join(f"{s}: {c['n']} cases, {c['events']} events (label 1)" for s, c in counts.items())


def _item(status, value, data=None) -> dict:
    out = {"status": status, "value": value}
    if data is not None:
        out["data"] = data
    return out


def _tripod(metrics: dict) -> dict:
    run, settings, prov = metrics.get("run", {}), metrics.get("settings", {}), metrics.get("provenance", {})
    bundle, cases = run.get("bundle", {}), run.get("cases", {})
    counts = _split_events(metrics)
    evaluation = _evaluation_splits(metrics)
    deep = bundle.get("deep") or {}
    items = {}
    if bundle:
        training = bundle.get("training", {})
        items["5a"] = _item(PARTLY, f"development data: {training.get('manifest')} (split train); evaluation data: "
                            f"{run['evaluation']['manifest']} (splits {', '.join(evaluation) or 'none'}). The "
                            "source (trial, registry, retrospective cohort) is to be described by the authors.",
                            {"training_manifest": training.get("manifest"),
                             "evaluation_manifest": run["evaluation"]["manifest"], "evaluation_splits": evaluation})
        groups = bundle.get("input_groups", {})
        items["9a"] = _item(PARTLY, f"{bundle.get('n_input_columns')} candidate inputs: "
                            + ", ".join(f"{n} {g}" for g, n in groups.items())
                            + (f"; clinical columns: {', '.join(bundle.get('clinical_columns', []))}"
                               if bundle.get("clinical_columns") else "")
                            + (f"; CNN on the PET crop ({deep.get('arch')})" if deep else ""),
                            {"n_input_columns": bundle.get("n_input_columns"), "input_groups": groups,
                             "clinical_columns": bundle.get("clinical_columns")})
        items["22"] = _item(FILLED, f"model bundle {bundle.get('path')} (content sha256 {bundle.get('content_sha256')}"
                            f", schema {bundle.get('schema_version')}): every fitted pipeline (skops), the CNN "
                            "weights (safetensors) and thresholds; predictions with `dpet-response predict`",
                            {"content_sha256": bundle.get("content_sha256")})
        items["18f"] = _item(PARTLY, "DPETResponse " + str(run["evaluation"]["versions"].get("DPETResponse"))
                             + "; where the code is shared is to be stated by the authors",
                             {"versions": run["evaluation"]["versions"]})
        items["12g"] = _item(FILLED, f"`dpet-response evaluate` ran the bundle (sha256 {bundle.get('content_sha256')}) "
                             "on each evaluation case from its PET and mask, exactly as `predict` does; the CNN's "
                             "fold models are pooled by mean log-odds")
    if cases:
        flow = {s: {k: c[k] for k in ("listed", "labelled", "analysed")} | {"failed": len(c["failed"])}
                for s, c in cases.items()}
        items["20a"] = _item(FILLED, "; ".join(f"{s}: {c['listed']} listed, {c['labelled']} labelled, "
                                               f"{c['analysed']} analysed, {c['failed']} failed the image analysis"
                                               for s, c in flow.items()), flow)
        missing = {s: {k: v for k, v in c["clinical_missing"].items() if v} for s, c in cases.items()}
        failed = {s: c["failed"] for s, c in cases.items() if c["failed"]}
        items["11"] = _item(FILLED, IMPUTATION + ". Missing clinical values per split: "
                            + ("; ".join(f"{s}: " + (", ".join(f"{k} {v}" for k, v in m.items()) or "none")
                                         for s, m in missing.items()))
                            + ". Cases whose image analysis failed are left out and listed: "
                            + (", ".join(f"{c} ({s})" for s, d in failed.items() for c in d) or "none"),
                            {"clinical_missing": missing, "failed": failed})
        items["20b"] = _item(PARTLY, "missing clinical values per split are in item 11; the participants' "
                             "characteristics (table 1) are to be given by the authors", {"clinical_missing": missing})
    if prov.get("radiomics"):
        r = prov["radiomics"]["settings"]
        suv = rule_counts(metrics.get("suv_conversion") or {})
        items["7"] = _item(FILLED, "evaluated PET converted to SUV by " + (", ".join(f"{k} ({n} cases)" for k, n in
                                                                                  suv.items()) or "no recorded rule")
                           + "; radiomics " + (f"resampled to {r['resampledPixelSpacing']} mm" if
                                               r.get("resampledPixelSpacing") else "on each image's own grid")
                           + f", SUV bins of {r.get('binWidth')}; CNN input "
                           f"{prov.get('deep_input')}; tumour masks as given",
                           {"suv_rules": suv, "binWidth": r.get("binWidth"), "deep_input": prov.get("deep_input"),
                            "resampledPixelSpacing": r.get("resampledPixelSpacing")})
    sites = {split: {site: row["n"] for site, row in block["sites"].items()}
             for split, block in metrics.get("splits", {}).items() if block.get("sites")}
    if sites:
        listed = "; ".join(f"{split}: " + ", ".join(f"{site} {n}" for site, n in per_site.items())
                           for split, per_site in sites.items())
        items["6a"] = _item(PARTLY, f"cases per site (the manifest's site column): {listed}. The setting of each "
                            "centre is to be described by the authors", {"cases_per_site": sites})
    if len(counts) > 1:
        items["16"] = _item(PARTLY, _prevalence(counts) + "; other differences between development and evaluation "
                            "data are to be described by the authors")
    column = (metrics.get("outcome") or {}).get("column")
    if column in (None, "label"):
        items["8a"] = _item(PARTLY, "binary outcome from the manifest's label column (1 = pCR); the pCR definition "
                            "(e.g. ypT0/is ypN0) and when it was assessed are to be given by the authors")
    else:
        items["8a"] = _item(PARTLY, f"binary outcome from the manifest's column {column!r} (1 = event); its "
                            "definition and when it was assessed are to be given by the authors", {"column": column})
    items["10"] = _item(PARTLY, _fmt_counts(counts) + ". No sample-size calculation was made by the tool.",
                        counts)
    items["21"] = _item(FILLED, _fmt_counts(counts), counts)
    partitions = _partitions(metrics)
    if settings:
        data = {"n_folds": settings.get("n_folds"), "seed": settings.get("seed"), "evaluation_splits": evaluation}
        if partitions:
            data["partitions"] = {k: partitions[k] for k in ("n", "test_fraction", "seeds", "habitats")}
        items["12a"] = _item(FILLED, f"models developed on split train with {settings.get('n_folds')}-fold "
                             f"stratified cross-validation (seed {settings.get('seed')}) for internal validation "
                             "(train_cv: out-of-fold predictions); evaluated on "
                             + (", ".join(evaluation) or "no held-out split")
                             + (f"; also {_partitions_text(partitions)} and scored on its test part"
                                if partitions else ""), data)
        items["12b"] = _item(FILLED, "numbers standardised (z-score on the training cases), categories one-hot "
                             f"encoded; {IMPUTATION}; CNN input: PET crop resampled and clipped "
                             f"(see provenance: {prov.get('deep_input')})")
        items["12c"] = _item(FILLED, f"candidate classifiers {settings.get('classifiers')}; radiomics: variance and "
                             f"correlation filters, Mann-Whitney U, mRMR to {settings.get('n_mrmr')} features, LASSO "
                             f"keeping at most {settings.get('max_features')}, every step fit inside each training "
                             "fold; "
                             "feature set and classifier chosen by inner cross-validation (choices below); "
                             f"decision fusion weights '{settings.get('decision_weights')}'; CNN "
                             f"{settings.get('deep_preset')} preset; thresholds by Youden's index on out-of-fold "
                             "probabilities",
                             {"classifiers": settings.get("classifiers"), "n_mrmr": settings.get("n_mrmr"),
                              "max_features": settings.get("max_features"), "choices": metrics.get("choices")})
    items["12e"] = _item(FILLED, PERFORMANCE + f" ({run.get('evaluation', {}).get('n_boot')} bootstrap resamples)")
    items["12f"] = _item(FILLED, "no model updating or recalibration: the bundle is evaluated as trained")
    items["24"] = _item(FILLED, "none")
    if metrics.get("thresholds"):
        items["15"] = _item(FILLED, "each model gives a probability of pCR; a decision at the threshold fixed on the "
                            "training data (Youden's index on out-of-fold probabilities)",
                            {"thresholds": metrics["thresholds"]})
    balanced = "; the CNN's loss is class-balanced" if deep.get("class_balanced") else ""
    items["13"] = _item(PARTLY, _prevalence(counts) + ". No resampling of the classes" + balanced)
    performance = _performance(metrics)
    text = "every model's AUC with its DeLong 95% CI per split is in the summary"
    if partitions:
        performance = {**performance, "partitions": partitions["models"]}
        text += (f"; over {partitions['n']} repeated stratified partitions (mean ± SD): " + "; ".join(
            f"{m} AUC {v['auc']['mean']:.2f} ± {v['auc']['sd']:.2f}" for m, v in partitions["models"].items()))
    items["23a"] = _item(FILLED, text, performance)
    n_imputed = {s: {m: v.get("n_imputed") for m, v in b.get("models", {}).items() if v.get("n_imputed") is not None}
                 for s, b in metrics["splits"].items() if s != "train_cv"}
    items["27a"] = _item(FILLED, IMPUTATION + "; cases with an imputed input per model and split: "
                         + ("; ".join(f"{s}: " + (", ".join(f"{m} {n}" for m, n in d.items() if n) or "none")
                                      for s, d in n_imputed.items()) or "no held-out split"), n_imputed)
    return items


def _metrics(metrics: dict) -> dict:
    run, settings, prov = metrics.get("run", {}), metrics.get("settings", {}), metrics.get("provenance", {})
    counts = _split_events(metrics)
    items = {}
    radiomics = prov.get("radiomics")
    if radiomics:
        s = radiomics["settings"]
        keys = ("resampledPixelSpacing", "interpolator", "binWidth", "binCount", "normalize", "resegmentRange",
                "padDistance", "preCrop")
        items["11"] = _item(FILLED, "PET in SUV (provenance: SUV conversion); pyradiomics settings: "
                            + ", ".join(f"{k} {'not set' if s.get(k) is None else s.get(k)}" for k in keys if k in s),
                            {k: s.get(k) for k in keys if k in s})
        items["12"] = _item(FILLED, f"pyradiomics {radiomics['versions'].get('pyradiomics')} (an IBSI-"
                            f"benchmarked engine) with SimpleITK {radiomics['versions'].get('SimpleITK')}",
                            {"versions": radiomics["versions"]})
        items["13"] = _item(FILLED, f"image types {sorted(radiomics['image_types'])}, feature classes "
                            f"{sorted(radiomics['feature_classes'])}; full settings in the provenance section",
                            {"image_types": radiomics["image_types"], "feature_classes": radiomics["feature_classes"]})
    segmentation = prov.get("segmentation")
    if segmentation:
        items["8"] = _item(PARTLY, f"{segmentation['source']} ({segmentation['formats']}); subregions by "
                           f"{prov['habitats']['method']} habitats (k={prov['habitats']['k']}); who delineated "
                           "the tumours and how is to be described by the authors", segmentation)
    if settings:
        items["15"] = _item(FILLED, f"correlation filter, mRMR (to {settings.get('n_mrmr')} features) and LASSO, "
                            "inside each training fold")
        train = counts.get("train_cv")
        if train:
            items["16"] = _item(FILLED, f"at most {settings.get('max_features')} radiomics features per model for "
                                f"{train['events']} events and {train['n'] - train['events']} non-events in "
                                "training", {"max_features": settings.get("max_features"), "train": train})
        items["18"] = _item(FILLED, "feature selection, tuning and thresholds fit inside the training folds only; "
                            "held-out splits never seen in training: " + (", ".join(_evaluation_splits(metrics))
                                                                          or "none"))
    items["20"] = _item(FILLED, PERFORMANCE)
    items["21"] = _item(FILLED, "95% CIs (DeLong and bootstrap) for every AUC; paired DeLong tests",
                        _performance(metrics))
    items["22"] = _item(FILLED, "calibration slope and intercept per model and split, calibration plots",
                        {s: {m: {"slope": v.get("calibration_slope"), "intercept": v.get("calibration_intercept")}
                             for m, v in b.get("models", {}).items() if "auc" in v}
                         for s, b in metrics["splits"].items()})
    items["23"] = _item(FILLED, "single modality: PET (one image per case)")
    above_clinical = _above(metrics, NON_RADIOMIC)
    if above_clinical:
        items["24"] = _item(FILLED, f"every model compared with the {NON_RADIOMIC} model (clinical columns only) by "
                            f"paired DeLong; significantly above it (p < {ALPHA:g}, unadjusted): " + "; ".join(
                                f"{s}: {', '.join(m) or 'none'}" for s, m in above_clinical.items()), above_clinical)
    verdicts = {s: b["reference_verdict"]["text"] for s, b in metrics["splits"].items() if b.get("reference_verdict")}
    if verdicts:
        reference = next(b["reference_model"] for b in metrics["splits"].values() if b.get("reference_model"))
        items["25"] = _item(FILLED, f"every model compared with the {reference} (penalised logistic regression on PET "
                            "metrics, Original first-order and shape features and the clinical columns) by paired "
                            "DeLong: " + " ".join(f"{s}: {t}" for s, t in verdicts.items()), verdicts)
    partitions = _partitions(metrics)
    items["26"] = _item(PARTLY, "internal validation by cross-validation (train_cv) and evaluation on "
                        + (", ".join(_evaluation_splits(metrics)) or "no held-out split")
                        + (f"; {_partitions_text(partitions)}" if partitions else "")
                        + "; whether a split is internal or external is to be stated by the authors")
    bundle = run.get("bundle")
    if bundle:
        items["30"] = _item(PARTLY, f"model bundle sha256 {bundle.get('content_sha256')}; where it is shared is "
                            "to be stated by the authors", {"content_sha256": bundle.get("content_sha256")})
    return items


def build_checklist(metrics: dict) -> dict:
    """Both checklists, every item listed in the checklist's order, filled where the run knows the answer."""
    out = {}
    for name, topics, filled in (("TRIPOD+AI", TRIPOD_AI, _tripod(metrics)), ("METRICS", METRICS, _metrics(metrics))):
        out[name] = {"reference": REFERENCES[name], "items": [
            {"item": number, "topic": topic, **filled.get(number, {"status": TO_COMPLETE})}
            for number, topic in topics.items()]}
    return out
