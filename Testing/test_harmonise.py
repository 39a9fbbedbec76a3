"""ComBat (learn.harmonise): site shifts removed on held-out cases with training estimates only, nothing fitted at
transform time, the guards, a Pipeline in cross-validation, and the numbers of a hand computation and of
neuroCombat (Fortin et al. 2018)."""

import copy
import functools
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_validate
from sklearn.pipeline import Pipeline

from DPETResponseLib.core.errors import ConfigError, InputError
from DPETResponseLib.learn import ComBat

P = 20
COLUMNS = [f"f{i:02d}" for i in range(P)]


class Cohort:
    """Features N(mu_f, sd_f) at site A; at site B shifted by a_f SDs and scaled by b_f about mu_f (the truth)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.a = self.rng.uniform(0.8, 1.2, P)
        self.b = self.rng.uniform(1.4, 1.8, P)
        self.mu = self.rng.uniform(1, 10, P)
        self.sd = self.rng.uniform(0.5, 3, P)
        self.drawn = 0

    def table(self, **sites) -> pd.DataFrame:
        """``table(A=30, B=30)``: that many cases of each site (C is shifted like B, twice as far)."""
        parts = []
        for site, n in sites.items():
            x = self.mu + self.sd * self.rng.standard_normal((n, P))
            if site != "A":
                k = 1 if site == "B" else 2
                x = self.mu + self.b ** k * (x - self.mu) + k * self.a * self.sd
            ids = [f"{site}{self.drawn + i:04d}" for i in range(n)]
            self.drawn += n
            parts.append(pd.DataFrame(x, columns=COLUMNS, index=ids).assign(site=site))
        return pd.concat(parts)


def site_gap(table: pd.DataFrame, values: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per feature: |mean B - mean A| in pooled-SD units, and SD B / SD A."""
    a, b = values[table["site"] == "A"], values[table["site"] == "B"]
    pooled = np.sqrt((a.var() + b.var()) / 2)
    return (np.abs(b.mean() - a.mean()) / pooled).to_numpy(), (b.std() / a.std()).to_numpy()


def test_site_shift_is_removed_on_held_out_cases_of_both_sites():
    cohort = Cohort(0)
    train, held_out = cohort.table(A=30, B=30), cohort.table(A=2000, B=2000)
    before, ratio_before = site_gap(held_out, held_out[COLUMNS])
    after, ratio_after = site_gap(held_out, ComBat().fit(train).transform(held_out))
    # The truth: B's mean 0.8-1.2 SDs up and its SD 1.4-1.8 times A's; 0.74 of a pooled SD on average here.
    assert before.mean() > 0.6 and ratio_before.min() > 1.3
    # 30 training cases a site estimate a mean difference with an SE of 0.26 SD; on seeds 0-7 the mean gap after
    # was 0.08-0.15 (0.11 here), the largest feature's 0.20-0.37, SD ratios 0.80-1.27, their geometric mean
    # distance from 1 at most 1.10.
    assert after.mean() < 0.2 and after.max() < 0.45
    assert 0.75 < ratio_after.min() and ratio_after.max() < 1.33
    assert np.exp(np.abs(np.log(ratio_after)).mean()) < 1.15


def fitted(model: ComBat) -> dict:
    return copy.deepcopy({k: v for k, v in vars(model).items() if k.endswith("_")})


def test_nothing_is_fitted_on_held_out_cases():
    cohort = Cohort(1)
    train, held_out = cohort.table(A=30, B=30), cohort.table(A=15, B=15)
    model = ComBat().fit(train)
    before = fitted(model)
    batch = model.transform(held_out)
    after = fitted(model)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(np.asarray(before[key], dtype=object), np.asarray(after[key], dtype=object))
    one_by_one = pd.concat([model.transform(held_out.iloc[[i]]) for i in range(len(held_out))])
    pd.testing.assert_frame_equal(one_by_one, batch, check_exact=True)
    reordered = model.transform(held_out.iloc[::-1])
    pd.testing.assert_frame_equal(reordered.loc[batch.index], batch, check_exact=True)
    # Refitting with the held-out cases would have given other numbers: transform did not.
    refit = ComBat().fit(pd.concat([train, held_out])).transform(held_out)
    assert np.abs(refit.to_numpy() - batch.to_numpy()).max() > 1e-3


