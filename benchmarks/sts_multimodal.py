"""PET, CT and MR of the same patients, each alone and fused: the 35 soft-tissue-sarcoma patients of
../shared/data/sts_pet, predicting lung metastases (13 of 35) as Vallieres et al. (Phys Med Biol 2015) did from FDG-PET
and MRI textures. The CT and T1 MR are separate acquisitions with their own expert tumour masks, on their own grids
(not registered to the PET); the data lacks the CT of 10 patients and the MR of 2, so the CT and MR pathways are fit
and scored on the patients that have them, and the fusions impute what a patient lacks.

Every case is a training case: the figures are the cross-validated (out-of-fold) estimates, `train_cv`, with DeLong
95% CIs, for the models of one bundle: PET alone (`radiomics_whole`: the whole tumour's PET radiomics, the
counterpart of the single-region CT and MR pathways; `radiomics`: with the uptake subregions), CT alone
(`radiomics_ct`), MR alone (`radiomics_mr`) and their fusions (`fusion_decision`, `fusion_feature`), beside the
clinical pathway and the baseline, and what the decision fusion chose. A second table rescores them on the patients
with all three modalities (paired comparisons on the same cases). ``--imaging-only`` trains without the clinical
columns (`clinical_predictors: []`), so the fusions fuse imaging alone.

    .venv/bin/python benchmarks/sts_multimodal.py --out sts_multimodal [--fast] [--imaging-only] [--deep] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sts_pet"
CLINICAL = ["age", "sex", "grade", "mskcc_type"]
SINGLE_MODALITY = {"PET (whole tumour)": "radiomics_whole", "PET (with subregions)": "radiomics",
                   "CT": "radiomics_ct", "MR T1": "radiomics_mr"}
FUSIONS = ("fusion_decision", "fusion_feature")
COMPARATORS = {"clinical (age, sex, grade, MSKCC type + SUVmax)": "clinical", "baseline": "baseline"}


def build_manifest(out: Path, sts: Path = SHARED, held_out_every: int = 0, drop_mr_every: int = 0,
                   clinical=CLINICAL) -> Path:
    """manifest.csv of the 35 STS cases with ``image``/``mask`` (PET), ``image_ct``/``mask_ct`` and
    ``image_mr``/``mask_mr`` (empty where the data has none); label = lung metastases. Every ``held_out_every``-th
    case (from the second) goes to split ``test`` (0: all ``train``); the MR of every ``drop_mr_every``-th case is
    left out (0: none), a missing-modality pattern on top of the data's own."""
    outcomes = pd.read_csv(sts / "outcomes.csv")
    ids = outcomes["patient_id"].tolist()

    def path(case: str, name: str) -> str:
        file = sts / case / name
        return str(file) if file.exists() else ""

    def keep_mr(i: int) -> bool:
        return not drop_mr_every or i % drop_mr_every != 0

    manifest = pd.DataFrame({
        "case_id": ids,
        "image": [path(c, "PET_image.nii.gz") for c in ids],
        "mask": [path(c, "PET_mask.nii.gz") for c in ids],
        "label": outcomes["lung_mets"],
        "split": ["test" if held_out_every and i % held_out_every == 1 else "train" for i in range(len(ids))],
        "image_ct": [path(c, "CT_image.nii.gz") for c in ids],
        "mask_ct": [path(c, "CT_mask.nii.gz") for c in ids],
        "image_mr": [path(c, "MR_T1_image.nii.gz") if keep_mr(i) else "" for i, c in enumerate(ids)],
        "mask_mr": [path(c, "MR_T1_mask.nii.gz") if keep_mr(i) else "" for i, c in enumerate(ids)],
        **{c: outcomes[c] for c in clinical},
    })
    out.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(out / "manifest.csv", index=False)
    return out / "manifest.csv"


def _line(name: str, y, p) -> str:
    from DPETResponseLib.reporting.evaluation import auc, auc_ci_delong

    ok = ~pd.isna(p)
    lo, hi = auc_ci_delong(y[ok], p[ok])
    return (f"  {name:36s} n={int(ok.sum()):2d} ({int(y[ok].sum()):2d} positive)  AUC {auc(y[ok], p[ok]):.3f}  "
            f"DeLong 95% CI {lo:.3f}-{hi:.3f}")


