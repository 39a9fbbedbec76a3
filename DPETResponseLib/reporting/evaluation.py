"""Evaluation statistics: AUC with DeLong and bootstrap CIs, paired DeLong test, thresholds, calibration,
decision curves, `evaluate_split`, which gathers them for every model of one data split, and `per_site`, the AUC of
each model at each site of a split.

Conventions: ``y`` is 0/1 (1 = pCR), ``p`` the predicted probability of class 1; a case is called positive when
``p >= threshold``. Undefined values (a sensitivity without positives, a slope under perfect separation) are
``None``, never NaN, so that metrics stay valid JSON.

scikit-learn has no DeLong variance or paired test, so they are written here with the fast midrank algorithm of
Sun & Xu (IEEE Signal Process Lett 2014; 21:1389), which gives DeLong, DeLong & Clarke-Pearson (Biometrics
1988; 44:837) exactly in O(n log n).
"""

from itertools import combinations

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from ..core.errors import InputError

#: Significance level of every paired comparison the reports state as significant or not (unadjusted).
ALPHA = 0.05


def significant(p_value, alpha: float = ALPHA) -> bool:
    """Whether a p-value is below ``alpha``; an undefined one (None, NaN: a comparison without variance, written
    as null in metrics.json) is not."""
    return p_value is not None and bool(np.isfinite(p_value)) and p_value < alpha


