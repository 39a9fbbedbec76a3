"""The peritumoural shell's voxel volume against analytic shells, on isotropic and anisotropic grids: spheres
(4/3 pi ((r + w)^3 - r^3)) at two grid phases and rotated cubes (Steiner's formula, a^3 -> 6 a^2 w + 3 pi a w^2 +
4/3 pi w^3). Three ways to measure the width, side by side:

- centres: the voxels within the width of a tumour voxel centre (SimpleITK's Maurer distance: the mask dilated);
- midpoints: within the width of a midpoint between an inside and an outside voxel (the surface, unsmoothed);
- fitted: within the width of those midpoints moved onto local quadrics (what `peritumoural_shell` does).

The figures in `features/peritumoural.py`, DEVELOPERS.md and the README come from here.

    .venv/bin/python benchmarks/peritumoural_shell.py
"""

from __future__ import annotations

import time

import numpy as np
import SimpleITK as sitk

from DPETResponseLib.features.peritumoural import surface_midpoints, tumour_surface, voxels_within

GRIDS = [(0.5, 0.5, 0.5), (1.0, 1.0, 1.0), (0.4, 0.4, 1.0), (0.3, 0.3, 2.0), (0.6, 0.6, 1.5), (0.8, 0.8, 2.0)]
SPHERES = [(15.0, 5.0), (10.0, 5.0), (15.0, 2.0), (6.0, 5.0)]  # tumour radius, shell width (mm)
CUBES = [(20.0, 5.0), (12.0, 3.0)]  # side, shell width (mm)
CUBE_ANGLES = [(0.3, 0.5, 0.7), (0.9, 0.2, 1.3)]  # Euler angles (rad)


def _grid(spacing, half_extent_mm: float, phase: float):
    """Voxel centres (z, y, x arrays, mm) of a grid covering +-``half_extent_mm``, shifted by ``phase`` voxels."""
    size = [int(np.ceil(2 * half_extent_mm / s)) for s in spacing]
    origin = [-(n - 1) * s / 2 + phase * s for n, s in zip(size, spacing)]
    axes = [np.arange(n) * s + o for n, s, o in zip(size[::-1], spacing[::-1], origin[::-1])]
    return np.meshgrid(*axes, indexing="ij"), origin


def _mask(inside: np.ndarray, spacing, origin) -> sitk.Image:
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.SetSpacing(spacing)
    mask.SetOrigin(origin)
    return mask


def sphere(spacing, radius_mm: float, margin_mm: float, phase: float):
    """A ball of ``radius_mm`` centred at the physical origin, on a grid shifted by ``phase`` voxels; its mask and
    each voxel centre's distance to the centre."""
    (zz, yy, xx), origin = _grid(spacing, radius_mm + margin_mm, phase)
    r = np.sqrt(xx**2 + yy**2 + zz**2)
    return _mask(r <= radius_mm, spacing, origin), r


def cube(spacing, side_mm: float, margin_mm: float, angles, phase: float = 0.2) -> sitk.Image:
    """A cube of ``side_mm`` centred at the origin, rotated by the Euler ``angles``."""
    (zz, yy, xx), origin = _grid(spacing, side_mm * np.sqrt(3) / 2 + margin_mm, phase)
    rotation = np.array(sitk.Euler3DTransform((0, 0, 0), *angles).GetMatrix()).reshape(3, 3)
    local = np.stack([xx, yy, zz], -1) @ rotation.T
    return _mask(np.all(np.abs(local) <= side_mm / 2, -1), spacing, origin)


def shell_volumes(mask: sitk.Image, width: float) -> dict[str, float]:
    """The shell's volume (mm^3) by each of the three rules."""
    tumour = sitk.GetArrayFromImage(mask) != 0
    spacing = np.array(mask.GetSpacing())[::-1]
    centre_distance = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))
    shells = {"centres": (centre_distance > 0) & (centre_distance <= width),
              "midpoints": voxels_within(mask, surface_midpoints(tumour, spacing), width),
              "fitted": voxels_within(mask, tumour_surface(tumour, spacing), width)}
    return {name: float(np.count_nonzero(shell)) * float(np.prod(spacing)) for name, shell in shells.items()}


def main() -> None:
    print(f"{'grid (mm)':>17} {'shape':>22} {'centres':>8} {'midpoints':>10} {'fitted':>8}   (volume / analytic - 1)")
    errors = {"sphere": [], "cube": []}
    start = time.perf_counter()
    for spacing in GRIDS:
        cases = [(f"sphere r={r:g} w={w:g} ph={phase:g}", "sphere", sphere(spacing, r, w + 4, phase)[0], w,
                  4 / 3 * np.pi * ((r + w) ** 3 - r**3)) for r, w in SPHERES for phase in (0.0, 0.37)]
        cases += [(f"cube a={a:g} w={w:g} #{i}", "cube", cube(spacing, a, w + 4, angles), w,
                   6 * a * a * w + 3 * np.pi * a * w * w + 4 / 3 * np.pi * w**3)
                  for a, w in CUBES for i, angles in enumerate(CUBE_ANGLES)]
        for label, kind, mask, width, analytic in cases:
            ratio = {k: v / analytic - 1 for k, v in shell_volumes(mask, width).items()}
            errors[kind].append(ratio)
            print(f"{str(spacing):>17} {label:>22} {ratio['centres']:+8.1%} {ratio['midpoints']:+10.1%} "
                  f"{ratio['fitted']:+8.1%}")
    print(f"\nlargest |error| over {len(GRIDS)} grids ({time.perf_counter() - start:.0f} s):")
    for kind, rows in errors.items():
        print(f"  {kind + 's':>8}: " + "  ".join(f"{k} {max(abs(r[k]) for r in rows):.1%}" for k in rows[0]))
    anisotropic = [r for r, s in zip(errors["sphere"], np.repeat(GRIDS, 2 * len(SPHERES), axis=0)) if len(set(s)) > 1]
    print("  spheres on the anisotropic grids: " + "  ".join(
        f"{k} {max(abs(r[k]) for r in anisotropic):.1%}" for k in anisotropic[0]))


if __name__ == "__main__":
    main()
