r"""Render the extension's screenshots headless from the MRML nodes a prediction makes.

Runs one prediction through the library, builds the real output nodes with ``DPETResponseLib.scene.show_prediction``
on a slicer-core scene, reads the arrays, geometry, colours and tables back from those nodes and draws them with
matplotlib:

- ``DPETResponse-1.png``: axial, coronal and sagittal slices through the tumour's SUVmax voxel: PET in grey, the
  segment outlines in the segment colours, Grad-CAM in the overlay's own colour table (transparent at or below the
  display node's lower threshold), in Slicer's default radiological convention (patient right on screen left);
- ``DPETResponse-2.png``: the prediction and PET-metrics table nodes next to the SHAP bar chart's table.

Usage (from the checkout, slicer-core installed)::

    .venv/bin/python Resources/Screenshots/render_screenshots.py --bundle BUNDLE --image PET.nii.gz --mask MASK.nii.gz

The committed PNGs came from::

    dpet-response synth /tmp/shots/cohort --n 40 --seed 0
    dpet-response train /tmp/shots/cohort/manifest.csv --out /tmp/shots/bundle --fast
    python Resources/Screenshots/render_screenshots.py --bundle /tmp/shots/bundle \
        --image /tmp/shots/cohort/images/DPET003_pet.nii.gz --mask /tmp/shots/cohort/masks/DPET003_mask.nii.gz \
        --clinical age=29 cT=2 cN=1 grade=2 ki67=53 regimen=TCHP hr_status=positive
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: Screen direction -> the RAS letter shown there, per view, as in Slicer's default slice views.
VIEW_LABELS = {
    "Axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
    "Coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
    "Sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
}
#: Overlay opacity of the Grad-CAM map, as the Slicer module sets it (foregroundOpacity=0.5).
GRADCAM_OPACITY = 0.5
#: Field of view around the tumour: its extent plus this margin on each side, at least MIN_HALF_FOV_MM from SUVmax.
MARGIN_MM = 15.0
MIN_HALF_FOV_MM = 25.0




def axis_aligned_lps(image: sitk.Image, interpolator) -> sitk.Image:
    """The image on a grid whose axes run L, P, S (identity direction), so that array slices are screen views.

    A signed axis permutation is reordered exactly (DICOMOrient); an oblique grid is resampled onto an axis-aligned
    grid covering it, as Slicer's slice views reslice it.
    """
    image = sitk.DICOMOrient(image, "LPS")
    if np.allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-6):
        return image
    corners = np.array([image.TransformContinuousIndexToPhysicalPoint([c * (s - 1) for c, s in zip(corner, image.GetSize())])
                        for corner in np.ndindex(2, 2, 2)])
    spacing = min(image.GetSpacing())
    low, high = corners.min(axis=0), corners.max(axis=0)
    size = [int(math.ceil(v)) + 1 for v in (high - low) / spacing]
    return sitk.Resample(image, size, sitk.Transform(), interpolator, low.tolist(), [spacing] * 3,
                         np.eye(3).ravel().tolist(), 0.0, image.GetPixelID())


def predict_into_scene(bundle, image_path, mask_path, clinical: dict | None = None):
    """Predict with the library, put the PET and every output node into a new scene; returns (pet node, nodes)."""
    from DPETResponseLib import scene as S
    from DPETResponseLib.io import read_pet
    from DPETResponseLib.protocol import predict_files

    result = predict_files(bundle, image_path, mask=mask_path, clinical=clinical)
    scene = S.standalone_scene()
    pet_node = S.sitk_to_volume_node(read_pet(image_path, case=result.case_id), scene, name=result.case_id)
    nodes = S.show_prediction(result, scene, pet_node)
    return pet_node, nodes


def colormap_of(display_node):
    """The display node's colour table as a matplotlib colormap over its window (0..1 for Grad-CAM)."""
    from matplotlib.colors import ListedColormap

    lookup = display_node.GetColorNode().GetScalarsToColors()
    low, high = lookup.GetRange()
    rgb = [0.0, 0.0, 0.0]
    colours = []
    for value in np.linspace(low, high, 256):
        lookup.GetColor(value, rgb)
        colours.append(tuple(rgb))
    return ListedColormap(colours, name=display_node.GetColorNode().GetName())


