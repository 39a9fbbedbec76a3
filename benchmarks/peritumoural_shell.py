"""The peritumoural shell on spheres: its voxel volume against the analytic shell 4/3 pi ((r + w)^3 - r^3), and
against the analytic shell sampled at the same voxel centres (what a method that knew the sphere would give), on
isotropic and anisotropic grids and two grid phases. The figures in `features/peritumoural.py` come from here.

    .venv/bin/python benchmarks/peritumoural_shell.py
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from DPETResponseLib.features.peritumoural import peritumoural_shell

GRIDS = [(0.5, 0.5, 0.5), (1.0, 1.0, 1.0), (0.4, 0.4, 1.0), (0.6, 0.6, 1.5), (0.8, 0.8, 2.0), (2.0, 2.0, 2.0)]
SPHERES = [(15.0, 5.0), (10.0, 5.0), (15.0, 2.0)]  # tumour radius, shell width (mm)


def sphere(spacing, radius_mm: float, margin_mm: float, phase: float):
    """A ball of ``radius_mm`` centred at the physical origin, on a grid shifted by ``phase`` voxels; its mask and
    each voxel centre's distance to the centre."""
    size = [int(np.ceil(2 * (radius_mm + margin_mm) / s)) for s in spacing]
    origin = [-(n - 1) * s / 2 + phase * s for n, s in zip(size, spacing)]
    axes = [np.arange(n) * s + o for n, s, o in zip(size[::-1], spacing[::-1], origin[::-1])]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    r = np.sqrt(xx**2 + yy**2 + zz**2)
    mask = sitk.GetImageFromArray((r <= radius_mm).astype(np.uint8))
    mask.SetSpacing(spacing)
    mask.SetOrigin(origin)
    return mask, r


def main() -> None:
    print(f"{'grid (mm)':>18} {'r':>5} {'w':>4} {'phase':>5} {'shell/analytic':>15} {'sampled/analytic':>17}")
    for spacing in GRIDS:
        for radius, width in SPHERES:
            for phase in (0.0, 0.37):
                mask, r = sphere(spacing, radius, width + 4, phase)
                voxel = float(np.prod(spacing))
                analytic = 4 / 3 * np.pi * ((radius + width) ** 3 - radius**3)
                shell = sitk.GetArrayFromImage(peritumoural_shell(mask, width)).sum() * voxel
                sampled = ((r > radius) & (r <= radius + width)).sum() * voxel
                print(f"{str(spacing):>18} {radius:5.1f} {width:4.1f} {phase:5.2f} {shell / analytic - 1:+15.2%} "
                      f"{sampled / analytic - 1:+17.2%}")


if __name__ == "__main__":
    main()
