"""The evaluation report: metrics.json, predictions.csv, PNG figures and a self-contained report.html.

Figures are drawn with matplotlib's object-oriented API (``matplotlib.figure.Figure`` rendered by Agg), which
never touches pyplot's global backend, so the module is safe inside 3D Slicer.
"""

import html
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import InputError
from ..core.files import atomic_write, plain, write_text
from ..io.suv import rule_counts
from . import evaluation
from .checklist import CHECKLIST_FILE, TO_COMPLETE, build_checklist
from .evaluation import ALPHA
from .figures import plot_comparison_matrix, save_figure

FIXED_COLUMNS = ("case_id", "split", "label")
FIGURES_FILE = "figures.json"  # caption -> relative path of the extra figures, so the report can be rebuilt


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)) or "_"


def _model_columns(predictions: pd.DataFrame) -> list[str]:
    return [c for c in predictions.columns if c not in FIXED_COLUMNS]


def _check_inputs(predictions: pd.DataFrame, metrics: dict) -> None:
    missing = [c for c in FIXED_COLUMNS if c not in predictions.columns]
    if missing:
        raise InputError(f"predictions lack the columns {missing} (need case_id, split, label, one column per model)",
                         case="write_report")
    if not isinstance(metrics, dict) or not isinstance(metrics.get("splits"), dict):
        raise InputError('metrics must be a dict with a "splits" dict ({split: evaluate_split(...)})',
                         case="write_report")


# ----------------------------------------------------------------------------------------------------- figures
def _split_data(rows: pd.DataFrame, model: str) -> tuple[np.ndarray, np.ndarray]:
    p = pd.to_numeric(rows[model], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(rows["label"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(p) & np.isfinite(y)
    return y[ok].astype(int), p[ok]


def _auc_label(model: str, y, p, stats: dict | None) -> str:
    if stats and stats.get("auc") is not None and stats.get("auc_ci"):
        a, (lo, hi) = stats["auc"], stats["auc_ci"]
    else:
        a, (lo, hi) = evaluation.auc(y, p), evaluation.auc_ci_delong(y, p)
    return f"{model}: AUC {a:.2f} ({lo:.2f}-{hi:.2f})"


def _split_figures(out_dir: Path, split: str, rows: pd.DataFrame, models: list[str], split_metrics: dict,
                   event: str = "pCR") -> dict:
    """ROC, calibration and decision curves of every model on one split; {kind: path}."""
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    usable = [(m, *_split_data(rows, m)) for m in models]
    usable = [(m, y, p) for m, y, p in usable if 0 < y.sum() < y.size]
    if not usable:
        return {}
    stem = _safe_name(split)
    made = {}

    fig = Figure(figsize=(5.2, 5.0))
    ax = fig.add_subplot()
    for m, y, p in usable:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=1.6, label=_auc_label(m, y, p, split_metrics.get("models", {}).get(m)))
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC: {split}", xlim=(0, 1), ylim=(0, 1.01),
           aspect="equal")
    ax.legend(loc="lower right", fontsize=7, title="DeLong 95% CI", title_fontsize=7)
    made["ROC curves"] = save_figure(fig, out_dir / f"roc_{stem}.png")

    fig = Figure(figsize=(5.2, 5.0))
    ax = fig.add_subplot()
    for m, y, p in usable:
        bins = evaluation.calibration(y, p, n_bins=5)["bins"]
        ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], marker="o", lw=1.4, label=m)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="ideal")
    ax.set(xlabel="mean predicted probability (5 equal-width bins)", ylabel=f"observed {event} fraction",
           title=f"Calibration: {split}", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal")
    ax.legend(loc="upper left", fontsize=7)
    made["Calibration curves"] = save_figure(fig, out_dir / f"calibration_{stem}.png")

    fig = Figure(figsize=(6.0, 4.4))
    ax = fig.add_subplot()
    curves = [(m, evaluation.decision_curve(y, p)) for m, y, p in usable]
    for m, dc in curves:
        ax.plot(dc["threshold"], dc["model"], lw=1.4, label=m)
    dc = curves[0][1]
    ax.plot(dc["threshold"], dc["treat_all"], ls="--", c="k", lw=1, label="treat all")
    ax.plot(dc["threshold"], dc["treat_none"], ls="-", c="grey", lw=1, label="treat none")
    top = max(float(np.nanmax(c["model"])) for _, c in curves)
    ax.set(xlabel="threshold probability", ylabel="net benefit", title=f"Decision curves: {split}",
           ylim=(-0.05, max(top, float(dc["treat_all"].max()), 0.05) + 0.05))
    ax.legend(fontsize=7)
    made["Decision curves"] = save_figure(fig, out_dir / f"decision_{stem}.png")

    comparisons = split_metrics.get("comparisons", [])
    if comparisons:
        compared = [m for m in models if any(m in (c["model_a"], c["model_b"]) for c in comparisons)]
        made["Paired comparisons"] = plot_comparison_matrix(comparisons, compared, out_dir / f"comparisons_{stem}.png",
                                                            f"Paired DeLong comparisons: {split}", alpha=ALPHA)
    return made


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"[{_fmt(value[0], digits)}, {_fmt(value[1], digits)}]"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_p(p) -> str:
    return "-" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0, classes="metrics")