def read_nodes(pet_node, nodes) -> dict:
    """Arrays (axis-aligned LPS), segment names/colours and display settings, as the nodes hold them."""
    from DPETResponseLib import scene as S

    pet = S.volume_node_to_sitk(pet_node)
    segmentation_node = nodes["segmentation"]
    segmentation = segmentation_node.GetSegmentation()
    segments = []
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        # one segment at a time: Tumour overlaps its subregions, a joint labelmap would hide it
        mask = S.segmentation_to_labelmap(segmentation_node, pet_node, segment_id=segment_id)
        segments.append({"name": segment.GetName(), "color": tuple(segment.GetColor()),
                         "mask": sitk.GetArrayFromImage(axis_aligned_lps(mask, sitk.sitkNearestNeighbor))})
    out = {"pet": axis_aligned_lps(pet, sitk.sitkLinear), "segments": segments, "gradcam": None}
    if "gradcam" in nodes:
        cam_node = nodes["gradcam"]
        display = cam_node.GetDisplayNode()
        out["gradcam"] = sitk.GetArrayFromImage(axis_aligned_lps(S.volume_node_to_sitk(cam_node), sitk.sitkLinear))
        out["gradcam_display"] = {"cmap": colormap_of(display), "vmin": display.GetWindowLevelMin(),
                                  "vmax": display.GetWindowLevelMax(), "below": display.GetLowerThreshold(),
                                  "name": display.GetColorNode().GetName()}
    return out


def table_rows(table_node) -> list[dict]:
    """A table node's rows as dicts (numbers for numeric columns, text otherwise)."""
    table = table_node.GetTable()
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c in range(table.GetNumberOfColumns()):
            column = table.GetColumn(c)
            value = column.GetValue(r)
            row[column.GetName()] = float(value) if column.IsNumeric() else str(value)
        rows.append(row)
    return rows


def _views(pet: sitk.Image, tumour: np.ndarray):
    """Per view through the tumour's SUVmax voxel: (name, 2D slicer of a (k, j, i) array that puts screen-up rows
    last and screen-right columns last, (column, row) spacing in mm, (column, row) of the SUVmax voxel)."""
    array = sitk.GetArrayViewFromImage(pet)
    k, j, i = np.unravel_index(np.argmax(np.where(tumour > 0, array, -np.inf)), array.shape)
    sx, sy, sz = pet.GetSpacing()
    n_j = array.shape[1]
    # axis-aligned LPS: i runs to the patient's left (screen right in all but sagittal), j to posterior, k to
    # superior. Rows are flipped where needed so that every 2D array is drawn with origin="lower" (row 0 at bottom).
    return [
        ("Axial", lambda a: a[k, ::-1, :], (sx, sy), (i, n_j - 1 - j)),  # anterior (small j) up
        ("Coronal", lambda a: a[:, j, :], (sx, sz), (i, k)),  # superior up
        ("Sagittal", lambda a: a[:, :, i], (sy, sz), (j, k)),  # anterior (small j) on the left, superior up
    ]


def _half_fov_mm(pet: sitk.Image, tumour: np.ndarray, suvmax_kji) -> float:
    """Half the side of the square field of view: the tumour's farthest voxel from SUVmax plus a margin."""
    spacing_kji = np.asarray(pet.GetSpacing())[::-1]
    offsets = (np.argwhere(tumour > 0) - np.asarray(suvmax_kji)) * spacing_kji
    return max(MIN_HALF_FOV_MM, float(np.abs(offsets).max()) + MARGIN_MM)


def _window(low: float, high: float, half: float) -> tuple[float, float]:
    """A 2*half mm window around 0 (the SUVmax voxel), shifted to stay inside the image [low, high] if it fits."""
    if high - low <= 2 * half:
        centre = (low + high) / 2
    else:
        centre = min(max(0.0, low + half), high - half)
    return centre - half, centre + half


def _scale_bar(ax, length_mm=10.0):
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    x = x0 + 0.06 * (x1 - x0)
    y = y0 + 0.06 * (y1 - y0)
    ax.plot([x, x + length_mm], [y, y], color="white", linewidth=3, solid_capstyle="butt")
    ax.text(x + length_mm / 2, y + 0.02 * (y1 - y0), f"{length_mm:g} mm", color="white", ha="center", va="bottom",
            fontsize=10)


