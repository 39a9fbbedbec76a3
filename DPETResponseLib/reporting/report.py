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
from .figures import save_figure

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


def _split_figures(out_dir: Path, split: str, rows: pd.DataFrame, models: list[str], split_metrics: dict) -> dict:
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
    ax.set(xlabel="mean predicted probability (5 equal-width bins)", ylabel="observed pCR fraction",
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


MODEL_COLUMNS = [("AUC", "auc"), ("DeLong 95% CI", "auc_ci"), ("bootstrap 95% CI", "auc_ci_bootstrap"),
                 ("threshold", "threshold"), ("sensitivity", "sensitivity"), ("specificity", "specificity"),
                 ("accuracy", "accuracy"), ("balanced acc.", "balanced_accuracy"), ("PPV", "ppv"), ("NPV", "npv"),
                 ("Brier", "brier"), ("cal. slope", "calibration_slope"),
                 ("cal. intercept", "calibration_intercept")]


def _models_table(models: dict) -> str:
    rows = []
    for name, m in models.items():
        row = {"model": name, "n": _fmt(m.get("n")), "missing": _fmt(m.get("n_missing")),
               "imputed inputs": _fmt(m.get("n_imputed"))}
        if "skipped" in m:
            row["AUC"] = f"not computed: {m['skipped']}"
        else:
            row.update({label: _fmt(m.get(key)) for label, key in MODEL_COLUMNS})
            if "constant" in m:
                row["AUC"] += f" ({m['constant']})"
            if "p_value_vs_reference" in m:
                row["p vs reference"] = _fmt_p(m["p_value_vs_reference"])
        rows.append(row)
    return _table(pd.DataFrame(rows).fillna("-"))


def _comparisons_table(comparisons: list) -> str:
    rows = [{"model A": c["model_a"], "model B": c["model_b"], "n": _fmt(c.get("n")), "AUC A": _fmt(c.get("auc_a")),
             "AUC B": _fmt(c.get("auc_b")), "difference": _fmt(c.get("diff")), "95% CI": _fmt(c.get("diff_ci")),
             "z": _fmt(c.get("z"), 2), "p (DeLong)": _fmt_p(c.get("p_value"))} for c in comparisons]
    return _table(pd.DataFrame(rows))


def _flat(value, prefix: str = "") -> list[tuple[str, str]]:
    """A nested dict as (dotted key, formatted value) rows."""
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flat(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list):
        return [(prefix, ", ".join(_fmt(v) for v in value))]
    return [(prefix, _fmt(value))]


def _img(out_dir: Path, path: Path, caption: str) -> str:
    if not path.is_file():
        return f"<p class='missing'>{html.escape(caption)}: figure file {html.escape(path.name)} not found.</p>"
    rel = path.resolve().relative_to(out_dir.resolve()).as_posix()
    return (f"<figure><img src='{html.escape(rel)}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1300px;color:#222}
table.metrics{border-collapse:collapse;font-size:13px;margin:0.5em 0 1em}
table.metrics th,table.metrics td{border:1px solid #ccc;padding:3px 7px;text-align:right}
table.metrics td:first-child,table.metrics th:first-child{text-align:left}
figure{display:inline-block;margin:0.5em;vertical-align:top}figure img{max-width:560px}
figcaption{font-size:12px;color:#555;max-width:560px}.note{font-size:12px;color:#555}.missing{color:#a00}
pre{background:#f6f6f6;padding:0.7em;font-size:12px;overflow:auto}"""

NOTES = ("AUC CIs: DeLong (plain Wald interval on the AUC scale, clipped to [0, 1], as pROC) and stratified "
         "percentile bootstrap. Threshold metrics use the threshold fixed on the training data (Youden); "
         "on train_cv, each case's threshold is chosen on the other folds' out-of-fold probabilities (nested). "
         "Calibration slope: b of logit P = a + b logit(p); calibration intercept: calibration-in-the-large (slope "
         "fixed at 1; 0 is ideal). Comparisons: paired two-sided DeLong tests, not adjusted for multiplicity.")


def _suv_section(records: dict) -> str:
    """How each evaluated case's PET became SUV (IBSI reporting: the SUV conversion and the tags it used)."""
    rows = [{"case": case, "source": r.get("source"), "SUV type": r.get("dicom_suv_type", r.get("suv_type")),
             "rule": r.get("rule"), "decay reference": r.get("values", {}).get("reference_time_from", "-"),
             "notes": "; ".join(r.get("notes", [])) or "-"} for case, r in records.items()]
    counts = pd.DataFrame(list(rule_counts(records).items()), columns=["rule", "cases"])
    return ("<h2>SUV conversion of the evaluated PET images</h2>" + _table(counts)
            + "<details><summary>Per case (rule, decay reference time, notes)</summary>"
            + _table(pd.DataFrame(rows)) + "</details>")


def _html(out_dir: Path, title: str, metrics: dict, split_figures: dict, extra: dict) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class='note'>{html.escape(NOTES)}</p>"]
    summary = [{"split": s, "cases": b.get("n"), "pCR": b.get("n_positive"), "models": len(b.get("models", {}))}
               for s, b in metrics["splits"].items()]
    parts.append("<h2>Splits</h2>" + _table(pd.DataFrame(summary, columns=["split", "cases", "pCR", "models"])))
    if metrics.get("oracle"):
        oracle = pd.DataFrame(_flat(metrics["oracle"]), columns=["quantity", "value"])
        parts.append("<h2>Oracle (ground truth of the synthetic cohort)</h2>" + _table(oracle))
    for split, block in metrics["splits"].items():
        parts.append(f"<h2>Split: {html.escape(str(split))}</h2><p>{_fmt(block.get('n'))} cases, "
                     f"{_fmt(block.get('n_positive'))} pCR.</p>")
        if block.get("skipped"):
            parts.append(f"<p class='missing'>Not evaluated: {html.escape(block['skipped'])}</p>")
        if block.get("models"):
            parts.append("<h3>Models</h3>" + _models_table(block["models"]))
        if block.get("reference_verdict"):
            parts.append(f"<p class='verdict'><b>{html.escape(block['reference_verdict']['text'])}</b></p>")
        if block.get("comparisons"):
            parts.append("<h3>Paired DeLong comparisons</h3>" + _comparisons_table(block["comparisons"]))
        figures = split_figures.get(split, {})
        if figures:
            parts.append("<div>" + "".join(_img(out_dir, p, f"{kind}, {split}") for kind, p in figures.items())
                         + "</div>")
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
        parts.append("<h2>Explanations and other figures</h2><div>"
                     + "".join(_img(out_dir, p, caption) for caption, p in extra.items()) + "</div>")
    if metrics.get("suv_conversion"):
        parts.append(_suv_section(metrics["suv_conversion"]))
    if metrics.get("settings"):
        settings = json.dumps(plain(metrics["settings"]), indent=1)
        parts.append(f"<h2>Settings</h2><pre>{html.escape(settings)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _render(out_dir: Path, predictions: pd.DataFrame, metrics: dict, extra: dict, title: str) -> Path:
    models = _model_columns(predictions)
    split_figures = {}
    for split in metrics["splits"]:
        rows = predictions[predictions["split"].astype(str) == str(split)]
        if len(rows):
            split_figures[split] = _split_figures(out_dir, split, rows, models, metrics["splits"][split])
    path = out_dir / "report.html"
    write_text(path, _html(out_dir, title, metrics, split_figures, extra))
    return path


def write_report(out_dir, predictions: pd.DataFrame, metrics: dict, figures: dict | None = None,
                 title: str = "DPETResponse evaluation") -> Path:
    """Write metrics.json, predictions.csv, the ROC/calibration/decision-curve PNGs of every split and
    report.html to ``out_dir``; returns the report's path.

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
