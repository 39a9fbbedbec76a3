"""The screenshot script's off-screen Slicer rendering (Resources/Screenshots/render_screenshots.py) on a tiny scene.

Needs an OpenGL context without a window (EGL, or an X display); skipped, saying why, where none can be made.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer")

SCRIPT = Path(__file__).resolve().parents[1] / "Resources" / "Screenshots" / "render_screenshots.py"
GREEN = (0.0, 1.0, 0.0)
VIEW = 200  # px
FOV_MM = 100.0


def _script():
    spec = importlib.util.spec_from_file_location("render_screenshots", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # sets the EGL default before vtk is imported where DISPLAY is unset
    return module


@pytest.fixture(scope="module")
def shots():
    probe = ("import runpy, sys; runpy.run_path(sys.argv[1]); import vtk; w = vtk.vtkRenderWindow(); "
             "w.SetOffScreenRendering(1); w.SetSize(8, 8); w.Render(); sys.exit(0 if w.SupportsOpenGL() else 1)")
    done = subprocess.run([sys.executable, "-c", probe, str(SCRIPT)], capture_output=True, timeout=120)
    if done.returncode != 0:
        pytest.skip("no off-screen OpenGL context here (EGL or X): " + done.stderr.decode()[-300:])
    return _script()


def _scene(shots):
    """A 2 mm PET (SUV 1, shown mid-grey) with a 10-mm-radius sphere (SUV 10, white) at the centre, a small blob
    (SUV 10) 30 mm to the patient's right of it, the sphere as a green segment and a Grad-CAM-like map that is 0
    outside the sphere and 0.5 inside."""
    from DPETResponseLib import scene as S

    z, y, x = np.mgrid[:40, :40, :40]
    centre = np.array([19.5, 19.5, 19.5])
    sphere = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) * 4.0 <= 100.0
    blob = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - (centre[2] - 15)) ** 2) * 4.0 <= 9.0
    pet = np.where(sphere | blob, 10.0, 1.0).astype(np.float32)
    image = sitk.GetImageFromArray(pet)  # LPS: x (i) runs to the patient's left, so the blob is on the right
    image.SetSpacing((2.0, 2.0, 2.0))
    mask = sitk.GetImageFromArray(sphere.astype(np.uint8))
    mask.CopyInformation(image)
    cam = sitk.GetImageFromArray(np.where(sphere, 0.5, 0.0).astype(np.float32))
    cam.CopyInformation(image)
    scene = S.standalone_scene()
    app = shots.application_logic(scene)
    pet_node = S.sitk_to_volume_node(image, scene, name="PET")
    pet_node.GetDisplayNode().AutoWindowLevelOff()
    pet_node.GetDisplayNode().SetWindowLevelMinMax(-10.0, 10.0)  # SUV 1 mid-grey, 10 white
    segmentation = S.labelmap_to_segmentation(mask, scene, pet_node, {1: "Tumour"}, {1: GREEN})
    cam_node = S.heatmap_volume(cam, scene, pet_node)
    centre_ras = np.asarray(image.TransformContinuousIndexToPhysicalPoint(centre[::-1].tolist())) * [-1, -1, 1]
    return app, pet_node, segmentation, cam_node, centre_ras


def _render(shots, app, pet_node, foreground, centre_ras):
    view = shots.SliceView(app, "Red", "Axial", "R", "#F34A33", (VIEW, VIEW))
    view.show(pet_node, foreground, shots.GRADCAM_OPACITY)
    view.centre_on(centre_ras, FOV_MM / 2, [-1e9, 1e9] * 3)
    return view.image().astype(int)


def test_slice_view_composites_pet_and_segment_in_radiological_convention(shots):
    app, pet_node, _, _, centre_ras = _scene(shots)
    rgb = _render(shots, app, pet_node, None, centre_ras)
    px_per_mm = VIEW / FOV_MM
    c = VIEW // 2
    corner = rgb[30, 30]
    assert 120 < corner[0] < 160 and abs(corner[0] - corner[1]) <= 2 and abs(corner[1] - corner[2]) <= 2  # grey
    inside = rgb[c, c]
    # the segment's 50 % green fill over the white sphere (were the slice image drawn after the managers' actors, the
    # fill would blend over black: (0, 128, 0))
    assert inside[1] > 240 and 100 < inside[0] < 160 and 100 < inside[2] < 160

    def outline_near(angle):  # a pixel of the segment's pure colour within 5 px (voxel steps) of the sphere's edge
        for radius in np.arange(-5.0, 5.5, 0.5) + 10.0 * px_per_mm:
            p = rgb[c + round(radius * np.sin(angle)), c + round(radius * np.cos(angle))]
            if p[1] > 240 and p[0] < 30 and p[2] < 30:
                return True
        return False

    assert all(outline_near(angle) for angle in np.linspace(0, 2 * np.pi, 24, endpoint=False))
    right, left = rgb[c, c - round(30 * px_per_mm)], rgb[c, c + round(30 * px_per_mm)]
    assert right.mean() > left.mean() + 60  # patient's right (the blob) on screen left: radiological convention


def test_foreground_is_transparent_below_threshold(shots):
    app, pet_node, segmentation, cam_node, centre_ras = _scene(shots)
    segmentation.GetDisplayNode().SetVisibility(False)
    rgb = _render(shots, app, pet_node, cam_node, centre_ras)
    corner = rgb[30, 30]
    assert 120 < corner[0] < 160 and abs(corner[0] - corner[1]) <= 2 and abs(corner[1] - corner[2]) <= 2  # unchanged
    inside = rgb[VIEW // 2, VIEW // 2]
    assert inside.max() - inside.min() > 40  # the heat colour over the sphere, not grey


def test_table_cells_follow_slicer_table_view():
    from DPETResponseLib import scene as S

    script = _script()
    scene = S.standalone_scene()
    node = S.dict_to_table_node([{"model": "clinical", "pCR probability": 0.47712345},
                                 {"model": "deep", "pCR probability": float("nan")}], scene)
    headers, rows = script.table_cells(node)
    assert headers == ["A", "B"]
    assert rows == [["model", "pCR probability"], ["clinical", "0.477123"], ["deep", "nan"]]