def _orientation_labels(ax, labels):
    style = {"color": "#ffd54a", "fontsize": 13, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.02, 0.5, labels["left"], ha="left", va="center", **style)
    ax.text(0.98, 0.5, labels["right"], ha="right", va="center", **style)
    ax.text(0.5, 0.98, labels["top"], ha="center", va="top", **style)
    ax.text(0.5, 0.02, labels["bottom"], ha="center", va="bottom", **style)


def render_slices(data: dict, case_id: str, suvmax: float, path: Path) -> None:
    """DPETResponse-1.png: three orthogonal views through SUVmax with outlines and Grad-CAM."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    pet = data["pet"]
    array = sitk.GetArrayFromImage(pet)
    tumour = next(s["mask"] for s in data["segments"] if s["name"] == "Tumour")
    suvmax_kji = np.unravel_index(np.argmax(np.where(tumour > 0, array, -np.inf)), array.shape)
    half = _half_fov_mm(pet, tumour, suvmax_kji)
    fig = Figure(figsize=(14.4, 4.6), dpi=100, facecolor="black")
    cam_display = data.get("gradcam_display")
    cam_image = None
    for n, (name, cut, (sc, sr), (c0, r0)) in enumerate(_views(pet, tumour)):
        ax = fig.add_axes((0.008 + n * 0.272, 0.02, 0.265, 0.265 * 14.4 / 4.6))
        pet2d = cut(array)
        n_rows, n_cols = pet2d.shape
        # mm from the SUVmax voxel's centre, outer pixel edges (as imshow's extent wants them)
        extent = ((-0.5 - c0) * sc, (n_cols - 0.5 - c0) * sc, (-0.5 - r0) * sr, (n_rows - 0.5 - r0) * sr)
        style = {"origin": "lower", "extent": extent}
        ax.set_facecolor("black")
        ax.imshow(pet2d, cmap="gray", vmin=0.0, vmax=suvmax, interpolation="bilinear", **style)
        if data["gradcam"] is not None:
            cam = np.ma.masked_less_equal(cut(data["gradcam"]), cam_display["below"])
            cam_image = ax.imshow(cam, cmap=cam_display["cmap"], vmin=cam_display["vmin"], vmax=cam_display["vmax"],
                                  alpha=GRADCAM_OPACITY, interpolation="bilinear", **style)
        for segment in data["segments"]:
            mask2d = cut(segment["mask"])
            if mask2d.any():
                # the whole tumour drawn wider underneath, so its edge shows around the subregions it contains
                width = 4.5 if segment["name"] == "Tumour" else 1.8
                ax.contour(mask2d.astype(float), levels=[0.5], colors=[segment["color"]], linewidths=width, **style)
        ax.set_xlim(*_window(extent[0], extent[1], half))
        ax.set_ylim(*_window(extent[2], extent[3], half))
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("#555555")
        ax.text(0.02, 0.98, name, color="white", fontsize=13, ha="left", va="top", transform=ax.transAxes)
        _scale_bar(ax)
        _orientation_labels(ax, VIEW_LABELS[name])
    handles = [Line2D([], [], color=s["color"], linewidth=3, label=s["name"]) for s in data["segments"]]
    if cam_image is not None:
        handles.append(Patch(facecolor=cam_display["cmap"](0.75), alpha=GRADCAM_OPACITY,
                             label=f"Grad-CAM > {cam_display['below']:g} (50%)"))
    legend = fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.822, 0.84), frameon=False, fontsize=11)
    for text in legend.get_texts():
        text.set_color("white")
    if cam_image is not None:
        cax = fig.add_axes((0.835, 0.06, 0.016, 0.4))
        bar = fig.colorbar(cam_image, cax=cax)
        bar.solids.set_alpha(1.0)
        bar.set_label("Grad-CAM", color="white", fontsize=11)
        bar.ax.tick_params(colors="white")
    fig.suptitle(f"{case_id}: through the tumour's SUVmax voxel; PET 0-{suvmax:.1f} SUV; "
                 "radiological convention (patient's right on screen left)", color="white", fontsize=12, y=0.97)
    _save(fig, path)


def render_tables(prediction: list[dict], metrics: list[dict], shap_title: str, shap: list[dict], path: Path) -> None:
    """DPETResponse-2.png: the prediction and PET-metrics tables next to the SHAP bar chart."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14.4, 7.2), dpi=100, facecolor="white")
    top, bottom, gap = 0.87, 0.04, 0.09  # gap: room for the second table's title
    row_height = min(0.05, (top - bottom - gap) / (len(prediction) + len(metrics) + 2))
    height = row_height * (len(prediction) + 1)
    _draw_table(fig.add_axes((0.02, top - height, 0.44, height)), "pCR prediction per model",
                ["model", "pCR probability", "threshold", "decision"],
                [[r["model"], f"{r['pCR probability']:.3f}",
                  "" if math.isnan(r["threshold"]) else f"{r['threshold']:.3f}", r["decision"]] for r in prediction],
                highlight=[r["decision"] == "pCR" for r in prediction], col_widths=(0.34, 0.24, 0.2, 0.22))
    top -= height + gap
    height = row_height * (len(metrics) + 1)
    units = {"pet_MTV": "ml", "pet_TLG": "SUV·ml"}
    _draw_table(fig.add_axes((0.02, top - height, 0.44, height)), "PET metrics of the tumour", ["metric", "value"],
                [[r["metric"].removeprefix("pet_"), f"{r['value']:.2f} {units.get(r['metric'], '')}".strip()]
                 for r in metrics])
    ax = fig.add_axes((0.64, 0.1, 0.34, 0.77))
    names = [r["name"] for r in shap][::-1]
    values = np.array([r["value"] for r in shap][::-1])
    ax.barh(range(len(values)), values, height=0.6, color=np.where(values >= 0, "#d62728", "#1f77b4"))
    ax.set_yticks(range(len(values)), names, fontsize=9)
    for y, value in enumerate(values):
        ax.annotate(f"{value:+.3f}", (value, y), xytext=(4 if value >= 0 else -4, 0), textcoords="offset points",
                    ha="left" if value >= 0 else "right", va="center", fontsize=9)
    ax.margins(x=0.15)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("SHAP value (log-odds): > 0 towards pCR, < 0 away from it")
    ax.set_title(shap_title, fontsize=12, loc="right")
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle("pCR probability per model (decision at the bundle's thresholds), PET metrics, and the features "
                 "that moved this patient's prediction", fontsize=12, y=0.97)
    _save(fig, path)


