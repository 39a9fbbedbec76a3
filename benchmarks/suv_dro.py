"""IBSI-SUV digital reference objects: min / median / max SUVbw inside each DRO's mask, as `read_pet` converts it.

Reads every ``DRO_*`` folder (``PT/`` series, ``mask/DRO_mask.nii.gz``) under the given folders, e.g. the shared
set (``../shared/data/suv_dro``) or the authors' full public set, and prints each DRO's values rounded to two
decimals, the conversion rule used, whether they equal the targets 0.20 / 1.00 / 4.00, and the count. A DRO that
cannot be read prints its error.

    .venv/bin/python benchmarks/suv_dro.py ../shared/data/suv_dro [MORE_FOLDERS ...]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from DPETResponseLib.core.errors import InputError
from DPETResponseLib.io.images import read_pet_with_provenance

TARGETS = (0.20, 1.00, 4.00)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    dros = sorted(d for folder in args.folders for d in folder.glob("DRO_*") if (d / "PT").is_dir())
    right = 0
    for dro in dros:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image, record = read_pet_with_provenance(dro / "PT")
        except InputError as err:
            print(f"{dro.name}: refused: {err}")
            continue
        inside = sitk.GetArrayFromImage(sitk.ReadImage(str(dro / "mask" / "DRO_mask.nii.gz"))) > 0
        values = sitk.GetArrayFromImage(image)[inside]
        stats = tuple(round(float(f(values)), 2) for f in (np.min, np.median, np.max))
        right += stats == TARGETS
        print(f"{dro.name}: {stats[0]:.2f} / {stats[1]:.2f} / {stats[2]:.2f} "
              f"({'right' if stats == TARGETS else 'WRONG'}; exact {float(values.min()):.4f} / "
              f"{float(np.median(values)):.4f} / {float(values.max()):.4f}) by {record['rule']}")
    print(f"{right} of {len(dros)} DROs give {' / '.join(f'{t:.2f}' for t in TARGETS)}")


if __name__ == "__main__":
    main()
