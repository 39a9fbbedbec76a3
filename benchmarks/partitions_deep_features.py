"""The deep-feature pathway (a frozen encoder; here seeded random weights: plumbing, no MedicalNet file may be
downloaded) next to the other pathways over N repeated stratified partitions (Jang et al.'s design), on the
synthetic D-PET cohort or the 35 STS cases. No CNN (`deep: false`), Original-image radiomics, the bundle's habitat
centroids in every partition (`--partition-habitats bundle`). Prints each model's mean (SD) AUC and balanced
accuracy; the closing note's figures come from here.

    .venv/bin/python benchmarks/partitions_deep_features.py --cohort synthetic --out /tmp/pdf_syn [--n 147]
    .venv/bin/python benchmarks/partitions_deep_features.py --cohort sts --out /tmp/pdf_sts
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORIGINAL_ONLY = ("imageType: {Original: {}}\nsetting: {binWidth: 0.25, label: 1, minimumROIDimensions: 2, "
                 "minimumROISize: 9}\n")


def main() -> None:
    from sts_lung_metastases import build_manifest

    from DPETResponseLib.protocol import evaluate, train
    from DPETResponseLib.synthetic import make_cohort

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cohort", choices=["synthetic", "sts"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=147, help="synthetic cohort size")
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cohort == "sts":
        manifest, crop = build_manifest(args.out), {"size": 32, "spacing": 4.0}  # sarcomas reach 15 cm
    else:
        manifest, crop = make_cohort(args.out / "cohort", n=args.n, seed=0), {"size": 32, "spacing": 1.5}
    params = args.out / "original_only.yaml"
    params.write_text(ORIGINAL_ONLY)
    config = {"n_folds": 5, "seed": 0, "deep": False, "classifiers": ["lr", "nb", "rf"],
              "deep_features": {"weights": "random", "arch": "resnet10", **crop},
              "analysis": {"radiomics_params": str(params)}}
    train(manifest, args.out / "bundle", config=config, jobs=args.jobs, cache_dir=args.out / "cache", overwrite=True)
    report = evaluate(args.out / "bundle", manifest, args.out / "report", jobs=args.jobs,
                      cache_dir=args.out / "cache", partitions=args.partitions, partition_habitats="bundle")
    metrics = json.loads((report.parent / "metrics.json").read_text())
    parts = metrics["partitions"]
    print(f"{args.cohort}: {parts['n']} partitions of {parts['n_cases']} cases, test fraction "
          f"{parts['test_fraction']:.2f}; mean (SD)")
    for name, m in parts["models"].items():
        print(f"  {name:20s} AUC {m['auc']['mean']:.3f} ({m['auc']['sd']:.3f})  balanced accuracy "
              f"{m['balanced_accuracy']['mean']:.3f} ({m['balanced_accuracy']['sd']:.3f})")
    print(f"report: {report}")


if __name__ == "__main__":
    main()
