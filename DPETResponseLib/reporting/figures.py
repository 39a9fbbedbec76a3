"""The figures of the reports: SHAP summaries and waterfalls, fusion shares, Grad-CAM montages, and the one
function that saves them all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import InputError
from ..core.files import atomic_write
from ..io.geometry import require_same_grid
from .evaluation import significant

DPI = 120


# Figures: matplotlib's object-oriented Figure (no pyplot): no global state and no GUI backend, so the same code
# draws off-screen inside 3D Slicer, where shap's pyplot-based plots would use the application's backend.
def save_figure(fig, path) -> Path:
    """Write ``fig`` atomically, in the format of ``path``'s suffix (PNG by default), at the reports' resolution."""
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def plot_shap_summary(values: pd.DataFrame, X: pd.DataFrame, path, max_features: int = 15) -> list[str]:
    """Beeswarm of SHAP values (one row per feature, most important on top, dots coloured by the feature's
    value, grey where unknown). Returns the features drawn, most important first."""
    from matplotlib import cm, colormaps
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    if values.empty:
        raise InputError("plot_shap_summary: no SHAP values to draw")
    order = list(values.abs().mean(axis=0).sort_values(ascending=False, kind="stable").index[:max_features])
    data = X.reindex(index=values.index, columns=order)
    fig = Figure(figsize=(7, 0.45 * len(order) + 1.5))
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    cmap = colormaps["coolwarm"]
    for row, feature in enumerate(order):
        y = len(order) - 1 - row
        v = values[feature].to_numpy(float)
        x = pd.to_numeric(data[feature], errors="coerce").to_numpy(float)
        known = ~np.isnan(x)
        lo, hi = (np.percentile(x[known], [5, 95]) if known.any() else (0.0, 1.0))
        colours = np.where(known[:, None], cmap(Normalize(lo, hi if hi > lo else lo + 1)(np.nan_to_num(x))),
                           (0.6, 0.6, 0.6, 1.0))
        ax.scatter(v, y + rng.uniform(-0.3, 0.3, len(v)), c=colours, s=12, linewidths=0)
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_yticks(range(len(order)), list(reversed(order)), fontsize=8)
    ax.set_xlabel("SHAP value (log-odds of pCR)")
    fig.colorbar(cm.ScalarMappable(norm=Normalize(0, 1), cmap=cmap), ax=ax, ticks=[0, 1],
                 label="feature value").ax.set_yticklabels(["low", "high"])
    save_figure(fig, path)
    return order


def plot_shap_waterfall(values_row: pd.Series, base_value: float, path, max_features: int = 10) -> float:
    """Waterfall of one case: from the base value, each feature's SHAP value (largest |value| first, the rest
    summed), ending at the case's log-odds, which is returned."""
    from matplotlib.figure import Figure

    row = values_row.astype(float)
    order = list(row.abs().sort_values(ascending=False, kind="stable").index)
    steps = [(f, row[f]) for f in order[:max_features]]
    if len(order) > max_features:
        steps.append((f"{len(order) - max_features} other features", float(row[order[max_features:]].sum())))
    fig = Figure(figsize=(7, 0.45 * len(steps) + 1.5))
    ax = fig.subplots()
    start = float(base_value)
    for i, (_name, v) in enumerate(steps):
        y = len(steps) - 1 - i
        ax.barh(y, v, left=start, color="#d62728" if v > 0 else "#1f77b4")
        ax.text(start + v, y, f" {v:+.2f}", va="center", ha="left" if v > 0 else "right", fontsize=8)
        start += v
    ax.axvline(float(base_value), color="0.5", lw=0.8, ls="--")
    ax.axvline(start, color="0.2", lw=0.8)
    ax.set_yticks(range(len(steps)), [name for name, _ in reversed(steps)], fontsize=8)
    ax.set_xlabel(f"log-odds of pCR (base {float(base_value):.2f} -> {start:.2f})")
    save_figure(fig, path)
    return start


