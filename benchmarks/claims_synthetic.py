"""The comparative claims about the synthetic D-PET cohort, measured over synthetic-generator seeds.

Cohorts: ``DPETResponseLib.synthetic.make_cohort(n=147, seed=s)`` for each s in ``--seeds`` (default 0 1 2 3 4),
written under ``--work`` and reused (same seed, same bytes).

Features: the library's own extraction (`extraction.feature_table`: the cached cohort runner over
`casefeatures.analyse_case`), cache under ``--work``/cache, so a rerun only refits the models.
  --params original      Testing/fast_radiomics.yaml, the tests' fast settings: Original image, shape,
                         firstorder, glcm, glrlm, glszm
  --params original-all  the package's Resources/Parameters/radiomics_pet.yaml with imageType Original alone (every
                         feature class: 321 radiomics features over whole/high/low, the README's "Original image")
  --params full          the package's radiomics_pet.yaml (Original + LoG + Wavelet: 3,669 radiomics features)
  --habitats population  (the default of `train`) centroids learned without labels by
                         `casefeatures.with_habitat_model` on the 90 training cases of EACH resample
                         (--centroids resample: as `train` would; the cohort is re-extracted once per resample) or
                         once on the cohort's 90-case train split (--centroids split: what test_protocol does,
                         cheaper; a resample's held-out cases may then have shaped the centroids, without labels)
  --habitats tumour      per-tumour k-means (no centroids)

Models: `study.StudyModel` with test_protocol's resampling configuration, StudyConfig(n_folds=3, seed=0,
deep=False, classifiers=("lr", "nb", "rf")) unless --folds/--classifiers say otherwise: the non-CNN pathways
(clinical, radiomics [whole+high+low+sub], radiomics_whole, ith) and both fusions (feature fusion without CNN
embeddings; decision fusion with decision_weights "equal", and a second StudyModel with "learned" whose
fusion_decision is reported as fusion_decision_learned). Resamples: StratifiedShuffleSplit(--resamples,
test_size=57, random_state=100) of the 147 cases into 90 training / 57 held-out cases (as test_protocol's
`test_fusions_and_subregions_over_resampled_splits`); AUC on the 57 held-out cases, averaged over resamples.

Prints, per seed: each model's mean (SD over resamples) held-out AUC, the oracle's (hidden logit) on the same
held-out cases, the mean DeLong SE of one 57-case AUC, and the Pearson r of the habitat fraction
(``sub_high_fraction``) with the generator's true ``high_fraction`` (hidden_factors.csv) over the 147 cases
(mean over resamples where the centroids change per resample). Then one table over seeds: each claim's margin per
seed, its mean and SD across seeds, and "HOLDS on k/N seeds". Per-resample AUCs go to a CSV in --work
(claims_<params>_<habitats>[_<centroids>]_r<resamples>.csv); ``--compare A.csv B.csv`` prints the per-seed
difference A - B of every model's mean AUC from two such runs (e.g. Original vs full radiomics, population vs
per-tumour habitats).

    .venv/bin/python benchmarks/claims_synthetic.py [--seeds 0 1 2 3 4] [--resamples 10] [--params original]
        [--habitats population] [--centroids resample] [--work /tmp/claims_work] [--jobs 1]
    .venv/bin/python benchmarks/claims_synthetic.py --compare A.csv B.csv

The library is the installed (editable) checkout. To measure a fixed commit while the checkout is being edited, put
a snapshot first on the path: ``git archive HEAD DPETResponseLib | tar -x -C SNAP && git rev-parse HEAD >
SNAP/COMMIT``, then ``PYTHONPATH=SNAP .venv/bin/python benchmarks/claims_synthetic.py ...``; the first line printed
says which library ran.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

PATHWAYS = ("clinical", "radiomics", "radiomics_whole", "ith")
MODELS = (*PATHWAYS, "fusion_feature", "fusion_decision", "fusion_decision_learned")
N_CASES, N_HELD_OUT, SPLIT_SEED = 147, 57, 100
# claim: (label, margin as a function of one seed's mean AUCs, what "holds" means)
CLAIMS = {
    "fusion_feature - best pathway": (lambda m: m["fusion_feature"] - m[list(PATHWAYS)].max(), ">= 0"),
    "fusion_decision - best pathway": (lambda m: m["fusion_decision"] - m[list(PATHWAYS)].max(), ">= 0"),
    "radiomics - radiomics_whole (subregions)": (lambda m: m["radiomics"] - m["radiomics_whole"], "> 0"),
    "decision fusion: equal - learned weights": (lambda m: m["fusion_decision"] - m["fusion_decision_learned"], "> 0"),
}


def _holds(value: float, rule: str) -> bool:
    return value >= 0 if rule == ">= 0" else value > 0


def params_text(name: str) -> str:
    """The radiomics YAML text of ``--params`` (see the module docstring)."""
    import yaml

    from DPETResponseLib.features.radiomics import default_params_path

    if name == "original":
        return (ROOT / "Testing" / "fast_radiomics.yaml").read_text()
    text = default_params_path().read_text()
    if name == "full":
        return text
    params = yaml.safe_load(text)
    params["imageType"] = {"Original": {}}
    return yaml.safe_dump(params, sort_keys=False)


def provenance() -> str:
    """Where the library comes from: the checkout (its commit, '+dirty' when DPETResponseLib has uncommitted edits)
    or a snapshot folder put first on PYTHONPATH (its COMMIT file, written when it was made)."""
    import DPETResponseLib

    package = Path(DPETResponseLib.__file__).resolve().parent
    if package.parent != ROOT:
        marker = package.parent / "COMMIT"
        commit = marker.read_text().strip()[:12] if marker.is_file() else "unknown commit"
        return f"DPETResponseLib {DPETResponseLib.__version__} from snapshot {package.parent} ({commit})"

    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

    dirty = (" +dirty (uncommitted edits in DPETResponseLib)"
             if git("status", "--porcelain", "--", "DPETResponseLib") else "")
    commit = git("rev-parse", "--short=12", "HEAD")
    return f"DPETResponseLib {DPETResponseLib.__version__} from the checkout, commit {commit}{dirty}"


def cohort(work: Path, seed: int) -> Path:
    """The 147-case cohort of ``seed`` under ``work`` (made once; oracle.json is written last)."""
    from DPETResponseLib.synthetic import make_cohort

    folder = work / f"cohort_seed{seed}"
    if not (folder / "oracle.json").is_file():
        make_cohort(folder, n=N_CASES, seed=seed)
    return folder / "manifest.csv"


def table(cases: pd.DataFrame, analysis: dict, cache: Path, jobs: int) -> pd.DataFrame:
    from DPETResponseLib.extraction import feature_table

    X, errors, _ = feature_table(cases, analysis, cache, jobs=jobs, progress=False)
    if len(errors) or len(X) != len(cases):
        sys.exit(f"{len(errors)} case(s) failed to extract: {errors.to_dict('records')[:3]}")
    return X.loc[cases.index]


def run_seed(seed: int, args, params_path: Path) -> tuple[pd.DataFrame, dict]:
    """Per-resample held-out AUCs of one seed's cohort, and the seed's side figures."""
    from sklearn.model_selection import StratifiedShuffleSplit

    from DPETResponseLib.features.analysis import with_habitat_model
    from DPETResponseLib.io.manifest import clinical_columns, read_manifest
    from DPETResponseLib.learn.pathways import radiomics_columns
    from DPETResponseLib.reporting.evaluation import auc, delong_auc_variance
    from DPETResponseLib.study.model import StudyConfig, StudyModel

    started = time.perf_counter()
    manifest = cohort(args.work, seed)
    cases = read_manifest(manifest)
    truth = pd.read_csv(manifest.parent / "hidden_factors.csv", index_col="case_id").loc[cases.index]
    y = cases["label"].astype(int).to_numpy()
    cache = args.work / "cache"
    base = {"radiomics_params": str(params_path), "habitat_method": args.habitats}
    per_resample = args.habitats == "population" and args.centroids == "resample"
    X = None
    if not per_resample:
        fit_on = cases[cases["split"] == "train"] if args.habitats == "population" else cases
        X = table(cases, with_habitat_model(fit_on, base, cache, jobs=args.jobs, progress=False), cache, args.jobs)
    extract_s, fit_s, rows, r_values, se = time.perf_counter() - started, 0.0, [], [], []
    config = dict(n_folds=args.folds, seed=0, deep=False, classifiers=tuple(args.classifiers))
    splits = StratifiedShuffleSplit(args.resamples, test_size=N_HELD_OUT, random_state=SPLIT_SEED)
    for k, (train_idx, test_idx) in enumerate(splits.split(np.zeros(len(y)), y)):
        t0 = time.perf_counter()
        if per_resample:
            analysis = with_habitat_model(cases.iloc[train_idx], base, cache, jobs=args.jobs, progress=False)
            X = table(cases, analysis, cache, args.jobs)
        t1 = time.perf_counter()
        if "sub_high_fraction" in X and (per_resample or k == 0):
            r_values.append(float(np.corrcoef(X["sub_high_fraction"], truth["high_fraction"])[0, 1]))
        clinical = clinical_columns(cases)
        y_test = y[test_idx]
        predicted = StudyModel(StudyConfig(**config), clinical).fit(
            X.iloc[train_idx], y[train_idx], [], [], progress=False).predict_proba(X.iloc[test_idx], [], [])
        learned = StudyModel(StudyConfig(**config, decision_weights="learned"), clinical).fit(
            X.iloc[train_idx], y[train_idx], [], [], progress=False).predict_proba(X.iloc[test_idx], [], [])
        predicted["fusion_decision_learned"] = learned["fusion_decision"]
        row = {name: auc(y_test, predicted[name].to_numpy()) for name in MODELS}
        row["oracle"] = auc(y_test, truth["hidden_logit"].to_numpy()[test_idx])
        rows.append({"seed": seed, "resample": k, **row})
        se += [np.sqrt(delong_auc_variance(y_test, predicted[name].to_numpy())) for name in MODELS]
        extract_s += t1 - t0
        fit_s += time.perf_counter() - t1
        print(f"  seed {seed} resample {k}: " + " ".join(f"{n} {row[n]:.3f}" for n in (*MODELS, "oracle"))
              + f"  ({t1 - t0:.0f} s extraction, {time.perf_counter() - t1:.0f} s fits)", flush=True)
    info = {"n_radiomics": len(radiomics_columns(X)), "habitat_r": float(np.mean(r_values)) if r_values else None,
            "delong_se": float(np.mean(se)), "extract_s": extract_s, "fit_s": fit_s,
            "oracle_147": float(auc(y, truth["hidden_logit"].to_numpy()))}
    return pd.DataFrame(rows), info


def print_seed(seed: int, aucs: pd.DataFrame, info: dict) -> None:
    mean, sd = aucs[[*MODELS, "oracle"]].mean(), aucs[[*MODELS, "oracle"]].std(ddof=1)
    print(f"\nseed {seed}: mean (SD) held-out AUC over {len(aucs)} resamples of {N_CASES - N_HELD_OUT}/{N_HELD_OUT}")
    for name in (*MODELS, "oracle"):
        print(f"  {name:24s} {mean[name]:.3f} ({sd[name]:.3f})")
    r = "n/a" if info["habitat_r"] is None else f"{info['habitat_r']:.2f}"
    print(f"  radiomics features (whole/high/low) {info['n_radiomics']}; habitat fraction vs true high_fraction "
          f"r = {r}; mean DeLong SE of one 57-case AUC {info['delong_se']:.3f}; oracle AUC on all 147 "
          f"{info['oracle_147']:.3f}")
    print(f"  time: {info['extract_s']:.0f} s cohort + extraction, {info['fit_s']:.0f} s model fits", flush=True)


def claims_table(aucs: pd.DataFrame, infos: dict) -> None:
    seeds = sorted(aucs["seed"].unique())
    means = aucs.groupby("seed")[list(MODELS)].mean()
    width = max(len(c) for c in CLAIMS) + 2
    print("\nclaims over seeds (margin of mean held-out AUCs; SD across seeds, ddof=1)")
    print(f"{'claim':{width}s}" + "".join(f"{'seed ' + str(s):>10s}" for s in seeds) + f"{'mean':>9s}{'SD':>8s}")
    for claim, (margin, rule) in CLAIMS.items():
        values = np.array([margin(means.loc[s]) for s in seeds])
        sd = values.std(ddof=1) if len(values) > 1 else float("nan")
        k = sum(_holds(v, rule) for v in values)
        print(f"{claim:{width}s}" + "".join(f"{v:+10.3f}" for v in values) + f"{values.mean():+9.3f}{sd:8.3f}"
              f"   HOLDS on {k}/{len(values)} seeds ({rule})")
    print(f"{'best pathway':{width}s}" + "".join(f"{means.loc[s, list(PATHWAYS)].idxmax():>10.10s}" for s in seeds))
    r = [infos[s]["habitat_r"] for s in seeds]
    if all(v is not None for v in r):
        print(f"{'habitat r (true high_fraction)':{width}s}" + "".join(f"{v:10.2f}" for v in r)
              + f"{np.mean(r):9.2f}{np.std(r, ddof=1) if len(r) > 1 else float('nan'):8.2f}")
    print("\nmean held-out AUC per seed (columns), mean and SD across seeds")
    print(f"{'model':{width}s}" + "".join(f"{'seed ' + str(s):>10s}" for s in seeds) + f"{'mean':>9s}{'SD':>8s}")
    for name in MODELS:
        v = means[name].to_numpy()
        print(f"{name:{width}s}" + "".join(f"{x:10.3f}" for x in v) + f"{v.mean():9.3f}"
              f"{v.std(ddof=1) if len(v) > 1 else float('nan'):8.3f}")


def compare(a_path: Path, b_path: Path) -> None:
    a, b = pd.read_csv(a_path), pd.read_csv(b_path)
    seeds = sorted(set(a["seed"]) & set(b["seed"]))
    diff = a.groupby("seed")[list(MODELS)].mean().loc[seeds] - b.groupby("seed")[list(MODELS)].mean().loc[seeds]
    print(f"mean held-out AUC, A - B per seed\n  A = {a_path}\n  B = {b_path}")
    print(f"{'model':26s}" + "".join(f"{'seed ' + str(s):>10s}" for s in seeds) + f"{'mean':>9s}{'SD':>8s}")
    for name in MODELS:
        v = diff[name].to_numpy()
        sd = v.std(ddof=1) if len(v) > 1 else float("nan")
        print(f"{name:26s}" + "".join(f"{x:+10.3f}" for x in v) + f"{v.mean():+9.3f}{sd:8.3f}"
              f"   A > B on {int((v > 0).sum())}/{len(v)} seeds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[2:]))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="synthetic-generator seeds")
    parser.add_argument("--resamples", type=int, default=10, help="stratified 90/57 resamples per cohort")
    parser.add_argument("--params", choices=["original", "original-all", "full"], default="original")
    parser.add_argument("--habitats", choices=["population", "tumour"], default="population")
    parser.add_argument("--centroids", choices=["resample", "split"], default="resample",
                        help="population habitats: learn the centroids per resample or once on the train split")
    parser.add_argument("--folds", type=int, default=3, help="StudyConfig.n_folds (test_protocol: 3)")
    parser.add_argument("--classifiers", nargs="+", default=["lr", "nb", "rf"], help="StudyConfig.classifiers")
    parser.add_argument("--work", type=Path, default=Path("/tmp/claims_work"), help="cohorts, cache and CSVs")
    parser.add_argument("--jobs", type=int, default=1, help="extraction processes (each one thread)")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("A_CSV", "B_CSV"),
                        help="print A - B of two runs' per-resample CSVs and exit")
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return

    from DPETResponseLib.cohort import limit_threads

    limit_threads()  # one BLAS/OpenMP thread here too: the fits must not fight the extraction workers
    args.work.mkdir(parents=True, exist_ok=True)
    tag = (f"{args.params}_{args.habitats}" + (f"_{args.centroids}" if args.habitats == "population" else "")
           + f"_r{args.resamples}")
    params_path = args.work / f"params_{args.params}.yaml"
    params_path.write_text(params_text(args.params))
    csv = args.work / f"claims_{tag}.csv"
    print(f"{provenance()}; python {sys.version.split()[0]}")
    print(f"cohorts: make_cohort(n={N_CASES}, seed=s), s in {args.seeds}; radiomics --params {args.params}; "
          f"habitats {args.habitats}" + (f", centroids per {args.centroids}" if args.habitats == "population" else "")
          + f"; StudyConfig(n_folds={args.folds}, seed=0, deep=False, classifiers={tuple(args.classifiers)}); "
          f"{args.resamples} x StratifiedShuffleSplit(test_size={N_HELD_OUT}, random_state={SPLIT_SEED}); "
          f"jobs {args.jobs}", flush=True)
    frames, infos = [], {}
    for seed in args.seeds:
        started = time.perf_counter()
        aucs, infos[seed] = run_seed(seed, args, params_path)
        frames.append(aucs)
        print_seed(seed, aucs, infos[seed])
        print(f"  seed {seed} took {time.perf_counter() - started:.0f} s", flush=True)
        pd.concat(frames).to_csv(csv, index=False)
    claims_table(pd.concat(frames), infos)
    print(f"\nper-resample AUCs: {csv}")


if __name__ == "__main__":
    main()