def test_a_small_site_uses_its_shrunk_training_estimates():
    cohort = Cohort(2)
    train, held_out = cohort.table(A=30, B=30, C=3), cohort.table(A=2000, C=2000)
    model = ComBat().fit(train)
    plain = ComBat(empirical_bayes=False).fit(train)
    c = model.sites_.index("C")
    assert model.sites_ == ["A", "B", "C"]
    # Empirical Bayes pulls the 3-case site's location towards its mean over the features, from training only.
    gamma_bar = plain.gamma_[c].mean()
    assert (np.abs(model.gamma_[c] - gamma_bar) < np.abs(plain.gamma_[c] - gamma_bar)).all()
    cases = held_out[held_out["site"] == "C"]
    z = (cases[COLUMNS].to_numpy() - model.grand_mean_) / model.pooled_sd_
    expected = (z - model.gamma_[c]) / np.sqrt(model.delta_[c]) * model.pooled_sd_ + model.grand_mean_
    np.testing.assert_allclose(model.transform(cases).to_numpy(), expected, rtol=1e-12)
    # Held-out C against A (C sits 1.6-2.4 SDs up, scaled by 2-3.2): over seeds 0-7 the mean gap after was
    # 0.25-0.52 pooled SD with the shrunk estimates and 0.41-0.70 with the 3 cases' own (here 0.37 and 0.65),
    # the SD ratio 0.56-1.80 and 0.39-49.
    def gap(values):
        a, c = values[held_out["site"] == "A"], values[held_out["site"] == "C"]
        return (np.abs(c.mean() - a.mean()) / np.sqrt((a.var() + c.var()) / 2)).to_numpy(), \
            np.abs(np.log((c.std() / a.std()).to_numpy()))
    before, (shrunk, shrunk_ratio), (own, own_ratio) = gap(held_out[COLUMNS])[0], gap(model.transform(held_out)), \
        gap(plain.transform(held_out))
    assert before.mean() > 0.9
    assert shrunk.mean() < 0.5 and shrunk.mean() < own.mean() - 0.15
    assert shrunk_ratio.max() < np.log(1.6) < own_ratio.max()


def test_missing_values_stay_missing_and_are_left_out_of_the_estimates():
    cohort = Cohort(3)
    train = cohort.table(A=20, B=20)
    train.iloc[[0, 5, 25], 0] = np.nan
    out = ComBat(empirical_bayes=False).fit(train).transform(train)
    assert out.iloc[[0, 5, 25], 0].isna().all() and out.drop(columns="f00").notna().all().all()
    # Without empirical Bayes a feature is harmonised on its own: the same as fitting on its non-missing cases.
    kept = train[train["f00"].notna()][["f00", "site"]]
    alone = ComBat(empirical_bayes=False).fit(kept).transform(kept)
    np.testing.assert_allclose(out.loc[kept.index, "f00"], alone["f00"], rtol=1e-12)


def test_constant_feature_is_left_unchanged():
    cohort = Cohort(4)
    train = cohort.table(A=10, B=10).assign(f00=3.0)
    train.loc[train["site"] == "B", "f01"] = 7.0  # constant at B only: still harmonised, B's scale taken as 1
    model = ComBat().fit(train)
    out = model.transform(train)
    assert model.unchanged_ == {"f00": "constant within every training site"}
    assert (out["f00"] == 3.0).all() and np.isfinite(out.to_numpy()).all()
    assert out.loc[train["site"] == "B", "f01"].nunique() == 1