def _check(y, p, name: str = "predictions") -> tuple[np.ndarray, np.ndarray]:
    """``y`` as a 0/1 int array and ``p`` as floats, same length, finite; else InputError naming ``name``."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=float)
    if y.ndim != 1 or p.shape != y.shape:
        raise InputError(f"labels ({y.shape}) and probabilities ({p.shape}) must be 1-D of the same length",
                         case=name)
    if y.size and not np.isin(y, (0, 1)).all():
        raise InputError(f"labels must be 0/1, got values {sorted(set(y.tolist()))[:5]}", case=name)
    if not np.isfinite(p).all():
        raise InputError(f"{int((~np.isfinite(p)).sum())} probabilities are not finite", case=name)
    return y.astype(int), p


def _two_classes(y, name: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise InputError(f"AUC needs both classes; got {n_pos} positive of {y.size} cases", case=name)


def _placements(y, p) -> tuple[np.ndarray, np.ndarray]:
    """DeLong structural components (placement values) by midranks (Sun & Xu 2014).

    V10[i] = fraction of negatives scored below positive i (ties count 1/2); V01[j] = fraction of positives
    scored above negative j. Both average to the AUC.
    """
    pos, neg = p[y == 1], p[y == 0]
    m, n = pos.size, neg.size
    ranks_all = stats.rankdata(np.concatenate([pos, neg]))
    v10 = (ranks_all[:m] - stats.rankdata(pos)) / n
    v01 = 1.0 - (ranks_all[m:] - stats.rankdata(neg)) / m
    return v10, v01


def auc(y, p) -> float:
    """Area under the ROC curve (Mann-Whitney; ties count 1/2). InputError unless both classes are present."""
    y, p = _check(y, p)
    _two_classes(y, "auc")
    return float(_placements(y, p)[0].mean())


def delong_auc_variance(y, p) -> float:
    """DeLong variance of the AUC: var(V10)/m + var(V01)/n (sample variances, ddof=1, as pROC)."""
    y, p = _check(y, p)
    _two_classes(y, "delong_auc_variance")
    v10, v01 = _placements(y, p)
    return float(np.var(v10, ddof=1) / v10.size + np.var(v01, ddof=1) / v01.size)


def auc_ci_delong(y, p, level: float = 0.95) -> tuple[float, float]:
    """DeLong CI of the AUC on the plain AUC scale, AUC -/+ z * SE, clipped to [0, 1].

    The plain (untransformed) Wald interval is what pROC's ``ci.auc(method="delong")`` reports, so results
    compare directly with published pROC figures. Constant predictions give AUC 0.5 with variance 0, i.e.
    the CI (0.5, 0.5): DeLong has no sampling variability to report there.
    """
    a = auc(y, p)
    half = stats.norm.ppf(0.5 + level / 2) * np.sqrt(delong_auc_variance(y, p))
    return float(max(0.0, a - half)), float(min(1.0, a + half))


def delong_paired_test(y, p1, p2, level: float = 0.95) -> dict:
    """Two-sided DeLong test of AUC(p1) = AUC(p2) on the same cases.

    Returns auc1, auc2, diff (auc1 - auc2), its DeLong CI ``diff_ci``, z and p_value. Identical
    predictions (variance of the difference 0) give z 0, p 1.
    """
    y, p1 = _check(y, p1, "delong_paired_test p1")
    _, p2 = _check(y, p2, "delong_paired_test p2")
    _two_classes(y, "delong_paired_test")
    (a10, a01), (b10, b01) = _placements(y, p1), _placements(y, p2)
    s10 = np.cov(np.vstack([a10, b10]))
    s01 = np.cov(np.vstack([a01, b01]))
    cov = s10 / a10.size + s01 / a01.size
    var_diff = max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0)
    auc1, auc2 = float(a10.mean()), float(b10.mean())
    diff = auc1 - auc2
    se = np.sqrt(var_diff)
    if se <= 1e-15 * max(1.0, abs(diff)):
        z, p_value = 0.0, 1.0
    else:
        z = diff / se
        p_value = float(2 * stats.norm.sf(abs(z)))
    half = stats.norm.ppf(0.5 + level / 2) * se
    return {"auc1": auc1, "auc2": auc2, "diff": diff, "diff_ci": (float(diff - half), float(diff + half)),
            "z": float(z), "p_value": p_value}


def bootstrap_auc_ci(y, p, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                     stratified: bool = True) -> tuple[float, float]:
    """Percentile bootstrap CI of the AUC.

    ``stratified`` resamples positives and negatives separately (keeps the class counts, as pROC's default);
    otherwise cases are resampled together and the replicates that miss a class are dropped.
    """
    y, p = _check(y, p)
    _two_classes(y, "bootstrap_auc_ci")
    rng = np.random.default_rng(seed)
    pos, neg = p[y == 1], p[y == 0]
    m, n = pos.size, neg.size
    if stratified:
        samples = np.hstack([rng.choice(pos, (n_boot, m)), rng.choice(neg, (n_boot, n))])
        labels = np.broadcast_to(np.r_[np.ones(m, int), np.zeros(n, int)], samples.shape)
    else:
        idx = rng.integers(0, y.size, (n_boot, y.size))
        samples, labels = p[idx], y[idx]
        n_pos = labels.sum(axis=1)
        keep = (n_pos > 0) & (n_pos < y.size)
        samples, labels = samples[keep], labels[keep]
    ranks = stats.rankdata(samples, axis=1)
    n_pos = labels.sum(axis=1)
    n_neg = labels.shape[1] - n_pos
    aucs = ((ranks * labels).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    lo, hi = np.quantile(aucs, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def youden_threshold(y, p) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (call it on TRAINING predictions).

    Candidates are midpoints between consecutive distinct scores (as pROC), so the threshold does not sit on
    a training case; ties in J go to the lowest threshold (the more sensitive rule). Constant predictions
    return that constant (every case called positive).
    """
    y, p = _check(y, p)
    _two_classes(y, "youden_threshold")
    values = np.unique(p)
    if values.size == 1:
        return float(values[0])
    cuts = (values[:-1] + values[1:]) / 2
    called = p[None, :] >= cuts[:, None]
    sens = (called & (y == 1)).sum(axis=1) / y.sum()
    spec = (~called & (y == 0)).sum(axis=1) / (y.size - y.sum())
    return float(cuts[np.argmax(sens + spec - 1)])


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def threshold_metrics(y, p, threshold) -> dict:
    """Sensitivity, specificity, accuracy, balanced accuracy, PPV, NPV and the counts at ``p >= threshold``.

    ``threshold``: one number, or one per case (out-of-fold estimates whose thresholds were chosen without each
    case's fold); then ``threshold`` is reported as None and ``threshold_range`` gives their range."""
    y, p = _check(y, p)
    per_case = np.ndim(threshold) > 0
    if per_case:
        threshold = np.asarray(threshold, dtype=float)
        if threshold.shape != p.shape or not np.isfinite(threshold).all():
            raise InputError(f"{threshold.size} per-case thresholds for {p.size} predictions (all finite needed)",
                             case="threshold_metrics")
    called = p >= threshold
    tp = int((called & (y == 1)).sum())
    fp = int((called & (y == 0)).sum())
    tn = int((~called & (y == 0)).sum())
    fn = int((~called & (y == 1)).sum())
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    rule = {"threshold": None, "threshold_range": [float(threshold.min()), float(threshold.max())]} if per_case \
        else {"threshold": float(threshold)}
    return {**rule, "sensitivity": sens, "specificity": spec,
            "accuracy": _ratio(tp + tn, y.size),
            "balanced_accuracy": None if sens is None or spec is None else (sens + spec) / 2,
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def calibration(y, p, n_bins: int = 5, eps: float = 1e-6) -> dict:
    """Brier score, calibration slope and calibration-in-the-large, and reliability bins.

    - ``calibration_slope``: b of the logistic recalibration logit P(y=1) = a + b * logit(p) (unpenalised fit);
      ``None`` when logit(p) separates the classes perfectly (the maximum-likelihood slope is infinite).
    - ``calibration_intercept``: calibration-in-the-large, the intercept a with the slope fixed at 1
      (logit(p) as an offset); 0 when the mean prediction matches the event rate in the logistic sense.
    - ``bins``: ``n_bins`` equal-width bins on [0, 1] (empty ones left out) with their count, mean predicted
      probability and observed event fraction. Written here because sklearn's ``calibration_curve`` returns
      no bin counts.
    p is clipped to [eps, 1 - eps] before the logit.
    """
    from sklearn.linear_model import LogisticRegression

    y, p = _check(y, p)
    out = {"brier": float(np.mean((p - y) ** 2)), "calibration_slope": None, "calibration_intercept": None}
    n_pos = int(y.sum())
    z = special.logit(np.clip(p, eps, 1 - eps))
    if 0 < n_pos < y.size:
        separated = z[y == 0].max() < z[y == 1].min() or z[y == 1].max() < z[y == 0].min()
        if not separated and np.ptp(z) > 0:
            fit = LogisticRegression(C=np.inf, max_iter=1000).fit(z[:, None], y)
            out["calibration_slope"] = float(fit.coef_[0, 0])

        def score(a):  # derivative of the log-likelihood in a, monotone decreasing
            return float(np.sum(y - special.expit(a + z)))

        out["calibration_intercept"] = float(optimize.brentq(score, -50.0, 50.0, xtol=1e-12))
    which = np.clip(np.floor(p * n_bins + 1e-9).astype(int), 0, n_bins - 1)  # 1e-9: 0.6 lands in [0.6, 0.8)
    out["bins"] = [{"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": int((which == b).sum()),
                    "mean_predicted": float(p[which == b].mean()), "observed": float(y[which == b].mean())}
                   for b in range(n_bins) if (which == b).any()]
    return out


def decision_curve(y, p, thresholds=None) -> pd.DataFrame:
    """Net benefit (Vickers & Elkin 2006) of the model, treat-all and treat-none at each threshold probability.

    NB = TP/n - FP/n * pt / (1 - pt), a case treated when ``p >= pt``; treat-all uses every case, treat-none is 0.
    ``thresholds``: the threshold probabilities (default 0.05, 0.10, ..., 0.95).
    """
    y, p = _check(y, p)
    pt = np.linspace(0.05, 0.95, 19) if thresholds is None else np.asarray(thresholds, dtype=float)
    if ((pt <= 0) | (pt >= 1)).any():
        raise InputError("decision-curve thresholds must lie strictly between 0 and 1", case="decision_curve")
    n, prevalence = y.size, y.mean()
    odds = pt / (1 - pt)
    called = p[None, :] >= pt[:, None]
    tp = (called & (y == 1)).sum(axis=1) / n
    fp = (called & (y == 0)).sum(axis=1) / n
    return pd.DataFrame({"threshold": pt, "model": tp - fp * odds,
                         "treat_all": prevalence - (1 - prevalence) * odds, "treat_none": np.zeros_like(pt)})


def evaluate_model(y, p, threshold, n_boot: int = 2000, seed: int = 0, n_bins: int = 5) -> dict:
    """Every statistic of one model on one split (both classes required)."""
    lo, hi = auc_ci_delong(y, p)
    out = {"auc": auc(y, p), "auc_ci": [lo, hi], "auc_se": float(np.sqrt(delong_auc_variance(y, p))),
           "auc_ci_bootstrap": list(bootstrap_auc_ci(y, p, n_boot=n_boot, seed=seed))}
    out.update(threshold_metrics(y, p, threshold))
    cal = calibration(y, p, n_bins=n_bins)
    out.update({"brier": cal["brier"], "calibration_slope": cal["calibration_slope"],
                "calibration_intercept": cal["calibration_intercept"], "calibration_bins": cal["bins"]})
    return out


def _labels_and_probabilities(y, probs: dict, who: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """0/1 labels as int and each model's probabilities as float, one per label (InputError otherwise)."""
    y = np.asarray(y)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise InputError("labels must be a 1-D array of 0/1", case=who)
    arrays = {}
    for name, p in probs.items():
        p = np.asarray(p, dtype=float)
        if p.shape != y.shape:
            raise InputError(f"{p.shape[0] if p.ndim else 0} probabilities for {y.size} labels", case=name)
        arrays[name] = p
    return y.astype(int), arrays


def evaluate_split(y, probs: dict, thresholds: dict, reference_model: str | None = None,
                   n_boot: int = 2000, seed: int = 0) -> dict:
    """Evaluate every model of ``probs`` on one split.

    ``thresholds[name]`` is the operating point fixed on the training data (or one per case, see
    `threshold_metrics`). Cases with a missing (NaN)
    probability are left out for that model (``n_missing``); paired DeLong comparisons use the cases both models
    scored. A split without both classes returns ``models``/``comparisons`` empty and a ``skipped`` reason
    instead of failing. With ``reference_model``, each model also gets ``p_value_vs_reference``.
    """
    y, arrays = _labels_and_probabilities(y, probs, "evaluate_split")
    out = {"n": int(y.size), "n_positive": int(y.sum()), "models": {}, "comparisons": []}
    missing = sorted(set(probs) - set(thresholds))
    if missing:
        raise InputError(f"no training threshold given for models {missing}", case="evaluate_split")
    if reference_model is not None and reference_model not in probs:
        raise InputError(f"reference model {reference_model!r} is not among {sorted(probs)}", case="evaluate_split")
    if out["n_positive"] in (0, out["n"]):
        out["skipped"] = (f"{out['n_positive']} of {out['n']} cases are positive: AUC, CIs and comparisons need "
                          "both pCR and non-pCR cases")
        return out
    for name, p in arrays.items():
        ok = np.isfinite(p)
        n_pos = int(y[ok].sum())
        if n_pos in (0, int(ok.sum())):
            reason = (f"only one class among the {int(ok.sum())} cases this model scored" if ok.any()
                      else "the model scored no case")
            out["models"][name] = {"n": int(ok.sum()), "n_missing": int((~ok).sum()), "skipped": reason}
            continue
        threshold = thresholds[name] if np.ndim(thresholds[name]) == 0 else np.asarray(thresholds[name])[ok]
        stats_ = evaluate_model(y[ok], p[ok], threshold, n_boot=n_boot, seed=seed)
        out["models"][name] = {"n": int(ok.sum()), "n_missing": int((~ok).sum()), **stats_}
        if np.ptp(p[ok]) == 0:  # AUC 0.5 by ties, and both CIs collapse to [0.5, 0.5]: not a precise estimate
            out["models"][name]["constant"] = ("every case got the same probability: the AUC is 0.5 by ties and "
                                               "its CIs [0.5, 0.5] measure no uncertainty")
    scored = [name for name in arrays if "skipped" not in out["models"][name]]
    for a, b in combinations(scored, 2):
        ok = np.isfinite(arrays[a]) & np.isfinite(arrays[b])
        if len(set(y[ok].tolist())) < 2:
            continue
        test = delong_paired_test(y[ok], arrays[a][ok], arrays[b][ok])
        comparison = {"model_a": a, "model_b": b, "n": int(ok.sum()), "auc_a": test["auc1"], "auc_b": test["auc2"],
                      "diff": test["diff"], "diff_ci": list(test["diff_ci"]), "z": test["z"],
                      "p_value": test["p_value"]}
        out["comparisons"].append(comparison)
        if reference_model in (a, b):
            other = b if a == reference_model else a
            out["models"][other]["p_value_vs_reference"] = test["p_value"]
    if reference_model is not None:
        out["reference_model"] = reference_model
        out["reference_verdict"] = reference_verdict(out, reference_model)
    return out


def reference_verdict(block: dict, reference: str, alpha: float = ALPHA) -> dict:
    """Which models beat ``reference`` on a split evaluated by `evaluate_split`: a higher AUC and a paired
    DeLong p below ``alpha``. Returns ``{"beaten_by": [model, ...], "text": one sentence for the report}``."""
    models = block.get("models", {})
    ref = models.get(reference, {})
    if "auc" not in ref:
        return {"beaten_by": [], "text": f"The {reference} could not be scored on this split."}
    beaten_by = [name for name, m in models.items() if name != reference and "auc" in m
                 and m["auc"] > ref["auc"] and significant(m.get("p_value_vs_reference"), alpha)]
    if not beaten_by:
        text = (f"No model beats the {reference} (AUC {ref['auc']:.3f}) on this split: none has a higher AUC "
                f"with a paired DeLong p < {alpha:g}.")
    else:
        text = (f"Beat the {reference} (AUC {ref['auc']:.3f}, paired DeLong p < {alpha:g}): "
                + ", ".join(f"{m} (AUC {models[m]['auc']:.3f}, p {models[m]['p_value_vs_reference']:.3g})"
                            for m in beaten_by) + ".")
    return {"beaten_by": beaten_by, "text": text}


#: The site of a case whose site value is missing, in `per_site`.
NO_SITE = "(no site)"


def per_site(y, sites, probs: dict, level: float = 0.95) -> dict:
    """Per site (centre, scanner) of one split: cases ``n``, events ``n_positive``, ``event_rate`` and each model's
    AUC with its DeLong CI, as ``{site: {"n", "n_positive", "event_rate", "models": {model: {...}}}}`` in site
    order (`NO_SITE` last).

    ``sites``: one value per case (missing ones are grouped as `NO_SITE`). A model's entry has ``n`` (cases it
    scored; NaN probabilities left out), ``auc`` and ``auc_ci``; the AUC is None with a ``skipped`` reason where its
    cases hold one class only, the CI None with ``ci_skipped`` where a class has a single case (no DeLong variance).
    """
    from ..core.names import site_label

    y, arrays = _labels_and_probabilities(y, probs, "per_site")
    sites = pd.Series(np.asarray(sites, dtype=object))
    if sites.size != y.size:
        raise InputError(f"{sites.size} site values for {y.size} labels", case="per_site")
    labels = np.array([NO_SITE if pd.isna(s) else site_label(s) for s in sites], dtype=object)
    out = {}
    for site in sorted(set(labels), key=lambda s: (s == NO_SITE, s)):
        here = labels == site
        n, n_pos = int(here.sum()), int(y[here].sum())
        models = {}
        for name, p in arrays.items():
            ok = here & np.isfinite(p)
            m_pos, m_n = int(y[ok].sum()), int(ok.sum())
            entry = {"n": m_n, "auc": None, "auc_ci": None}
            if m_pos in (0, m_n):
                entry["skipped"] = f"{m_pos} of the {m_n} cases scored are positive: AUC needs both classes"
            else:
                entry["auc"] = auc(y[ok], p[ok])
                if min(m_pos, m_n - m_pos) < 2:
                    entry["ci_skipped"] = "a class has a single case: no DeLong variance"
                else:
                    entry["auc_ci"] = list(auc_ci_delong(y[ok], p[ok], level))
            models[name] = entry
        out[site] = {"n": n, "n_positive": n_pos, "event_rate": n_pos / n, "models": models}
    return out