MODEL_ROWS = [("cases scored", "n"), ("missing probability", "n_missing"), ("cases with imputed inputs", "n_imputed"),
              ("AUC", "auc"), ("DeLong 95% CI", "auc_ci"), ("bootstrap 95% CI", "auc_ci_bootstrap"),
              ("p vs baseline (paired DeLong)", "p_value_vs_reference"), ("threshold", "threshold"),
              ("sensitivity", "sensitivity"), ("specificity", "specificity"), ("accuracy", "accuracy"),
              ("balanced accuracy", "balanced_accuracy"), ("PPV", "ppv"), ("NPV", "npv"), ("Brier score", "brier"),
              ("calibration slope", "calibration_slope"), ("calibration intercept", "calibration_intercept")]

#: What to look at in each kind of figure (by the caption's start).
GUIDES = {
    "ROC curves": "Sensitivity against 1 - specificity as the threshold moves; the legend gives each AUC with its "
                  "DeLong 95% CI. The further a curve bows to the top left, the better it ranks pCR above non-pCR; "
                  "the dotted diagonal is chance.",
    "Calibration curves": "Mean predicted probability against the observed pCR fraction in 5 bins. Points on the "
                          "diagonal are calibrated; above it the model under-predicts pCR, below it over-predicts.",
    "Decision curves": "Net benefit of acting on the model across threshold probabilities, against acting for "
                       "everyone (dashed) or no one (grey). A model helps only where its curve lies above both.",
    "Paired comparisons": "Cell (row, column): AUC of the row model minus AUC of the column model, and the paired "
                          "DeLong p (unadjusted). Outlined, bold cells differ at p < 0.05; pale cells do not.",
    "SHAP summary": "One row per input, most important on top; one dot per case. Dots right of 0 push the "
                    "prediction towards pCR; colour is the input's value (red high, blue low, grey unknown).",
    "Fusion": "How much of each fusion's mean |SHAP| comes from each input: a fusion resting on one input adds "
              "little over that input's own model.",
    "Grad-CAM": "Where the CNN's evidence lies (heat) on the PET (grey) and the tumour contour (green); heat far "
                "outside the contour means the CNN looks at the surroundings.",
}


def _guide(caption: str) -> str:
    return next((text for start, text in GUIDES.items() if caption.startswith(start)), "")


def _img(out_dir: Path, path: Path, caption: str) -> str:
    if not path.is_file():
        return f"<p class='missing'>{html.escape(caption)}: figure file {html.escape(path.name)} not found.</p>"
    rel = path.resolve().relative_to(out_dir.resolve()).as_posix()
    guide = _guide(caption)
    return (f"<figure><img src='{html.escape(rel)}' alt='{html.escape(caption)}'>"
            f"<figcaption><b>{html.escape(caption)}.</b> {html.escape(guide)}</figcaption></figure>")