def test_guards_name_the_site_and_the_cases():
    cohort = Cohort(5)
    train = cohort.table(A=10, B=10, C=1)
    with pytest.raises(InputError, match=r"site 'C' has 1 training case\(s\); ComBat needs at least 2 per site.*"
                                         r"merge it with another site or remove the site column"):
        ComBat().fit(train)
    train = cohort.table(A=10, B=10)
    model = ComBat().fit(train)
    unknown = cohort.table(A=2, D=2)
    with pytest.raises(InputError, match=r"site 'D' \(case\(s\) D\d{4}, D\d{4}\) was not among the training "
                                         r"sites 'A', 'B'"):
        model.transform(unknown)
    gaps = train.copy()
    gaps.loc[gaps.index[[3, 12]], "site"] = None
    with pytest.raises(InputError, match=f"no 'site' value for 2 case\\(s\\): {gaps.index[3]}, {gaps.index[12]}"):
        ComBat().fit(gaps)
    with pytest.raises(InputError, match=f"no 'site' value for 2 case\\(s\\): {gaps.index[3]}"):
        model.transform(gaps)
    with pytest.raises(InputError, match="the table has no site column 'site'"):
        ComBat().fit(train.drop(columns="site"))
    with pytest.raises(InputError, match="the table has no site column 'centre'"):
        ComBat(site_column="centre").fit(train)
    infinite = train.copy()
    infinite.iloc[4, 2] = np.inf
    with pytest.raises(InputError, match=f"infinite values in column\\(s\\) f02 of case\\(s\\) {train.index[4]}"):
        ComBat().fit(infinite)
    with pytest.raises(InputError, match=f"infinite values in column\\(s\\) f02 of case\\(s\\) {train.index[4]}"):
        model.transform(infinite)
    with pytest.raises(InputError, match="lacks column\\(s\\) f03"):
        model.transform(train.drop(columns="f03"))
    with pytest.raises(InputError, match="pandas DataFrame"):
        ComBat().fit(train[COLUMNS].to_numpy())
    with pytest.raises(ConfigError, match="min_site_cases must be an integer of at least 2"):
        ComBat(min_site_cases=1).fit(train)
    with pytest.raises(ConfigError, match="without the site column"):
        ComBat(columns=["f00", "site"]).fit(train)


def test_columns_picks_the_features_and_integer_site_codes_match_their_text():
    cohort = Cohort(6)
    train = cohort.table(A=10, B=10).assign(grade="II")
    train["site"] = train["site"].map({"A": 1, "B": 2})
    model = ComBat(columns=["f00", "f01"]).fit(train)
    assert list(model.get_feature_names_out()) == ["f00", "f01"] and model.sites_ == ["1", "2"]
    assert list(ComBat().fit(train).get_feature_names_out()) == COLUMNS  # text and site columns left out
    cases = train.iloc[[0, 15, 1]]
    as_read = cases.assign(site=cases["site"].astype(float))  # a float column, as read from a file with gaps
    np.testing.assert_array_equal(model.transform(as_read), model.transform(cases))


def test_in_a_pipeline_it_is_fitted_inside_each_training_fold():
    cohort = Cohort(7)
    X = cohort.table(A=60, B=60)
    y = (cohort.rng.random(120) < 0.5).astype(int)
    X["f00"] += np.where(y == 1, 1.5, 0.0) * cohort.sd[0] * np.where(X["site"] == "B", cohort.b[0], 1.0)
    X.iloc[::7, 1] = np.nan
    pipe = Pipeline([("combat", ComBat()), ("impute", SimpleImputer()), ("lr", LogisticRegression(max_iter=1000))])
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    p = cross_val_predict(pipe, X, y, cv=folds, method="predict_proba")[:, 1]
    assert np.isfinite(p).all() and roc_auc_score(y, p) > 0.75
    runs = cross_validate(pipe, X, y, cv=folds, return_estimator=True, return_indices=True)
    for model, train in zip(runs["estimator"], runs["indices"]["train"]):
        alone = ComBat().fit(X.iloc[train])
        np.testing.assert_array_equal(model.named_steps["combat"].gamma_, alone.gamma_)
        np.testing.assert_array_equal(model.named_steps["combat"].grand_mean_, alone.grand_mean_)


def test_without_empirical_bayes_each_site_gets_the_pooled_mean_and_sd_by_hand():
    # Per site (x - site mean) / site SD * pooled SD + grand mean. Site A 1, 2, 3 (mean 2, SD 1); B 10, 14, 18
    # (mean 14, SD 4); grand mean 8; pooled variance (2 + 32) / 6 (squared residuals from the site means / n).
    table = pd.DataFrame({"x": [1.0, 2.0, 3.0, 10.0, 14.0, 18.0], "site": ["A"] * 3 + ["B"] * 3})
    s = np.sqrt(34 / 6)
    out = ComBat(empirical_bayes=False).fit(table).transform(table)
    np.testing.assert_allclose(out["x"], [8 - s, 8, 8 + s] * 2, rtol=1e-14)


