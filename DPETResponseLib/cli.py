"""`dpet-response`: the command line. Each subcommand parses its arguments and calls the library; bad input ends
in one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from .core.errors import DPETError
from .core.names import MODALITY_NAME


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _clinical_values(bundle, items: list[str]) -> dict[str, object]:
    """``--clinical NAME=VALUE`` typed by the bundle's training data: a number for a number column, the text for a
    category (a category such as cT "2" beside "4d" stays "2": as 2.0 it would be a category the model never saw)."""
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise DPETError(f"--clinical expects NAME=VALUE, got {item!r}")
        pairs.append((name, value))
    if not pairs:
        return {}
    from .scene import clinical_schema

    schema = clinical_schema(bundle)
    values = {}
    for name, value in pairs:
        if schema.get(name, {}).get("kind") == "number":
            try:
                value = float(value)
            except ValueError:
                raise DPETError(f"--clinical {name}: expected a number, got {value!r}") from None
        values[name] = value  # a name the bundle lacks is refused by predict, with the bundle's columns
    return values


def _cmd_synth(args) -> int:
    from .synthetic import make_cohort

    manifest = make_cohort(args.outdir, n=args.n, seed=args.seed)
    print(f"wrote {args.n} synthetic D-PET cases; manifest: {manifest}")
    return 0


def _cmd_convert(args) -> int:
    from .core.files import write_json
    from .io.images import read_pet_with_provenance, write_image

    image, record = read_pet_with_provenance(args.input, suv_type=args.suv_type)
    write_image(image, args.out)
    sidecar = write_json(_sidecar_path(args.out), {"image": str(args.out), "suv_conversion": record})
    spacing = tuple(round(s, 4) for s in image.GetSpacing())
    print(f"wrote SUV image {args.out} (size {image.GetSize()}, spacing {spacing}); how: {record['rule']}")
    print(f"provenance: {sidecar}")
    return 0


def _sidecar_path(image_path: Path) -> Path:
    """``scan.nii.gz`` -> ``scan.json`` (the BIDS convention of a sidecar beside its image)."""
    name = image_path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return image_path.with_name(name[: -len(suffix)] + ".json")
    return image_path.with_name(name + ".json")


def _cmd_segment(args) -> int:
    from .features.segmentation import segment_from_seed
    from .io.images import read_pet, write_image

    image = read_pet(args.image)
    mask = segment_from_seed(image, seed_xyz=args.seed, box=args.box, relative=args.relative, absolute=args.absolute)
    write_image(mask, args.out)
    print(f"wrote tumour mask {args.out}")
    return 0


def _cmd_extract(args) -> int:
    from .extraction import run_extract
    from .protocol import load_config

    analysis = load_config(args.config).analysis if args.config else None
    summary = run_extract(
        args.manifest, args.out, params=args.params, jobs=args.jobs, scheduler=args.scheduler,
        cache_dir=args.cache, strict=args.strict, analysis=analysis, label_column=args.label_column,
    )
    print(summary.describe())
    return summary.exit_code


def _cmd_train(args) -> int:
    from .protocol import train

    train(args.manifest, args.out, config=args.config, jobs=args.jobs, cache_dir=args.cache, fast=args.fast,
          label_column=args.label_column)
    print(f"model bundle written to {args.out}")
    return 0


def _cmd_evaluate(args) -> int:
    from .protocol import evaluate

    report = evaluate(args.bundle, args.manifest, args.out, jobs=args.jobs, cache_dir=args.cache,
                      label_column=args.label_column, partitions=args.partitions,
                      test_fraction=args.partition_test_fraction, partition_habitats=args.partition_habitats)
    print(f"report: {report}")
    return 0


def _cmd_predict(args) -> int:
    from .protocol import predict_files

    if (args.mask is None) == (args.seed is None):
        raise DPETError("give exactly one of --mask or --seed")
    if args.dicom_out is not None:
        from .core.errors import InputError
        from .reporting.dicom import dicom_pet_datasets

        try:
            dicom_pet_datasets(args.image)
        except InputError as err:
            raise DPETError(f"--dicom-out needs a DICOM PET as --image: {err}") from None
    clinical = _clinical_values(args.bundle, args.clinical)
    result = predict_files(args.bundle, args.image, mask=args.mask, seed_xyz=args.seed, out_dir=args.out,
                           clinical=clinical, dicom_out=args.dicom_out, modalities=args.modalities, site=args.site,
                           body_mask=args.body_mask)
    json.dump(result.to_json_dict(), sys.stdout, indent=2)
    print()
    return 0


def _cmd_report(args) -> int:
    from .reporting.report import write_report_from_dir

    print(f"report: {write_report_from_dir(args.report_dir)}")
    return 0


def _cmd_chain(args) -> int:
    from .chain import add_upstream_column, sidecar_path

    out = add_upstream_column(args.bundle, args.manifest, args.out, column=args.column, model=args.model,
                              label_column=args.label_column, cache_dir=args.cache, jobs=args.jobs)
    print(f"wrote {out} with the upstream column {args.column!r}; sidecar: {sidecar_path(out)}")
    return 0


def _cmd_demo(args) -> int:
    from .protocol import run_demo

    run_demo(args.out, n=args.n, seed=args.seed, fast=args.fast)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .io.suv import SUV_TYPES

    parser = argparse.ArgumentParser(prog="dpet-response", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic D-PET cohort (images, masks, manifest, oracle)")
    p.add_argument("outdir", type=Path)
    p.add_argument("--n", type=int, default=147)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("convert", help="read a PET (DICOM folder, NIfTI, NRRD, MHA) and write it in SUV")
    p.add_argument("input", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--suv-type", choices=list(SUV_TYPES), default="bw",
                   help="body weight (default), lean body mass (Janmahasatian; lbmjames128: James), ideal body "
                        "weight or body surface area")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("segment", help="segment a tumour from a seed point or a box (physical LPS mm)")
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--seed", type=_floats, help="x,y,z in mm (LPS)")
    p.add_argument("--box", type=_floats, help="x0,y0,z0,x1,y1,z1 in mm (LPS)")
    p.add_argument("--relative", type=float, default=0.41, help="threshold as a fraction of SUVmax (default 0.41)")
    p.add_argument("--absolute", type=float, help="absolute SUV threshold (overrides --relative)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser("extract", help="per-case features for a cohort manifest (cached, resumable)")
    p.add_argument("manifest", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--params", type=Path, help="pyradiomics YAML (default: the package's PET settings)")
    p.add_argument("--config", type=Path, help="the settings JSON of `train --config` (its `analysis` is used)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--scheduler", help="Dask scheduler address (tcp://host:port) or 'local'")
    p.add_argument("--cache", type=Path, help="cache folder (default: .dpet-cache beside the manifest, as train)")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any case failed")
    p.add_argument("--label-column", default="label", metavar="NAME",
                   help="the outcome column train will use: its labelled train cases learn the habitats, as train's do")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("train", help="train every pathway and the fusions on the manifest's train split")
    p.add_argument("manifest", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", type=Path, help="JSON file of protocol settings (see README)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--cache", type=Path)
    p.add_argument("--fast", action="store_true", help="small CNN preset and fewer epochs (CPU)")
    p.add_argument("--label-column", default="label", metavar="NAME",
                   help="the manifest column holding the 0/1 outcome (default: label); the bundle records it, and "
                        "neither it nor a label column is used as a clinical predictor")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a bundle on the manifest's test splits; writes metrics.json + HTML")
    p.add_argument("bundle", type=Path)
    p.add_argument("manifest", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--cache", type=Path)
    p.add_argument("--label-column", metavar="NAME",
                   help="the outcome column; default and only accepted value: the one the bundle was trained on")
    p.add_argument("--partitions", type=int, nargs="?", const=10, default=0, metavar="N",
                   help="also re-fit the bundle's settings on N (default 10) independent stratified train/test "
                        "partitions of the labelled cases (all splits pooled) and report each model's AUC, balanced "
                        "accuracy, sensitivity and specificity as mean and SD (metrics.json 'partitions'). This "
                        "re-trains every model N times: bundles trained with \"deep\": false are much faster (no "
                        "CNN)")
    p.add_argument("--partition-test-fraction", type=float, metavar="F",
                   help="the test part's share of each partition (default: the manifest's held-out share, or "
                        "0.3 where every labelled case is in split train)")
    p.add_argument("--partition-habitats", choices=["refit", "bundle"], default="refit",
                   help="population-habitat centroids per partition: learned on its training part (default; the "
                        "cohort's features are re-extracted per partition) or the bundle's (no re-extraction; they "
                        "read no label but saw the bundle's training cases)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="predict one patient; JSON to stdout, images to --out",
                       epilog="Other modalities the bundle was trained with: --image-<modality> PATH --mask-<modality> "
                              "PATH (e.g. --image-ct ct.nii.gz --mask-ct ct_mask.nii.gz); those not given are listed "
                              "in the result's missing_modalities.")
    p.add_argument("bundle", type=Path)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--mask", type=Path)
    p.add_argument("--seed", type=_floats, help="x,y,z in mm (LPS) to segment from")
    p.add_argument("--clinical", nargs="*", default=[], metavar="NAME=VALUE",
                   help="clinical values by manifest column (missing ones are imputed from training data)")
    p.add_argument("--site", help="the patient's centre, for a model that harmonises by site (one of its training "
                                  "sites)")
    p.add_argument("--body-mask", type=Path, help="the patient's body or breast mask on the PET's grid, for a model "
                   "trained with a manifest body_mask column (the peritumoural shell stays inside it)")
    p.add_argument("--out", type=Path)
    p.add_argument("--dicom-out", type=Path, help="folder for DICOM SEG (tumour, uptake subregions), SR (TID 1500 "
                   "measurements and probabilities) and Grad-CAM parametric map; --image must be a DICOM PET")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("report", help="rebuild the HTML report of an evaluation folder")
    p.add_argument("report_dir", type=Path)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("chain", help="add a bundle's probability (out-of-fold for its training cases) to a manifest as "
                       "a clinical column for a model of another endpoint")
    p.add_argument("bundle", type=Path, help="the upstream bundle (e.g. trained with --label-column her2)")
    p.add_argument("manifest", type=Path, help="the downstream manifest")
    p.add_argument("--out", type=Path, required=True, help="the new manifest (absolute paths; sidecar .chain.json)")
    p.add_argument("--column", default="her2_prob", help="name of the new column (default: her2_prob)")
    p.add_argument("--model", default="fusion_decision", help="the bundle's model (default: fusion_decision)")
    p.add_argument("--label-column", default="label", metavar="NAME",
                   help="the downstream outcome column (default: label); a bundle trained on it is refused")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--cache", type=Path, help="cache folder (default: .dpet-cache beside the manifest)")
    p.set_defaults(func=_cmd_chain)

    p = sub.add_parser("demo", help="synthetic cohort -> features -> train -> evaluate -> report")
    p.add_argument("--out", type=Path, default=Path("demo_output"))
    p.add_argument("--n", type=int, default=147)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="fewer cases' worth of work (for tests)")
    p.set_defaults(func=_cmd_demo)
    return parser


_MODALITY_OPTION = re.compile(rf"^--(image|mask)-({MODALITY_NAME})(?:=(.*))?$")


def _modality_paths(extra: list[str]) -> tuple[dict[str, tuple[Path, Path]], list[str]]:
    """predict's ``--image-<modality> PATH`` / ``--mask-<modality> PATH`` options as {modality: (image, mask)},
    and the arguments that are none of them."""
    given: dict[str, dict[str, Path]] = {}
    rest, items = [], iter(extra)
    for item in items:
        match = _MODALITY_OPTION.match(item)
        if not match:
            rest.append(item)
            continue
        value = match.group(3) if match.group(3) is not None else next(items, None)
        if not value or value.startswith("--"):
            raise DPETError(f"{item} needs a path")
        given.setdefault(match.group(2), {})[match.group(1)] = Path(value)
    unpaired = [f"--{'mask' if 'image' in paths else 'image'}-{name}" for name, paths in given.items()
                if len(paths) != 2]
    if unpaired:
        raise DPETError(f"give each modality's image and its tumour mask: missing {', '.join(unpaired)}")
    return {name: (paths["image"], paths["mask"]) for name, paths in given.items()}, rest


_POINT_OPTIONS = ("--seed", "--box")
_NEGATIVE_VALUE = re.compile(r"-\.?\d")


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``--seed -12.5,30,4`` as ``--seed=-12.5,30,4``: argparse takes a value that starts with '-' and is not one
    plain number for an option ("expected one argument"), and LPS coordinates are often negative."""
    out: list[str] = []
    for item in argv:
        if out and out[-1] in _POINT_OPTIONS and _NEGATIVE_VALUE.match(item):
            out[-1] = f"{out[-1]}={item}"
        else:
            out.append(item)
    return out


def _attach_log_handler() -> None:
    """The library's log messages (INFO and above) on stderr, one line each, once per process."""
    package = logging.getLogger("DPETResponseLib")
    if not any(getattr(h, "dpet_cli", False) for h in package.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[dpet-response] %(message)s"))
        handler.dpet_cli = True
        package.addHandler(handler)
    package.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(_attach_negative_values(argv))
    _attach_log_handler()
    try:
        args.modalities, extra = _modality_paths(extra) if args.command == "predict" else ({}, extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return args.func(args)
    except DPETError as err:
        print(f"dpet-response {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dpet-response {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