def _flat(value, prefix: str = "") -> list[tuple[str, str]]:
    """A nested dict as (dotted key, formatted value) rows."""
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flat(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list):
        return [(prefix, ", ".join(_fmt(v) for v in value))]
    return [(prefix, _fmt(value))]


STYLE = """body{font-family:sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222;line-height:1.35}
table.metrics{border-collapse:collapse;font-size:13px;margin:0.5em 0 1em}
table.metrics th,table.metrics td{border:1px solid #ccc;padding:3px 7px;text-align:right;overflow-wrap:anywhere}
table.metrics td:first-child,table.metrics th:first-child{text-align:left}
table.wide td{text-align:left;max-width:760px}
table.sites th{overflow-wrap:normal}table.sites small{white-space:nowrap;color:#555}
td.best{font-weight:bold;background:#eaf4ea}tr.baseline td{font-style:italic;background:#f4f4f4}
figure{display:inline-block;margin:0.5em;vertical-align:top;max-width:560px}figure img{max-width:100%}
figcaption{font-size:12px;color:#444}.note{font-size:12px;color:#555}.missing{color:#a00}
details{margin:0.3em 0}summary{cursor:pointer}ul.verdicts li{margin:0.3em 0}
pre{background:#f6f6f6;padding:0.7em;font-size:12px;overflow:auto;max-height:30em}"""

NOTES = ("AUC CIs: DeLong (plain Wald interval on the AUC scale, clipped to [0, 1], as pROC) and stratified "
         "percentile bootstrap. Threshold metrics use the threshold fixed on the training data (Youden); "
         "on train_cv, each case's threshold is chosen on the other folds' out-of-fold probabilities (nested). "
         "Calibration slope: b of logit P = a + b logit(p); calibration intercept: calibration-in-the-large (slope "
         "fixed at 1; 0 is ideal). Comparisons: paired two-sided DeLong tests, not adjusted for multiplicity.")


def event_name(metrics: dict) -> str:
    """What a positive case is called: "pCR" for the manifest's label column, else the outcome column's name."""
    column = (metrics.get("outcome") or {}).get("column", "label")
    return "pCR" if column == "label" else str(column)


def _outcome_note(metrics: dict) -> str:
    outcome = metrics.get("outcome")
    if not outcome:
        return ""
    column = outcome["column"]
    text = (f"Outcome: the manifest's column {column!r} (1 = {'pCR' if column == 'label' else 'event'}, 0 = not); "
            f"the counts of positive cases below are of {event_name(metrics)}.")
    if outcome.get("ignored_columns"):
        text += f" Not used as predictors: {', '.join(outcome['ignored_columns'])}."
    return f"<p class='note'>{html.escape(text)}</p>"


def _held_out(metrics: dict) -> list[str]:
    return [s for s, b in metrics["splits"].items() if s != "train_cv" and b.get("models")]


def _splits_in_order(metrics: dict) -> list[str]:
    """Held-out splits first, then the cross-validated training estimates (train_cv)."""
    return sorted(metrics["splits"], key=lambda s: s == "train_cv")


def _best(block: dict) -> str | None:
    scored = {m: v["auc"] for m, v in block.get("models", {}).items() if v.get("auc") is not None}
    return max(scored, key=scored.get) if scored else None


def _auc_cell(stats: dict | None) -> str:
    if not stats:
        return "-"
    if "skipped" in stats:
        return "not scored"
    lo, hi = stats["auc_ci"]
    return f"{stats['auc']:.2f} ({lo:.2f}-{hi:.2f})" + (" constant" if "constant" in stats else "")