def plot_contribution_shares(shares: dict[str, dict[str, float]], path) -> Path:
    """One stacked bar per fusion model: each input group's (or pathway's) share of its mean |SHAP|."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not shares:
        raise InputError("plot_contribution_shares: no shares to draw")
    groups = list(dict.fromkeys(g for s in shares.values() for g in s))
    colours = colormaps["tab10"]
    fig = Figure(figsize=(7, 0.6 * len(shares) + 1.6))
    ax = fig.subplots()
    for row, model_shares in enumerate(shares.values()):
        left = 0.0
        for i, group in enumerate(groups):
            share = model_shares.get(group, 0.0)
            ax.barh(row, share, left=left, color=colours(i % 10))
            if share >= 0.06:
                ax.text(left + share / 2, row, f"{share:.0%}", ha="center", va="center", fontsize=8)
            left += share
    ax.set_yticks(range(len(shares)), list(shares))
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of mean |SHAP| (log-odds of pCR)")
    handles = [Patch(color=colours(i % 10), label=g) for i, g in enumerate(groups)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=len(groups),
              fontsize=8, frameon=False)
    save_figure(fig, path)
    return Path(path)


def gradcam_montage(image, mask, cam, path, n_slices: int = 5, case: str | None = None) -> Path:
    """Axial slices through the tumour: PET in grey, the mask's contour, the Grad-CAM map as a heat overlay.

    ``image``, ``mask`` and ``cam`` are SimpleITK images on one grid. They are reoriented to LPS first, so every
    slice shows the patient's right on the left and anterior at the top (radiological convention) whatever the
    stored direction. ``n_slices`` evenly spaced slices span the tumour's axial extent. Writes a PNG to ``path``.
    """
    import SimpleITK as sitk
    from matplotlib.figure import Figure

    case = case or Path(path).stem
    for name, other in (("mask", mask), ("Grad-CAM", cam)):
        require_same_grid(image, other, what=name, case=case)
    pet, roi, heat = (sitk.GetArrayFromImage(sitk.DICOMOrient(im, "LPS")).astype(float) for im in (image, mask, cam))
    roi = roi > 0
    if not roi.any():
        raise InputError("the tumour mask is empty: no slice to show", case=case)
    spacing = sitk.DICOMOrient(image, "LPS").GetSpacing()
    zs = np.unique(np.nonzero(roi)[0])
    chosen = np.unique(zs[np.round(np.linspace(0, zs.size - 1, min(n_slices, zs.size))).astype(int)])
    _, rows, cols = np.nonzero(roi)
    margin_r = max(8, (rows.max() - rows.min() + 1) // 2)
    margin_c = max(8, (cols.max() - cols.min() + 1) // 2)
    r0, r1 = max(0, rows.min() - margin_r), min(pet.shape[1], rows.max() + margin_r + 1)
    c0, c1 = max(0, cols.min() - margin_c), min(pet.shape[2], cols.max() + margin_c + 1)
    pet, roi, heat = pet[:, r0:r1, c0:c1], roi[:, r0:r1, c0:c1], heat[:, r0:r1, c0:c1]
    vmax = float(np.percentile(pet[chosen], 99.5)) or 1.0
    top = float(np.nanmax(heat)) if np.isfinite(heat).any() and np.nanmax(heat) > 0 else 1.0
    heat = np.ma.masked_less(np.nan_to_num(heat / top), 0.1)  # leave the PET visible where the map is ~0

    fig = Figure(figsize=(2.6 * chosen.size + 0.8, 3.0))
    axes = fig.subplots(1, chosen.size, squeeze=False)[0]
    for ax, z in zip(axes, chosen):
        ax.imshow(pet[z], cmap="gray", vmin=0, vmax=vmax, aspect=spacing[1] / spacing[0], interpolation="nearest")
        shown = ax.imshow(heat[z], cmap="jet", vmin=0, vmax=1, alpha=0.45, aspect=spacing[1] / spacing[0],
                          interpolation="bilinear")
        if roi[z].any():
            ax.contour(roi[z].astype(float), levels=[0.5], colors="lime", linewidths=1.2)
        ax.set_title(f"slice {z}", fontsize=8)
        ax.set_axis_off()
    fig.colorbar(shown, ax=list(axes), fraction=0.02, pad=0.01, label="Grad-CAM (relative)")
    fig.suptitle(f"{case}: PET (grey, SUV 0-{vmax:.1f}), tumour contour (green), Grad-CAM (heat)", fontsize=9)
    return save_figure(fig, Path(path))


# ---------------------------------------------------------------------------------------------------- HTML


def plot_comparison_matrix(comparisons: list[dict], models: list[str], path, title: str, alpha: float) -> Path:
    """Paired comparisons of one split as a matrix: cell (row A, column B) is AUC(A) - AUC(B), coloured by the
    difference, with the paired DeLong p below it; cells with p < ``alpha`` are outlined."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if not comparisons:
        raise InputError("plot_comparison_matrix: no comparisons to draw")
    index = {m: i for i, m in enumerate(models)}
    diff = np.full((len(models), len(models)), np.nan)
    p_value = np.full_like(diff, np.nan)
    for c in comparisons:
        a, b = index[c["model_a"]], index[c["model_b"]]
        diff[a, b], diff[b, a] = c["diff"], -c["diff"]
        p_value[a, b] = p_value[b, a] = np.nan if c["p_value"] is None else c["p_value"]
    span = max(float(np.nanmax(np.abs(diff))), 0.05)
    size = 0.7 * len(models) + 2.2
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.subplots()
    shown = ax.imshow(diff, cmap="RdBu", vmin=-span, vmax=span)
    for a in range(len(models)):
        for b in range(len(models)):
            if np.isnan(diff[a, b]):
                continue
            p = p_value[a, b]
            p_text = "-" if np.isnan(p) else "<0.001" if p < 0.001 else f"{p:.2f}"
            ax.text(b, a, f"{diff[a, b]:+.2f}\np {p_text}", ha="center", va="center", fontsize=7,
                    fontweight="bold" if significant(p, alpha) else "normal",
                    color="white" if abs(diff[a, b]) > 0.6 * span else "black")
            if significant(p, alpha):
                ax.add_patch(Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, lw=1.6, ec="k"))
    ax.set_xticks(range(len(models)), models, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(models)), models, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(shown, ax=ax, fraction=0.04, pad=0.02, label="AUC(row) - AUC(column)")
    return save_figure(fig, path)
