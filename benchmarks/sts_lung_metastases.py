"""The protocol on real PET with a real outcome: 35 soft-tissue-sarcoma FDG PET scans (../shared/data/sts_pet),
predicting lung metastases (13 of 35) as Vallieres et al. (Phys Med Biol 2015) did from PET texture.

Every case is a training case: the figures are the cross-validated (out-of-fold) estimates, `train_cv`, with
DeLong and bootstrap 95% CIs. Prints one line per model and writes the report.

The README's STS figures (fusion_decision train_cv AUC with learned vs equal stacking weights, with population vs
per-tumour habitats) are four runs of this script, one per --decision-weights x --habitats, each into its own --out.

    .venv/bin/python benchmarks/sts_lung_metastases.py --out sts_run [--fast] [--decision-weights equal|learned]
        [--habitats population|tumour] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sts_pet"
CLINICAL = ["age", "sex", "grade", "mskcc_type"]  # baseline variables; treatment and dates are left out

# Sarcomas reach 15 cm: the CNN's crop is 32^3 at 4 mm (128 mm), not the breast presets' 1-2 mm.
STS_DEEP = {"spacing": 4.0, "size": 32}


def build_manifest(out: Path, sts: Path = SHARED) -> Path:
    """manifest.csv for the 35 STS cases (absolute paths, every case in `train`, label = lung metastases)."""
    outcomes = pd.read_csv(sts / "outcomes.csv")
    manifest = pd.DataFrame({
        "case_id": outcomes["patient_id"],
        "image": [str(sts / p / "PET_image.nii.gz") for p in outcomes["patient_id"]],
        "mask": [str(sts / p / "PET_mask.nii.gz") for p in outcomes["patient_id"]],
        "label": outcomes["lung_mets"],
        "split": "train",
        **{c: outcomes[c] for c in CLINICAL},
    })
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.csv"
    manifest.to_csv(path, index=False)
    return path


def main() -> None:
    from DPETResponseLib.protocol import evaluate, train

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("sts_run"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fast", action="store_true", help="Original-image radiomics only, fewer CNN epochs")
    parser.add_argument("--decision-weights", choices=["equal", "learned"], default="equal",
                        help="the decision fusion's stacking weights (StudyConfig.decision_weights)")
    parser.add_argument("--habitats", choices=["population", "tumour"], default="population",
                        help="analysis habitat_method")
    args = parser.parse_args()
    manifest = build_manifest(args.out)
    config = {"n_folds": 5, "seed": 0, "deep_preset": "cpu", "deep_overrides": STS_DEEP,
              "decision_weights": args.decision_weights, "analysis": {"habitat_method": args.habitats}}
    if args.fast:
        params = args.out / "original_only.yaml"
        params.write_text("imageType: {Original: {}}\nsetting: {binWidth: 0.25, label: 1, minimumROIDimensions: 2,"
                          " minimumROISize: 9}\n")
        config["deep_epochs"] = 10
        config["analysis"]["radiomics_params"] = str(params)
    train(manifest, args.out / "bundle", config=config, jobs=args.jobs, cache_dir=args.out / "cache", overwrite=True)
    report = evaluate(args.out / "bundle", manifest, args.out / "report", jobs=args.jobs, cache_dir=args.out / "cache")
    metrics = json.loads((report.parent / "metrics.json").read_text())
    block = metrics["splits"]["train_cv"]
    print(f"STS lung metastases, {block['n']} cases ({block['n_positive']} positive), 5-fold out-of-fold estimates; "
          f"decision weights {args.decision_weights}, habitats {args.habitats}{', --fast' if args.fast else ''}:")
    for name, m in block["models"].items():
        if m.get("auc") is None:
            print(f"  {name:20s} skipped: {m.get('skipped')}")
            continue
        lo, hi = m["auc_ci"]
        blo, bhi = m["auc_ci_bootstrap"]
        print(f"  {name:20s} AUC {m['auc']:.3f}  DeLong 95% CI {lo:.3f}-{hi:.3f}  bootstrap {blo:.3f}-{bhi:.3f}")
    print(f"report: {report}")


if __name__ == "__main__":
    main()