def _summary_table(metrics: dict) -> str:
    """Models x splits: AUC (DeLong 95% CI); the best model of each split and the baseline row marked."""
    splits = [s for s in _splits_in_order(metrics) if metrics["splits"][s].get("models")]
    models = list(dict.fromkeys(m for s in splits for m in metrics["splits"][s]["models"]))
    reference = next((metrics["splits"][s]["reference_model"] for s in splits
                      if metrics["splits"][s].get("reference_model")), None)
    best = {s: _best(metrics["splits"][s]) for s in splits}
    event = html.escape(event_name(metrics))
    head = "".join(f"<th>{html.escape(s)} (n={metrics['splits'][s]['n']}, {event} {metrics['splits'][s]['n_positive']})"
                   "</th>" for s in splits)
    rows = []
    for m in models:
        cells = "".join(f"<td class='{'best' if best[s] == m else ''}'>{'&#9733; ' if best[s] == m else ''}"
                        f"{html.escape(_auc_cell(metrics['splits'][s]['models'].get(m)))}</td>" for s in splits)
        label = html.escape(m) + (" (reference)" if m == reference else "")
        rows.append(f"<tr class='{'baseline' if m == reference else ''}'><td>{label}</td>{cells}</tr>")
    return (f"<table class='metrics summary'><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"
            "<p class='note'>AUC (DeLong 95% CI). &#9733; highest AUC of the split. train_cv: out-of-fold "
            "cross-validated estimates on the training cases; the other columns are held-out splits no model saw in "
            "training." + (f" The {html.escape(reference)} row is the reference every model is tested against."
                           if reference else "") + "</p>")


def split_sentence(split: str, block: dict, alpha: float = ALPHA, event: str = "pCR") -> str:
    """What the CIs allow on one split: the best model, which paired differences are significant (DeLong) and
    which are not, and whether any model beats the baseline. ``event``: what a positive case is called."""
    head = f"{split} ({block.get('n')} cases, {block.get('n_positive')} {event})"
    if block.get("skipped") or not block.get("models"):
        return f"{head}: not evaluated ({block.get('skipped', 'no model scored')})."
    best = _best(block)
    if best is None:
        return f"{head}: no model could be scored."
    b = block["models"][best]
    text = f"{head}: highest AUC {best}, {b['auc']:.2f} (95% CI {b['auc_ci'][0]:.2f}-{b['auc_ci'][1]:.2f})."
    comparisons = block.get("comparisons", [])
    significant = [c for c in comparisons if evaluation.significant(c["p_value"], alpha)]
    if not comparisons:
        text += " No paired comparison could be made."
    elif not significant:
        text += (f" None of the {len(comparisons)} paired differences is significant (paired DeLong p >= {alpha:g}, "
                 "unadjusted): the data do not separate these models.")
    else:
        above: dict[str, list[str]] = {}
        for c in significant:
            hi, lo = (c["model_a"], c["model_b"]) if c["diff"] > 0 else (c["model_b"], c["model_a"])
            above.setdefault(hi, []).append(f"{lo} (p {_fmt_p(c['p_value'])})")
        text += (f" {len(significant)} of {len(comparisons)} paired differences are significant (paired DeLong "
                 f"p < {alpha:g}, unadjusted): " + "; ".join(f"{hi} above {', '.join(lo)}" for hi, lo in above.items())
                 + f"; the other {len(comparisons) - len(significant)} are not.")
    if block.get("reference_verdict"):
        text += " " + block["reference_verdict"]["text"]
    lacking = {m: n for m, n in block.get("missing_modalities", {}).items() if n}
    if lacking:
        text += (" Cases without a modality (its own pathway gives them no probability; the fusions impute it): "
                 + ", ".join(f"{m} {n}" for m, n in lacking.items()) + ".")
    return text


def _summary(out_dir: Path, metrics: dict, split_figures: dict) -> str:
    shown = _held_out(metrics) or [s for s in metrics["splits"] if metrics["splits"][s].get("models")]
    figures = "".join(_img(out_dir, split_figures[s][kind], f"{kind}, {s}") for s in shown
                      for kind in ("ROC curves", "Decision curves") if kind in split_figures.get(s, {}))
    sentences = "".join(f"<li>{html.escape(split_sentence(s, metrics['splits'][s], event=event_name(metrics)))}"
                        "</li>" for s in _splits_in_order(metrics))
    return ("<section id='summary'><h2>Summary</h2>" + _outcome_note(metrics) + _summary_table(metrics)
            + f"<ul class='verdicts'>{sentences}</ul><div>{figures}</div></section>")