def _draw_table(ax, title, header, cells, highlight=None, col_widths=None):
    ax.axis("off")
    ax.set_title(title, fontsize=12, loc="left")
    table = ax.table(cellText=cells, colLabels=header, colWidths=col_widths, bbox=(0.0, 0.0, 1.0, 1.0),
                     cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(11)
    for (row, _), cell in table.get_celld().items():
        if row == 0:
            cell.set_facecolor("#e6e6e6")
            cell.set_text_props(fontweight="bold")
        elif highlight is not None and highlight[row - 1]:
            cell.set_facecolor("#e3f2e1")


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100, facecolor=fig.get_facecolor())
    os.replace(tmp, path)


def _clinical_pair(item: str) -> tuple[str, object]:
    name, sep, value = item.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {item!r}")
    try:
        return name, float(value)
    except ValueError:
        return name, value


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="model bundle folder (dpet-response train --out)")
    parser.add_argument("--image", required=True, help="PET image in SUV (NIfTI/NRRD)")
    parser.add_argument("--mask", required=True, help="tumour mask on the PET's grid")
    parser.add_argument("--clinical", nargs="*", default=[], type=_clinical_pair, metavar="NAME=VALUE",
                        help="the patient's clinical values by manifest column (as `dpet-response predict`)")
    parser.add_argument("--out-dir", default=Path(__file__).resolve().parent, type=Path,
                        help="where the PNGs go (default: Resources/Screenshots)")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    pet_node, nodes = predict_into_scene(args.bundle, args.image, args.mask, dict(args.clinical))
    case_id = pet_node.GetName()
    data = read_nodes(pet_node, nodes)
    metrics = table_rows(nodes["metrics_table"])
    suvmax = next(r["value"] for r in metrics if r["metric"] == "pet_SUVmax")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    render_slices(data, case_id, suvmax, args.out_dir / "DPETResponse-1.png")
    chart = nodes["shap_chart"]
    render_tables(table_rows(nodes["prediction_table"]), metrics, chart.GetTitle(),
                  table_rows(chart.GetPlotSeriesNode().GetTableNode()), args.out_dir / "DPETResponse-2.png")
    print(f"wrote {args.out_dir / 'DPETResponse-1.png'} and {args.out_dir / 'DPETResponse-2.png'}")


if __name__ == "__main__":
    main()
