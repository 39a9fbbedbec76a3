"""Evaluation statistics against published pROC values, an independent slow DeLong, hand computations and
simulated ground truth."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from DPETResponseLib.core.errors import InputError
from DPETResponseLib.reporting import evaluation as ev

# pROC's aSAH data set (113 aneurysmal subarachnoid haemorrhage patients; Turck et al., Intensive Care Med
# 2010; 36:107, distributed with pROC: Robin et al., BMC Bioinformatics 2011; 12:77), in row order:
# outcome (1 = Poor), WFNS grade (one digit per patient), S100beta and NDKA levels.
ASAH_POOR = ("00001101001011001011101000000000100110110000000001100010001010011101101111000110100000010000000000"
             "001111110001000")
ASAH_WFNS = ("11113254125255125225211112121134214541425511241125521251222151125214524414121421232421451154221113"
             "125225552445111")
ASAH_S100B = """0.13 0.14 0.1 0.04 0.13 0.1 0.47 0.16 0.18 0.1 0.12 0.1 0.44 0.71 0.04 0.08 0.49 0.04 0.07 0.33 0.09
0.09 0.07 0.11 0.07 0.17 0.07 0.11 0.13 0.19 0.05 0.16 0.41 0.14 0.34 0.35 0.48 0.09 0.96 0.25 0.5 0.46 0.16 0.07
0.43 0.45 0.11 0.08 0.09 0.86 0.52 0.08 0.06 0.13 2.07 0.1 0.14 0.15 0.07 0.06 0.77 0.05 0.09 0.3 0.03 0.09 0.04
0.23 0.7 0.09 0.27 0.71 0.08 0.26 0.08 0.16 0.09 0.13 0.1 0.08 0.11 0.33 0.11 0.28 0.07 0.1 0.32 0.22 0.07 0.05
0.24 0.38 0.1 0.15 0.08 0.14 0.1 0.07 0.04 0.19 0.56 0.14 0.58 0.32 0.82 0.74 0.15 0.47 0.17 0.44 0.15 0.5 0.48"""
ASAH_NDKA = """3.01 8.54 8.09 10.42 17.4 12.75 6.0 13.2 15.54 6.01 15.96 17.86 5.18 8.9 13.41 20.75 11.6 16.11 32.37
54.82 32.41 49.94 40.34 9.47 6.29 12.53 6.54 6.3 80.3 12.8 9.8 9.81 9.85 18.21 5.03 14.04 21.93 8.02 7.42 8.38 6.59
9.63 13.12 7.96 14.34 41.43 7.63 7.06 12.59 13.56 3.87 9.44 7.66 12.98 419.19 27.19 22.27 9.95 21.22 11.73 10.4
58.83 6.39 11.09 12.22 13.67 17.21 22.63 12.9 9.7 21.57 8.23 72.57 15.54 10.51 10.6 14.57 5.19 9.63 4.61 21.48
17.3 12.71 9.44 11.07 19.46 10.83 5.37 11.97 7.75 9.83 10.55 28.49 8.53 12.57 12.9 46.83 11.68 12.67 9.01 9.57
34.06 11.72 14.26 47.61 11.67 24.58 10.33 13.87 15.89 22.43 6.79 13.45"""


@pytest.fixture(scope="module")
def asah():
    y = np.array([int(c) for c in ASAH_POOR])
    data = {"wfns": np.array([float(c) for c in ASAH_WFNS]), "s100b": np.array(ASAH_S100B.split(), float),
            "ndka": np.array(ASAH_NDKA.split(), float)}
    assert y.size == 113 and y.sum() == 41 and all(v.size == 113 for v in data.values())
    return y, data


def test_delong_auc_and_ci_match_proc(asah):
    # pROC documentation: roc(aSAH$outcome, aSAH$s100b) -> AUC 0.7314, 95% CI 0.6301-0.8326 (DeLong).
    y, d = asah
    assert ev.auc(y, d["s100b"]) == pytest.approx(0.7314, abs=5e-5)
    lo, hi = ev.auc_ci_delong(y, d["s100b"])
    assert lo == pytest.approx(0.6301, abs=5e-5) and hi == pytest.approx(0.8326, abs=5e-5)
    # pROC's test suite (var(roc) and ci(roc) with method="delong"):
    assert ev.delong_auc_variance(y, d["s100b"]) == pytest.approx(0.00266868245717244, rel=1e-10)
    assert ev.auc(y, d["wfns"]) == pytest.approx(0.823678861788618, rel=1e-12)
    assert ev.delong_auc_variance(y, d["wfns"]) == pytest.approx(0.00146991470882363, rel=1e-10)
    assert ev.auc(y, d["ndka"]) == pytest.approx(0.611957994579946, rel=1e-12)
    assert ev.delong_auc_variance(y, d["ndka"]) == pytest.approx(0.0031908105493913, rel=1e-10)
    assert ev.auc_ci_delong(y, d["ndka"]) == pytest.approx((0.501244999271703, 0.722670989888189), rel=1e-10)


@pytest.mark.parametrize("a,b,z,p,lo,hi", [
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
])
def test_paired_delong_matches_proc(asah, a, b, z, p, lo, hi):
    # pROC roc.test(roc_a, roc_b) (method "delong", paired), values from pROC's test suite.
    y, d = asah
    res = ev.delong_paired_test(y, d[a], d[b])
    assert res["z"] == pytest.approx(z, rel=1e-10)
    assert res["p_value"] == pytest.approx(p, rel=1e-10)
    assert res["diff_ci"] == pytest.approx((lo, hi), rel=1e-10)
    assert res["diff"] == pytest.approx(res["auc1"] - res["auc2"])
    assert ev.delong_paired_test(y, d[b], d[a])["z"] == pytest.approx(-z, rel=1e-10)


def _slow_delong(y, p1, p2):
    """DeLong 1988 from the definitions: placement values by explicit double loops over (positive, negative)."""
    def psi(x, w):
        return 1.0 if x > w else 0.5 if x == w else 0.0
    comps = []
    for p in (p1, p2):
        pos, neg = [v for v, t in zip(p, y) if t == 1], [v for v, t in zip(p, y) if t == 0]
        v10 = [sum(psi(x, w) for w in neg) / len(neg) for x in pos]
        v01 = [sum(psi(x, w) for x in pos) / len(pos) for w in neg]
        comps.append((np.array(v10), np.array(v01)))
    m, n = len(comps[0][0]), len(comps[0][1])
    s10 = np.cov([comps[0][0], comps[1][0]])
    s01 = np.cov([comps[0][1], comps[1][1]])
    s = s10 / m + s01 / n
    aucs = [c[0].mean() for c in comps]
    return aucs, s


def test_fast_delong_equals_slow_double_loop_with_ties():
    rng = np.random.default_rng(7)
    y = (rng.random(60) < 0.4).astype(int)
    p1 = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounded: many ties
    p2 = np.round(0.6 * p1 + rng.normal(y * 0.3, 0.8), 1)
    (a1, a2), s = _slow_delong(y, p1, p2)
    assert ev.auc(y, p1) == pytest.approx(a1, rel=1e-12)
    assert ev.auc(y, p1) == pytest.approx(roc_auc_score(y, p1), rel=1e-12)
    assert ev.delong_auc_variance(y, p1) == pytest.approx(s[0, 0], rel=1e-10)
    assert ev.delong_auc_variance(y, p2) == pytest.approx(s[1, 1], rel=1e-10)
    z = (a1 - a2) / np.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    assert ev.delong_paired_test(y, p1, p2)["z"] == pytest.approx(z, rel=1e-10)


def test_bootstrap_ci_roughly_covers_delong_ci(asah):
    y, d = asah
    lo, hi = ev.auc_ci_delong(y, d["s100b"])
    for stratified in (True, False):
        blo, bhi = ev.bootstrap_auc_ci(y, d["s100b"], n_boot=2000, seed=1, stratified=stratified)
        assert blo < ev.auc(y, d["s100b"]) < bhi
        assert abs(blo - lo) < 0.03 and abs(bhi - hi) < 0.03  # both ~0.10 wide either side
    assert ev.bootstrap_auc_ci(y, d["s100b"], seed=3) == ev.bootstrap_auc_ci(y, d["s100b"], seed=3)
    assert ev.bootstrap_auc_ci(y, d["s100b"], seed=3) != ev.bootstrap_auc_ci(y, d["s100b"], seed=4)


def test_youden_threshold_matches_proc_best_point(asah):
    # pROC coords(roc(aSAH$outcome, aSAH$s100b), "best"): threshold 0.205, specificity 0.8056, sensitivity 0.6341.
    y, d = asah
    t = ev.youden_threshold(y, d["s100b"])
    assert t == pytest.approx(0.205)
    m = ev.threshold_metrics(y, d["s100b"], t)
    assert m["specificity"] == pytest.approx(29 / 36) and m["sensitivity"] == pytest.approx(26 / 41)


def test_threshold_metrics_by_hand():
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    p = [0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.5, 0.5]
    m = ev.threshold_metrics(y, p, 0.5)  # called: 0.9 0.6 | 0.7 0.5 | 0.5 -> TP 3 (0.9, 0.6, 0.5), FP 2, FN 1, TN 2
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 2, 2, 1)
    assert m["sensitivity"] == pytest.approx(3 / 4) and m["specificity"] == pytest.approx(2 / 4)
    assert m["accuracy"] == pytest.approx(5 / 8) and m["balanced_accuracy"] == pytest.approx(5 / 8)
    assert m["ppv"] == pytest.approx(3 / 5) and m["npv"] == pytest.approx(2 / 3)
    none_called = ev.threshold_metrics(y, p, 0.95)
    assert none_called["ppv"] is None and none_called["npv"] == pytest.approx(4 / 8)
    # one threshold per case (nested out-of-fold thresholds): case 3 (0.2) called at 0.1, case 7 (0.5) not at 0.55
    per_case = ev.threshold_metrics(y, p, [0.5, 0.5, 0.1, 0.5, 0.5, 0.5, 0.5, 0.55])
    assert (per_case["tp"], per_case["fp"], per_case["tn"], per_case["fn"]) == (3, 2, 2, 1)
    assert per_case["threshold"] is None and per_case["threshold_range"] == [0.1, 0.55]
    with pytest.raises(InputError, match="3 per-case thresholds for 8"):
        ev.threshold_metrics(y, p, [0.5, 0.5, 0.5])


def test_youden_threshold_by_hand():
    # scores 0.1 0.4 | 0.35 0.8 with labels 0 0 | 1 1: cut 0.375 gives sens 1/2, spec 1/2; cut 0.225 gives
    # sens 1, spec 1/2 (J 0.5); cut 0.6 gives sens 1/2, spec 1 (J 0.5): tie -> lower cut 0.225.
    assert ev.youden_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.225)
    assert ev.youden_threshold([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == 0.3


def test_net_benefit_by_hand():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.8, 0.3, 0.6, 0.2, 0.1])
    dc = ev.decision_curve(y, p, thresholds=[0.25, 0.5])
    # pt 0.25 (odds 1/3): treated 0.8, 0.3, 0.6 -> TP 2, FP 1 -> 2/5 - 1/5 * 1/3; treat all 2/5 - 3/5 * 1/3
    # pt 0.5 (odds 1): treated 0.8, 0.6 -> TP 1, FP 1 -> 0; treat all 2/5 - 3/5 = -1/5
    assert dc["model"].tolist() == pytest.approx([2 / 5 - 1 / 15, 0.0])
    assert dc["treat_all"].tolist() == pytest.approx([2 / 5 - 1 / 5, -1 / 5])
    assert dc["treat_none"].tolist() == [0.0, 0.0]
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        ev.decision_curve(y, p, thresholds=[0.0, 0.5])


def test_brier_and_reliability_bins_by_hand():
    y = [1, 0, 1, 0]
    p = [0.9, 0.2, 0.6, 0.7]
    cal = ev.calibration(y, p, n_bins=5)
    assert cal["brier"] == pytest.approx((0.01 + 0.04 + 0.16 + 0.49) / 4)
    # bins [0.2,0.4): 0.2 (y 0); [0.6,0.8): 0.6, 0.7 (y 1, 0); [0.8,1]: 0.9 (y 1)
    got = [[b["lo"], b["hi"], b["n"], b["mean_predicted"], b["observed"]] for b in cal["bins"]]
    want = [[0.2, 0.4, 1, 0.2, 0.0], [0.6, 0.8, 2, 0.65, 0.5], [0.8, 1.0, 1, 0.9, 1.0]]
    assert np.allclose(got, want, atol=1e-12)


def test_calibration_slope_and_intercept_on_simulated_probabilities():
    # y ~ Bernoulli(p): perfectly calibrated. n = 20000 gives slope SE ~0.02 and intercept SE ~0.02;
    # tolerances are ~4 SE.
    rng = np.random.default_rng(0)
    lp = rng.normal(-0.5, 1.5, 20000)
    p = 1 / (1 + np.exp(-lp))
    y = (rng.random(lp.size) < p).astype(int)
    good = ev.calibration(y, p)
    assert good["calibration_slope"] == pytest.approx(1.0, abs=0.08)
    assert good["calibration_intercept"] == pytest.approx(0.0, abs=0.08)
    over = ev.calibration(y, 1 / (1 + np.exp(-2 * lp)))  # overconfident: true slope 1/2
    assert over["calibration_slope"] == pytest.approx(0.5, abs=0.04)
    high = ev.calibration(y, 1 / (1 + np.exp(-(lp + 1))))  # predictions shifted up by 1 logit: intercept -1
    assert high["calibration_intercept"] == pytest.approx(-1.0, abs=0.08)
    assert high["calibration_slope"] == pytest.approx(1.0, abs=0.08)


def test_calibration_slope_undefined_under_separation():
    cal = ev.calibration([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9])
    assert cal["calibration_slope"] is None
    # calibration-in-the-large still exists: solve sum(y - expit(a + logit p)) = 0 and check the root
    a = cal["calibration_intercept"]
    z = np.log(np.array([0.1, 0.2, 0.7, 0.9]) / (1 - np.array([0.1, 0.2, 0.7, 0.9])))
    assert np.sum(np.array([0, 0, 1, 1]) - 1 / (1 + np.exp(-(a + z)))) == pytest.approx(0, abs=1e-9)


def test_degenerate_inputs():
    with pytest.raises(InputError, match="both classes"):
        ev.auc([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(InputError, match="not finite"):
        ev.auc([0, 1, 1], [0.2, np.nan, 0.9])
    with pytest.raises(InputError, match="0/1"):
        ev.auc([0, 2, 1], [0.2, 0.5, 0.9])
    y, p = [0, 1, 0, 1, 1], [0.4] * 5
    assert ev.auc(y, p) == 0.5
    assert ev.auc_ci_delong(y, p) == (0.5, 0.5)
    assert ev.bootstrap_auc_ci(y, p, n_boot=50) == (0.5, 0.5)
    same = ev.delong_paired_test(y, [0.1, 0.9, 0.2, 0.8, 0.7], [0.1, 0.9, 0.2, 0.8, 0.7])
    assert same["z"] == 0.0 and same["p_value"] == 1.0


def test_evaluate_split(asah):
    y, d = asah
    probs = {"wfns": d["wfns"] / 5, "s100b": d["s100b"], "ndka": d["ndka"].copy()}
    probs["ndka"][:3] = np.nan  # ndka "failed" on three cases (all three were Good outcome)
    thresholds = {"wfns": 0.5, "s100b": 0.205, "ndka": 10.0}
    out = ev.evaluate_split(y, probs, thresholds, reference_model="wfns", n_boot=500, seed=0)
    assert (out["n"], out["n_positive"]) == (113, 41)
    s = out["models"]["s100b"]
    assert s["auc"] == pytest.approx(0.7314, abs=5e-5) and s["auc_ci"] == pytest.approx([0.6301, 0.8326], abs=5e-5)
    assert s["sensitivity"] == pytest.approx(26 / 41) and s["specificity"] == pytest.approx(29 / 36)
    assert s["auc_ci_bootstrap"][0] < s["auc"] < s["auc_ci_bootstrap"][1]
    assert {"brier", "calibration_slope", "calibration_intercept", "balanced_accuracy", "threshold"} <= set(s)
    assert out["models"]["ndka"]["n"] == 110 and out["models"]["ndka"]["n_missing"] == 3
    ndka_ok = ev.auc(y[3:], d["ndka"][3:])
    assert out["models"]["ndka"]["auc"] == pytest.approx(ndka_ok)
    pairs = {(c["model_a"], c["model_b"]): c for c in out["comparisons"]}
    assert set(pairs) == {("wfns", "s100b"), ("wfns", "ndka"), ("s100b", "ndka")}
    assert pairs[("wfns", "s100b")]["p_value"] == pytest.approx(0.0271757822291882, rel=1e-10)
    assert pairs[("wfns", "ndka")]["n"] == 110
    assert s["p_value_vs_reference"] == pytest.approx(0.0271757822291882, rel=1e-10)
    assert "p_value_vs_reference" not in out["models"]["wfns"] and out["reference_model"] == "wfns"


def test_evaluate_split_degenerate_and_bad_input():
    one_class = ev.evaluate_split([1, 1, 1], {"m": [0.2, 0.4, 0.9]}, {"m": 0.5})
    assert one_class["models"] == {} and one_class["comparisons"] == []
    assert "3 of 3 cases are positive" in one_class["skipped"]
    part = ev.evaluate_split([0, 1, 1, 0], {"a": [0.1, 0.9, 0.8, 0.3], "b": [np.nan, 0.4, 0.7, np.nan],
                                            "c": [np.nan] * 4}, {"a": 0.5, "b": 0.5, "c": 0.5})
    assert part["models"]["b"] == {"n": 2, "n_missing": 2,
                                   "skipped": "only one class among the 2 cases this model scored"}
    assert part["models"]["c"]["skipped"] == "the model scored no case"
    assert part["models"]["a"]["auc"] == 1.0 and part["comparisons"] == []
    # a model that gives every case the same probability: AUC 0.5 by ties, CIs [0.5, 0.5]; flagged, not hidden
    flat = ev.evaluate_split([0, 1, 1, 0], {"flat": [0.4] * 4, "a": [0.1, 0.9, 0.8, 0.3]}, {"flat": 0.5, "a": 0.5})
    assert flat["models"]["flat"]["auc"] == 0.5 and flat["models"]["flat"]["auc_ci"] == [0.5, 0.5]
    assert "same probability" in flat["models"]["flat"]["constant"] and "constant" not in flat["models"]["a"]
    from DPETResponseLib.reporting.report import _model_card
    card = _model_card("flat", {"test": flat["models"]["flat"]})
    assert "AUC test 0.50 (0.50-0.50) constant" in card and "test: every case got the same probability" in card
    with pytest.raises(InputError, match=r"no training threshold given for models \['b'\]"):
        ev.evaluate_split([0, 1], {"a": [0.1, 0.9], "b": [0.2, 0.3]}, {"a": 0.5})
    with pytest.raises(InputError, match="2 probabilities for 3 labels"):
        ev.evaluate_split([0, 1, 1], {"a": [0.1, 0.9]}, {"a": 0.5})
    with pytest.raises(InputError, match="reference model 'x'"):
        ev.evaluate_split([0, 1], {"a": [0.1, 0.9]}, {"a": 0.5}, reference_model="x")


def test_reference_verdict_names_the_models_that_beat_the_baseline():
    """A model beats the baseline only with a higher AUC and a paired DeLong p < 0.05: a strong model does, a
    model equal to the baseline plus noise does not; the sentence says which, or that none does."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 150)
    weak = y * 0.4 + rng.normal(size=y.size)
    strong = y * 2.0 + rng.normal(size=y.size)
    probs = {"baseline": weak, "near": weak + rng.normal(0, 0.1, y.size), "strong": strong}
    block = ev.evaluate_split(y, probs, {m: 0.5 for m in probs}, reference_model="baseline", n_boot=50)
    verdict = block["reference_verdict"]
    assert verdict["beaten_by"] == ["strong"]
    assert block["models"]["strong"]["p_value_vs_reference"] < 0.05
    assert verdict["text"].startswith(f"Beat the baseline (AUC {roc_auc_score(y, weak):.3f}, paired DeLong p < 0.05): "
                                      f"strong (AUC {roc_auc_score(y, strong):.3f}")
    none = ev.evaluate_split(y, {k: probs[k] for k in ("baseline", "near")}, {"baseline": 0.5, "near": 0.5},
                             reference_model="baseline", n_boot=50)["reference_verdict"]
    assert none["beaten_by"] == [] and none["text"].startswith("No model beats the baseline")