def _mean_sd(stats: dict) -> str:
    if stats.get("mean") is None:
        return "-"
    return f"{stats['mean']:.3f}" + (f" &plusmn; {stats['sd']:.3f}" if stats.get("sd") is not None else "")


PARTITION_COLUMNS = (("AUC", "auc"), ("balanced accuracy", "balanced_accuracy"), ("sensitivity", "sensitivity"),
                     ("specificity", "specificity"))


def _partitions_section(metrics: dict) -> str:
    """Repeated stratified partitions (metrics.json ``partitions``): each model's metrics as mean &plusmn; SD."""
    block = metrics.get("partitions")
    if not block:
        return ""
    head = "".join(f"<th>{label}</th>" for label, _ in PARTITION_COLUMNS)
    rows = "".join(f"<tr><td>{html.escape(model)}</td>"
                   + "".join(f"<td>{_mean_sd(stats[key])}</td>" for _, key in PARTITION_COLUMNS) + "</tr>"
                   for model, stats in block["models"].items())
    sizes = block.get("sizes", [])
    habitats = {"refit": "learned on each training part", "bundle": "the bundle's (learned on its training cases)"}
    note = (f"{block['n']} independent stratified partitions (seeds {', '.join(map(str, block['seeds']))}) of the "
            f"{block.get('n_cases')} labelled cases of every split pooled, {block['test_fraction']:.0%} of them in "
            "each test part" + (f" ({min(s['test'] for s in sizes)}-{max(s['test'] for s in sizes)} cases analysed)"
                                if sizes else "")
            + ". Every model is re-fit on each training part with the bundle's settings (population-habitat "
            f"centroids: {habitats.get(block.get('habitats'), block.get('habitats'))}; thresholds by Youden's "
            "index on that part's out-of-fold probabilities) and scored on its test part. This is a different "
            "design from the single split above: it evaluates the protocol (how models built this way perform on "
            "new cases), not this bundle. SD over the partitions (ddof 1); the partitions share cases, so it is "
            "not a confidence interval. Per-case probabilities: partitions.csv.")
    return ("<section id='partitions'><h2>Repeated stratified partitions</h2>"
            f"<table class='metrics'><tr><th>model (mean &plusmn; SD)</th>{head}</tr>{rows}</table>"
            f"<p class='note'>{html.escape(note)}</p></section>")


def _site_auc(stats: dict | None) -> str:
    if not stats or stats.get("auc") is None:
        return "-"
    ci = stats.get("auc_ci")
    return f"{stats['auc']:.2f}<br><small>" + (f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else "no CI") + "</small>"


def _sites_section(metrics: dict) -> str:
    """Per split, its sites' cases, events, event rate and each model's AUC (DeLong 95% CI): metrics.json
    ``splits[split]["sites"]`` (`evaluation.per_site`); absent when no split has that block."""
    splits = [s for s in _splits_in_order(metrics) if metrics["splits"][s].get("sites")]
    if not splits:
        return ""
    event = html.escape(event_name(metrics))
    parts = ["<section id='sites'><h2>Sites</h2>"]
    for split in splits:
        sites = metrics["splits"][split]["sites"]
        models = list(dict.fromkeys(m for block in sites.values() for m in block["models"]))
        head = "".join(f"<th>{html.escape(m).replace('_', '_<wbr>')}</th>" for m in models)  # wrap at _
        rows = "".join(f"<tr><td>{html.escape(str(site))}</td><td>{b['n']}</td><td>{b['n_positive']}</td>"
                       f"<td>{b['event_rate']:.0%}</td>"
                       + "".join(f"<td>{_site_auc(b['models'].get(m))}</td>" for m in models) + "</tr>"
                       for site, b in sites.items())
        parts.append(f"<h3>{html.escape(str(split))}</h3><table class='metrics sites'><tr><th>site</th><th>cases"
                     f"</th><th>{event}</th><th>{event} rate</th>{head}</tr>{rows}</table>")
    note = ("Each model's AUC among the cases of one site, with its DeLong 95% CI below it; - where the site's "
            f"scored cases are all {event_name(metrics)} or all not (no AUC), no CI where a class has a single "
            "case. Few cases make a site's CI wide; the sites also differ in case mix, so their AUCs are not "
            "compared by a test.")
    return "".join(parts) + f"<p class='note'>{html.escape(note)}</p></section>"


