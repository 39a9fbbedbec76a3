"""The peritumoural region: a shell of a given width (mm) outside the tumour mask, on the PET's grid.

The shell is the tumour dilated by ``width_mm`` in physical units, less the tumour: the voxels outside the mask
whose centre lies within ``width_mm`` of a tumour voxel's centre (SimpleITK's signed Maurer distance map with the
image spacing, so the width holds on anisotropic grids). Measured on spheres (`benchmarks/peritumoural_shell.py`),
a 5 mm shell around a 15 mm radius tumour has a voxel volume 2 % below the analytic shell at 0.5 mm isotropic,
2.3-2.5 % at 0.4 x 0.4 x 1 mm, 4-4.5 % at 1 mm and 7.5-8 % at 0.8 x 0.8 x 2 mm (more for thinner shells): the
tumour's outermost voxel centres lie inside its true surface, so the dilation reaches less far than the width from
that surface. Voxel-box and interpolated-surface variants measured there were biased as much the other way.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..core.errors import ConfigError, InputError
from ..io.geometry import require_same_grid


def peritumoural_shell(mask: sitk.Image, width_mm: float, body: sitk.Image | None = None,
                       case: str | None = None) -> sitk.Image:
    """The shell of ``width_mm`` around the tumour in ``mask`` (UInt8 0/1 on the mask's grid, so clipped to the
    image), limited to ``body`` (a 0/1 mask on the same grid, e.g. the breast) when given."""
    if not width_mm > 0:
        raise ConfigError(f"the peritumoural width must be positive (mm), not {width_mm!r}")
    tumour = sitk.Cast(mask != 0, sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(tumour).any():
        raise InputError("the tumour mask is empty: no peritumoural region", case=case)
    distance = sitk.SignedMaurerDistanceMap(tumour, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    shell = sitk.Cast((distance > 0) & (distance <= width_mm), sitk.sitkUInt8)
    if body is not None:
        require_same_grid(mask, body, what="body mask", case=case)
        shell = shell & sitk.Cast(body != 0, sitk.sitkUInt8)
    if not np.any(sitk.GetArrayViewFromImage(shell)):
        raise InputError(f"the {width_mm:g} mm peritumoural shell is empty (the tumour fills the image or the body "
                         "mask)", case=case)
    shell.CopyInformation(mask)
    return shell