def test_per_site_counts_and_auc_by_hand():
    # Site A: positives 0.4, 0.7, 0.9 against negatives 0.1, 0.6 -> 5 of 6 pairs ranked right.
    # Site B: positives 0.3, 0.5 against negatives 0.3, 0.8 -> 0.5 (tie) + 0 + 1 + 0 of 4 pairs = 0.375.
    # Site 3 (the integer code 3.0): one positive -> AUC 0.5 (0.4 above 0.2, below 0.5), no DeLong variance.
    # Site C and the case without a site: one class only.
    sites = ["A"] * 5 + ["B"] * 4 + ["C"] * 2 + [3.0] * 3 + [None]
    y = [0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0]
    p = [0.1, 0.6, 0.4, 0.7, 0.9, 0.3, 0.3, 0.8, 0.5, 0.2, 0.9, 0.2, 0.5, 0.4, 0.5]
    q = np.array(p)
    q[4] = np.nan  # model q did not score the A case at 0.9: 3 of the 4 pairs left ranked right (0.4 < 0.6)
    out = ev.per_site(y, sites, {"p": p, "q": q})
    assert list(out) == ["3", "A", "B", "C", ev.NO_SITE]
    a, b, three = out["A"], out["B"], out["3"]
    assert (a["n"], a["n_positive"], a["event_rate"]) == (5, 3, 0.6)
    assert (b["n"], b["n_positive"], b["event_rate"]) == (4, 2, 0.5)
    assert a["models"]["p"]["auc"] == pytest.approx(5 / 6) and a["models"]["p"]["n"] == 5
    assert a["models"]["q"]["auc"] == pytest.approx(3 / 4) and a["models"]["q"]["n"] == 4
    assert b["models"]["p"]["auc"] == pytest.approx(0.375)
    assert a["models"]["p"]["auc_ci"] == pytest.approx(list(ev.auc_ci_delong([0, 0, 1, 1, 1], p[:5])))
    assert three["models"]["p"]["auc"] == pytest.approx(0.5) and three["models"]["p"]["auc_ci"] is None
    assert "single case" in three["models"]["p"]["ci_skipped"]
    for site in ("C", ev.NO_SITE):
        entry = out[site]["models"]["p"]
        assert entry["auc"] is None and entry["auc_ci"] is None and "AUC needs both classes" in entry["skipped"]
    assert out["C"]["event_rate"] == 1.0 and out[ev.NO_SITE]["n"] == 1
    with pytest.raises(InputError, match="3 site values for 2 labels"):
        ev.per_site([0, 1], ["A", "A", "B"], {"p": [0.1, 0.2]})
    with pytest.raises(InputError, match="1 probabilities for 2 labels"):
        ev.per_site([0, 1], ["A", "B"], {"p": [0.1]})