def _model_card(name: str, per_split: dict) -> str:
    """One model's statistics on every split (rows: statistics, columns: splits), as a collapsible card."""
    splits = list(per_split)
    rows = []
    for label, key in MODEL_ROWS:
        values = [per_split[s].get(key) for s in splits]
        if all(v is None for v in values):
            continue
        cells = "".join(f"<td>{_fmt_p(v) if key.startswith('p_value') else _fmt(v)}</td>" for v in values)
        rows.append(f"<tr><td>{label}</td>{cells}</tr>")
    notes = [f"{s}: {per_split[s][k]}" for s in splits for k in ("skipped", "constant") if k in per_split[s]]
    head = "".join(f"<th>{html.escape(s)}</th>" for s in splits)
    aucs = ", ".join(f"{s} {_auc_cell(per_split[s])}" for s in splits)
    return (f"<details class='model'><summary><b>{html.escape(name)}</b>: AUC {html.escape(aucs)}</summary>"
            f"<table class='metrics'><tr><th>statistic</th>{head}</tr>{''.join(rows)}</table>"
            + "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes) + "</details>")


def _model_cards(metrics: dict) -> str:
    splits = {s: b["models"] for s, b in metrics["splits"].items() if b.get("models")}
    models = list(dict.fromkeys(m for block in splits.values() for m in block))
    return "".join(_model_card(m, {s: block[m] for s, block in splits.items() if m in block}) for m in models)


def _checklist_section(checklist: dict) -> str:
    parts = ["<section id='checklists'><h2>Reporting checklists</h2><p class='note'>Filled from this run where it "
             f"knows the answer; also written to {CHECKLIST_FILE}. Items marked &ldquo;{TO_COMPLETE}&rdquo; need "
             "what only the authors know.</p>"]
    for name, block in checklist.items():
        filled = sum(i["status"] != TO_COMPLETE for i in block["items"])
        rows = [{"item": i["item"], "topic": i["topic"], "status": i["status"], "value": i.get("value", "")}
                for i in block["items"]]
        parts.append(f"<details><summary><b>{html.escape(name)}</b> ({html.escape(block['reference'])}): {filled} "
                     f"of {len(rows)} items filled or partly filled</summary>"
                     + pd.DataFrame(rows).to_html(index=False, escape=True, border=0, classes="metrics wide")
                     + "</details>")
    return "".join(parts) + "</section>"


def _suv_section(records: dict) -> str:
    """How each evaluated case's PET became SUV (IBSI reporting: the SUV conversion and the tags it used)."""
    rows = [{"case": case, "source": r.get("source"), "SUV type": r.get("dicom_suv_type", r.get("suv_type")),
             "rule": r.get("rule"), "decay reference": r.get("values", {}).get("reference_time_from", "-"),
             "notes": "; ".join(r.get("notes", [])) or "-"} for case, r in records.items()]
    counts = pd.DataFrame(list(rule_counts(records).items()), columns=["rule", "cases"])
    return ("<h3>SUV conversion of the evaluated PET images</h3>" + _table(counts)
            + "<details><summary>Per case (rule, decay reference time, notes)</summary>"
            + _table(pd.DataFrame(rows)) + "</details>")


def _provenance_section(metrics: dict) -> str:
    """IBSI reporting: SUV conversion, radiomics settings, segmentation, habitats, CNN input, software versions."""
    prov, run = metrics.get("provenance") or {}, metrics.get("run") or {}
    parts = ["<section id='provenance'><h2>Provenance (image processing and software)</h2>"]
    if metrics.get("suv_conversion"):
        parts.append(_suv_section(metrics["suv_conversion"]))
    if prov.get("radiomics"):
        r = prov["radiomics"]
        rows = [("parameter file", r.get("parameter_file")), *_flat(r["settings"], "setting"),
                ("image types", ", ".join(f"{k} {v or ''}".strip() for k, v in r["image_types"].items())),
                ("feature classes", ", ".join(r["feature_classes"]))]
        parts.append("<h3>Radiomics (pyradiomics) settings</h3>"
                     + _table(pd.DataFrame(rows, columns=["setting", "value"]).astype(str)))
    for key, heading in (("segmentation", "Segmentation"), ("habitats", "Metabolic subregions (habitats)"),
                         ("ith", "Intratumoural heterogeneity score"), ("deep_input", "CNN input")):
        if prov.get(key):
            rows = pd.DataFrame(_flat(prov[key]), columns=["setting", "value"])
            parts.append(f"<h3>{heading}</h3>" + _table(rows))
    if run.get("bundle"):
        trained, now = run["bundle"].get("versions", {}), run["evaluation"].get("versions", {})
        rows = [{"package": p, "training": trained.get(p, "-"), "this evaluation": now.get(p, "-")}
                for p in dict.fromkeys([*trained, *now])]
        parts.append("<h3>Software versions</h3>" + _table(pd.DataFrame(rows).fillna("-"))
                     + f"<p class='note'>Bundle {html.escape(str(run['bundle'].get('path')))}, content sha256 "
                     f"{html.escape(str(run['bundle'].get('content_sha256')))}; evaluation manifest sha256 "
                     f"{html.escape(str(run['evaluation'].get('manifest_sha256')))}; analysis code "
                     f"{html.escape(str(prov.get('analysis_code')))}.</p>")
    return "".join(parts) + "</section>"


def _html(out_dir: Path, title: str, metrics: dict, split_figures: dict, extra: dict, checklist: dict) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             _summary(out_dir, metrics, split_figures), _partitions_section(metrics), _sites_section(metrics),
             "<section id='models'><h2>Every model, every statistic</h2>"
             f"<p class='note'>{html.escape(NOTES)}</p>{_model_cards(metrics)}</section>",
             "<section id='splits'><h2>Figures per split</h2>"]
    for split in _splits_in_order(metrics):
        block = metrics["splits"][split]
        sentence = split_sentence(split, block, event=event_name(metrics))
        parts.append(f"<h3>{html.escape(str(split))}</h3><p>{html.escape(sentence)}</p>")
        figures = split_figures.get(split, {})
        parts.append("<div>" + "".join(_img(out_dir, p, f"{kind}, {split}") for kind, p in figures.items())
                     + "</div>")
    parts.append("</section>")
    if metrics.get("choices"):
        chosen_keys = ("feature_set", "classifier", "weights")
        rows = [{"model": model, "chosen": ", ".join(f"{k}: {v}" for k, v in c.items() if k in chosen_keys),
                 "inner-CV AUC of each candidate": ", ".join(f"{k} {v:.3f}"
                                                             for k, v in c.get("inner_cv_auc", {}).items()),
                 "pathways screened out": ", ".join(c.get("screened_out", [])) or "-"}
                for model, c in metrics["choices"].items()]
        parts.append("<h2>Configuration chosen inside the training cases (inner cross-validation)</h2>"
                     + _table(pd.DataFrame(rows)))
    if metrics.get("fusion_shares"):
        shares = pd.DataFrame(metrics["fusion_shares"]).T.fillna(0).map(lambda v: f"{v:.0%}")
        parts.append("<h2>What each fusion rests on (share of mean |SHAP|)</h2>"
                     + _table(shares.rename_axis("model").reset_index()))
    if extra:
        parts.append("<h2>Explanations</h2><div>"
                     + "".join(_img(out_dir, p, caption) for caption, p in extra.items()) + "</div>")
    parts.append(_checklist_section(checklist))
    parts.append(_provenance_section(metrics))
    if metrics.get("oracle"):
        oracle = pd.DataFrame(_flat(metrics["oracle"]), columns=["quantity", "value"])
        parts.append("<section id='synthetic'><h2>Synthetic cohort: the generator's ground truth</h2><p class='note'>"
                     "This cohort was made by the project's generator; the oracle is the best AUC any model can "
                     "reach on it.</p><details><summary>Oracle and hidden factors</summary>" + _table(oracle)
                     + "</details></section>")
    if metrics.get("settings"):
        settings = json.dumps(plain(metrics["settings"]), indent=1)
        parts.append(f"<h2>Settings</h2><details><summary>Study configuration (JSON)</summary>"
                     f"<pre>{html.escape(settings)}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _render(out_dir: Path, predictions: pd.DataFrame, metrics: dict, extra: dict, title: str) -> Path:
    models = _model_columns(predictions)
    split_figures = {}
    for split in metrics["splits"]:
        rows = predictions[predictions["split"].astype(str) == str(split)]
        if len(rows):
            split_figures[split] = _split_figures(out_dir, split, rows, models, metrics["splits"][split],
                                                  event_name(metrics))
    checklist = build_checklist(metrics)
    write_text(out_dir / CHECKLIST_FILE, json.dumps(checklist, indent=1, allow_nan=False))
    path = out_dir / "report.html"
    write_text(path, _html(out_dir, title, metrics, split_figures, extra, checklist))
    return path


def write_report(out_dir, predictions: pd.DataFrame, metrics: dict, figures: dict | None = None,
                 title: str = "DPETResponse evaluation") -> Path:
    """Write metrics.json, predictions.csv, the ROC/calibration/decision-curve/comparison PNGs of every split,
    checklist.json (`reporting.checklist`) and report.html to ``out_dir``; returns the report's path.

    ``predictions`` has columns case_id, split, label and one probability column per model; ``metrics`` is
    {"splits": {split: evaluate_split(...)}, "oracle": ..., "settings": ...}. ``figures`` maps a caption to an
    extra PNG (SHAP, Grad-CAM, fusion shares); files outside ``out_dir`` are copied into ``out_dir/figures``
    so that the folder is self-contained.
    """
    out_dir = Path(out_dir)
    _check_inputs(predictions, metrics)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = plain(metrics)
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False))
    with atomic_write(out_dir / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    extra = {}
    for caption, path in (figures or {}).items():
        path = Path(path).resolve()
        if path.is_file() and not path.is_relative_to(out_dir.resolve()):
            target = out_dir / "figures" / path.name
            target.parent.mkdir(exist_ok=True)
            with atomic_write(target) as tmp:
                shutil.copyfile(path, tmp)
            path = target.resolve()
        extra[str(caption)] = path
    listed = {c: p.relative_to(out_dir.resolve()).as_posix() for c, p in extra.items()
              if p.is_relative_to(out_dir.resolve())}
    write_text(out_dir / FIGURES_FILE, json.dumps(listed, indent=1))
    return _render(out_dir, predictions, metrics, extra, title)


def write_report_from_dir(report_dir, title: str = "DPETResponse evaluation") -> Path:
    """Rebuild report.html and the split figures from the metrics.json and predictions.csv in ``report_dir``
    (extra figures listed in figures.json are kept where their files still exist)."""
    report_dir = Path(report_dir)
    for name in ("metrics.json", "predictions.csv"):
        if not (report_dir / name).is_file():
            raise InputError(f"{name} not found: not an evaluation folder", case=str(report_dir))
    try:
        metrics = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"metrics.json is not valid JSON ({err})", case=str(report_dir)) from None
    predictions = pd.read_csv(report_dir / "predictions.csv", dtype={"case_id": str, "split": str})
    _check_inputs(predictions, metrics)
    listed = report_dir / FIGURES_FILE
    extra = {c: (report_dir / rel).resolve() for c, rel in json.loads(listed.read_text()).items()} \
        if listed.is_file() else {}
    return _render(report_dir, predictions, metrics, extra, title)
