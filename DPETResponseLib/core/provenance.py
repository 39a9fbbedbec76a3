"""What produced a result: the installed versions of the packages the library rests on."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

#: Recorded packages: name -> the distributions that may provide it (the first installed one is recorded).
PACKAGES = {
    "DPETResponse": ("DPETResponse",), "numpy": ("numpy",), "scipy": ("scipy",), "pandas": ("pandas",),
    "scikit-learn": ("scikit-learn",), "SimpleITK": ("SimpleITK",), "pydicom": ("pydicom",),
    "pyradiomics": ("pyradiomics-bhklab", "pyradiomics"), "PyWavelets": ("PyWavelets",),
    "xgboost": ("xgboost-cpu", "xgboost"), "torch": ("torch",), "monai": ("monai",), "skops": ("skops",),
    "safetensors": ("safetensors",), "shap": ("shap",),
}


def package_versions(names=None) -> dict[str, str | None]:
    """Installed version of each package in ``names`` (keys of `PACKAGES`; default all) and of Python; None where
    a package is not installed."""
    from .. import __version__

    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in names or PACKAGES:
        found[name] = None
        for dist in PACKAGES[name]:
            try:
                found[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    if "DPETResponse" in found:
        found["DPETResponse"] = found["DPETResponse"] or __version__
    return found


def module_distribution(module) -> tuple[str, str] | None:
    """(name, version) of the installed distribution that holds the imported package ``module``: where several
    provide the same import name (SlicerRadiomics' pyradiomics beside a pip-installed one), the one Python imported.
    None where no distribution in the package's folder lists it (a source tree on the path)."""
    init = Path(module.__file__).resolve()
    top = module.__name__.split(".")[0]
    for dist in metadata.distributions(path=[str(init.parents[1])]):
        for path in dist.files or []:
            if path.parts == (top, "__init__.py") and Path(dist.locate_file(path)).resolve() == init:
                return dist.metadata["Name"], dist.version
    return None