def test_matches_neurocombat():
    import neuroCombat  # noqa: F401  (the test extra installs it: the independent reference)

    nc = sys.modules["neuroCombat.neuroCombat"]
    cohort = Cohort(8)
    train = cohort.table(A=30, B=25, C=8)
    # neuroCombat stops its empirical-Bayes iteration at a relative change of 1e-4 (then the two differ by up to
    # 3e-7 SD); iterated to convergence, as here, they agree to rounding.
    patched = functools.partial(nc.it_sol, conv=1e-12)
    for eb in (True, False):
        model = ComBat(empirical_bayes=eb).fit(train)
        try:
            nc.it_sol = patched
            ref = nc.neuroCombat(train[COLUMNS].to_numpy().T, train[["site"]], "site", eb=eb)
        finally:
            nc.it_sol = patched.func
        est = ref["estimates"]
        np.testing.assert_allclose(model.transform(train).to_numpy() / cohort.sd, ref["data"].T / cohort.sd,
                                   rtol=0, atol=1e-9)
        np.testing.assert_allclose(model.gamma_, est["gamma.star"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(model.delta_, est["delta.star"], rtol=1e-9)
        np.testing.assert_allclose(model.pooled_sd_, np.sqrt(est["var.pooled"][:, 0]), rtol=1e-12)
        np.testing.assert_allclose(model.grand_mean_, est["stand.mean"][:, 0], rtol=1e-12)


# ---- in the study model -----------------------------------------------------------------------------------------
def _study_table(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A feature table of two sites: every radiomics feature of site B doubled and shifted by 3 SD; one feature
    (whole F0) carries the label by 1 SD."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    site = np.where(rng.uniform(size=n) < 0.5, "A", "B")
    X = pd.DataFrame({f"{r}_original_firstorder_F{j}": rng.normal(size=n) for r in ("whole", "high", "low")
                      for j in range(6)}, index=[f"s{seed}_{i}" for i in range(n)])
    X["whole_original_firstorder_F0"] += 1.0 * y
    features = list(X.columns)
    X.loc[site == "B", features] = X.loc[site == "B", features] * 2.0 + 3.0
    X["sub_high_fraction"] = rng.uniform(size=n)
    X["ith_score2d"] = rng.normal(size=n)
    X["pet_SUVmax"] = rng.uniform(2, 10, n)
    X["age"] = rng.normal(55, 10, n)
    X["site"] = site
    return X, y


def test_study_harmonises_inside_training_only_and_needs_the_site():
    from DPETResponseLib.study.model import StudyConfig, StudyModel

    X, y = _study_table(120, 0)
    held_out, _ = _study_table(400, 1)
    config = StudyConfig(n_folds=3, deep=False, classifiers=("lr",), radiomics_feature_sets=("original",))
    model = StudyModel(config, ["age"]).fit(X, y, [], [], progress=False)
    assert (model.site_column_, model.sites_) == ("site", ["A", "B"])
    pathway = model.pathways_["radiomics_whole"]
    harmonise = pathway.model_["harmonise"]
    # fit on the training cases only: the same estimates as ComBat fit on them alone
    alone = ComBat().fit(X[pathway._input_columns()])
    np.testing.assert_allclose(harmonise.gamma_, alone.gamma_, rtol=1e-12)
    # held-out cases of the shifted site come out on the other site's scale (the shift, 3 SD, is gone)
    harmonised = harmonise.transform(held_out[pathway._input_columns()])
    feature = "whole_original_firstorder_F1"  # no label signal
    b = held_out["site"] == "B"
    raw_gap = held_out.loc[b, feature].mean() - held_out.loc[~b, feature].mean()
    gap = harmonised.loc[b, feature].mean() - harmonised.loc[~b, feature].mean()
    assert raw_gap > 2.5 and abs(gap) < 0.3
    assert harmonised.loc[b, feature].std() / harmonised.loc[~b, feature].std() == pytest.approx(1, abs=0.25)
    with pytest.raises(InputError, match="site"):
        model.predict_proba(held_out.drop(columns="site"), [], [])
    with pytest.raises(InputError, match=r"site 'C' \(was not|'C'.*not among the training sites"):
        model.predict_proba(held_out.assign(site="C"), [], [])


def test_study_refuses_a_site_too_small_for_its_folds():
    from DPETResponseLib.study.model import StudyConfig, StudyModel

    X, y = _study_table(60, 0)
    X.loc[X.index[:4], "site"] = "C"
    config = StudyConfig(n_folds=3, deep=False, classifiers=("lr",), radiomics_feature_sets=("original",))
    with pytest.raises(InputError, match=r"site\(s\) 'C' \(4 cases\) have fewer than 6 training cases"):
        StudyModel(config, ["age"]).fit(X, y, [], [], progress=False)
    # without harmonisation the same cohort trains
    StudyModel(StudyConfig(**{**config.to_dict(), "harmonise": False}), ["age"]).fit(X, y, [], [], progress=False)