def main() -> None:
    from DPETResponseLib.protocol import evaluate, train

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("sts_multimodal"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fast", action="store_true", help="Original-image radiomics only for every modality")
    parser.add_argument("--deep", action="store_true", help="also train the CNN (a channel pair per modality; "
                        "about 40 min on 2 cores)")
    parser.add_argument("--imaging-only", action="store_true", help="no clinical column among the predictors")
    args = parser.parse_args()
    manifest = build_manifest(args.out)
    # the end-to-end fusion (a second CNN) is left out: it doubles the CNN's time and is no per-modality comparison
    config = {"n_folds": 5, "seed": 0, "deep": args.deep, "e2e_fusion": False, "deep_preset": "cpu",
              "deep_overrides": {"spacing": 4.0, "size": 32}, "analysis": {},
              "clinical_predictors": [] if args.imaging_only else None}
    if args.fast:
        kinds = {"pet": "binWidth: 0.25", "ct": "binWidth: 25", "mr": "binWidth: 25, normalize: true, "
                 "normalizeScale: 100, removeOutliers: 3"}
        for kind, setting in kinds.items():
            (args.out / f"original_{kind}.yaml").write_text(
                f"imageType: {{Original: {{}}}}\nsetting: {{{setting}, label: 1, minimumROIDimensions: 2, "
                "minimumROISize: 9}\n")
        config["analysis"] = {"radiomics_params": str(args.out / "original_pet.yaml"),
                              "modality_params": {m: str(args.out / f"original_{m}.yaml") for m in ("ct", "mr")}}
    train(manifest, args.out / "bundle", config=config, jobs=args.jobs, cache_dir=args.out / "cache", overwrite=True)
    report = evaluate(args.out / "bundle", manifest, args.out / "report", jobs=args.jobs, cache_dir=args.out / "cache")
    metrics = json.loads((report.parent / "metrics.json").read_text())
    predictions = pd.read_csv(report.parent / "predictions.csv", index_col="case_id")
    predictions = predictions[predictions["split"] == "train_cv"]
    y = predictions["label"].to_numpy()
    block = metrics["splits"]["train_cv"]
    print(f"STS lung metastases, {block['n']} cases ({block['n_positive']} positive), 5-fold out-of-fold "
          f"estimates{' (--fast)' if args.fast else ''}; cases lacking a modality: {block['missing_modalities']}")
    comparators = {("SUVmax alone" if args.imaging_only and v == "clinical" else k): v for k, v in COMPARATORS.items()}
    rows = {**comparators, **SINGLE_MODALITY, "PET, 5 mm peritumoural shell": "peritumoural", **{f: f for f in FUSIONS},
            **({"CNN (PET+CT+MR channels)": "deep"} if args.deep else {})}
    complete = predictions[list(SINGLE_MODALITY.values())].notna().all(axis=1).to_numpy()
    subsets = ((None, slice(None)), (f"The {int(complete.sum())} cases with all three modalities:", complete))
    for title, cases in subsets:
        if title:
            print(title)
        for label, name in rows.items():
            print(_line(f"{label} [{name}]" if label != name else name, y[cases], predictions[name].to_numpy()[cases]))
    fusion = metrics["choices"]["fusion_decision"]
    print(f"fusion_decision: {fusion['weights']} weights, coefficients "
          + ", ".join(f"{k} {v:.2f}" for k, v in fusion["coefficients"].items())
          + f"; screened out: {', '.join(fusion.get('screened_out', [])) or 'none'}")
    versus = [(c["model_b"] if c["model_a"] == "fusion_decision" else c["model_a"], c) for c in block["comparisons"]
              if "fusion_decision" in (c["model_a"], c["model_b"])]
    print("fusion_decision vs each model, paired DeLong (cases both scored): " + ", ".join(
        f"{other} p={c['p_value']:.2f} (n={c['n']})" for other, c in versus if other in rows.values()))
    print(f"report: {report}")


if __name__ == "__main__":
    main()
