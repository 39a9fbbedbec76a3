"""The HTML report, metrics.json/predictions.csv round trips, figure files and the Grad-CAM montage."""

import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from browser import CHROMIUM, browser_check
from matplotlib import image as mpimg

from DPETResponseLib.core.errors import InputError
from DPETResponseLib.reporting import evaluation as ev
from DPETResponseLib.reporting.checklist import FILLED, PARTLY, TO_COMPLETE, TRIPOD_AI, build_checklist
from DPETResponseLib.reporting.figures import gradcam_montage
from DPETResponseLib.reporting.report import split_sentence, write_report, write_report_from_dir

MODELS = ["clinical", "radiomics", "fusion_decision"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href")]


def _links(html_text: str) -> list[str]:
    parser = _Links()
    parser.feed(html_text)
    return parser.links


def _png_pixels(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return mpimg.imread(path)[..., :3]


def _sphere_case(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), flip_x=False):
    """A 48x40x16 PET (SUV 1) with a 6-voxel-radius sphere (SUV 8), its mask and a Grad-CAM peak at its centre."""
    z, y, x = np.mgrid[:16, :40, :48]
    r2 = (x - 30) ** 2 + (y - 18) ** 2 + ((z - 8) * 2) ** 2
    pet = np.where(r2 <= 36, 8.0, 1.0).astype(np.float32)
    mask = (r2 <= 36).astype(np.uint8)
    cam = np.exp(-r2 / 60.0).astype(np.float32)
    images = []
    for arr in (pet, mask, cam):
        im = sitk.GetImageFromArray(arr[:, :, ::-1].copy() if flip_x else arr)
        im.SetSpacing((2.0, 2.0, 4.0))
        im.SetDirection(direction)
        im.SetOrigin((-100.0 + (47 * 2.0 if flip_x else 0.0), -50.0, 20.0))
        images.append(im)
    return images


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(5)
    frames = []
    for split, n in (("test1", 40), ("test2", 30)):
        y = (rng.random(n) < 0.35).astype(int)
        y[:2] = (0, 1)
        score = rng.normal(y * 1.2, 1.0)
        probs = {m: 1 / (1 + np.exp(-(score * w + rng.normal(0, 0.7, n))))
                 for m, w in zip(MODELS, (0.5, 1.0, 1.3))}
        frames.append(pd.DataFrame({"case_id": [f"{split}_{i:03d}" for i in range(n)], "split": split,
                                    "label": y, **probs}))
    predictions = pd.concat(frames, ignore_index=True)
    predictions.loc[3, "radiomics"] = np.nan  # a case one pathway could not score
    thresholds = {"clinical": 0.5, "radiomics": 0.45, "fusion_decision": 0.4}
    metrics = {"splits": {}, "oracle": {"auc_by_split": {"test1": 0.8123, "test2": 0.7941}},
               "settings": {"n_folds": 5, "note": np.nan}}
    for split, rows in predictions.groupby("split"):
        metrics["splits"][split] = ev.evaluate_split(rows["label"].to_numpy(), {m: rows[m].to_numpy() for m in MODELS},
                                                     thresholds, n_boot=200)
    metrics["splits"]["temporal"] = ev.evaluate_split([1, 1], {m: [0.3, 0.8] for m in MODELS}, thresholds)
    return predictions, metrics


@pytest.fixture(scope="module")
def report(cohort, tmp_path_factory):
    predictions, metrics = cohort
    base = tmp_path_factory.mktemp("report")
    outside = gradcam_montage(*_sphere_case(), base / "elsewhere_gradcam.png", case="case_007")
    out = base / "out"
    out.mkdir()
    inside = gradcam_montage(*_sphere_case(), out / "gradcam_case_008.png", n_slices=3)
    figures = {"Grad-CAM: case_007": outside, "Grad-CAM: case_008": inside, "SHAP summary: radiomics": out / "gone.png"}
    path = write_report(out, predictions, metrics, figures=figures, title="Test <report>")
    return path, predictions, metrics


def test_html_names_every_model_and_split_and_links_only_existing_files(report):
    path, predictions, metrics = report
    out = path.parent
    text = path.read_text()
    for name in MODELS + ["test1", "test2", "temporal", "Grad-CAM: case_007", "Grad-CAM: case_008"]:
        assert name in text
    assert "Test &lt;report&gt;" in text  # escaped
    links = _links(text)
    # the summary's ROC and decision curves of test1 and test2, then ROC/calibration/decision/comparisons of each
    # split, and the two Grad-CAM montages
    assert len(links) == 2 * 2 + 2 * 4 + 2 and len(set(links)) == 2 * 4 + 2
    for link in links:
        assert not link.startswith(("/", "http")) and (out / link).is_file(), link
    assert "figures/elsewhere_gradcam.png" in links  # copied into the folder
    assert "gone.png" not in links and "gone.png not found" in text
    assert "2 of 2 cases are positive" in text  # the one-class split says why it was not evaluated
    m = metrics["splits"]["test1"]["models"]["radiomics"]
    assert f"{m['auc']:.3f}" in text and f"[{m['auc_ci'][0]:.3f}, {m['auc_ci'][1]:.3f}]" in text  # model card
    assert f"{m['auc']:.2f} ({m['auc_ci'][0]:.2f}-{m['auc_ci'][1]:.2f})" in text  # summary
    boot = m["auc_ci_bootstrap"]
    assert f"[{boot[0]:.3f}, {boot[1]:.3f}]" in text
    assert "0.812" in text and "auc_by_split.test1" in text  # oracle table
    assert len(metrics["splits"]["test1"]["comparisons"]) == 3
    assert not [f for f in out.rglob("*") if ".tmp" in f.name]  # no temporary file left behind


def test_metrics_and_predictions_round_trip(report):
    path, predictions, metrics = report
    loaded = json.loads((path.parent / "metrics.json").read_text())
    assert set(loaded) == {"splits", "oracle", "settings"}
    assert (path.parent / "checklist.json").is_file()
    for split in ("test1", "test2"):
        for name in MODELS:
            got, want = loaded["splits"][split]["models"][name], metrics["splits"][split]["models"][name]
            assert got["auc"] == want["auc"] and got["auc_ci"] == list(want["auc_ci"])
            assert got["sensitivity"] == want["sensitivity"] and got["brier"] == want["brier"]
        assert [c["p_value"] for c in loaded["splits"][split]["comparisons"]] == \
            [c["p_value"] for c in metrics["splits"][split]["comparisons"]]
    assert loaded["splits"]["test1"]["models"]["radiomics"]["n_missing"] == 1
    assert loaded["settings"] == {"n_folds": 5, "note": None}  # NaN is not JSON: written as null
    back = pd.read_csv(path.parent / "predictions.csv", dtype={"case_id": str})
    assert list(back.columns) == ["case_id", "split", "label", *MODELS]
    pd.testing.assert_frame_equal(back, predictions.reset_index(drop=True), check_exact=False, rtol=1e-12)


def test_figures_are_valid_pngs_with_content(report):
    out = report[0].parent
    for kind in ("roc", "calibration", "decision", "comparisons"):
        for split in ("test1", "test2"):
            px = _png_pixels(out / f"{kind}_{split}.png")
            assert px.shape[0] > 300 and px.shape[1] > 300
            drawn = (px < 0.9).any(axis=2).mean()  # non-white pixels: axes, text, curves
            assert 0.02 < drawn < 0.6
            assert len(np.unique((px * 255).astype(int).reshape(-1, 3), axis=0)) > 20  # several curve colours
        assert not (out / f"{kind}_temporal.png").exists()


def test_rebuild_from_folder_gives_the_same_report(report):
    path, _, _ = report
    out = path.parent
    before = path.read_text()
    (out / "roc_test1.png").unlink()
    path.unlink()
    rebuilt = write_report_from_dir(out, title="Test <report>")
    assert rebuilt == path and rebuilt.read_text() == before
    assert _png_pixels(out / "roc_test1.png").std() > 0.05


def test_gradcam_montage_shows_pet_contour_and_heat(tmp_path):
    path = gradcam_montage(*_sphere_case(), tmp_path / "cam.png", n_slices=5)
    px = _png_pixels(path)
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    assert ((g > 0.8) & (r < 0.3) & (b < 0.3)).sum() > 50  # lime tumour contour
    panels = slice(0, int(0.9 * px.shape[1]))  # leave out the colour bar
    hot = (r - g > 0.2) & (r - b > 0.2)  # red end of the heat map blended over the bright tumour
    cold = (b - r > 0.3) & (b - g > 0.3)  # blue rim where the map fades
    assert hot[:, panels].sum() > 1000 and cold[:, panels].sum() > 1000
    grey = (np.abs(r - g) < 0.02) & (np.abs(g - b) < 0.02)
    assert len(np.unique(np.round(r[grey], 2))) > 3  # PET greys (background SUV 1, tumour 8, white page)


def test_gradcam_montage_is_orientation_independent(tmp_path):
    # The same physical volume stored with the x axis flipped (direction -1) must give the same picture.
    plain = _png_pixels(gradcam_montage(*_sphere_case(), tmp_path / "a.png", case="c"))
    flipped_case = _sphere_case(direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1), flip_x=True)
    assert flipped_case[0].TransformIndexToPhysicalPoint((0, 0, 0)) == (-6.0, -50.0, 20.0)
    flipped = _png_pixels(gradcam_montage(*flipped_case, tmp_path / "b.png", case="c"))
    assert plain.shape == flipped.shape and np.abs(plain - flipped).max() < 1e-6


def test_bad_input_is_named(tmp_path, cohort):
    image, mask, cam = _sphere_case()
    small = sitk.Image(10, 10, 10, sitk.sitkFloat32)
    with pytest.raises(InputError,
                       match=r"case_9: the Grad-CAM is not on the PET grid: "
                             r"size \(10, 10, 10\) vs PET \(48, 40, 16\)"):
        gradcam_montage(image, mask, small, tmp_path / "x.png", case="case_9")
    empty = sitk.Image(mask.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(mask)
    with pytest.raises(InputError, match="mask is empty"):
        gradcam_montage(image, empty, cam, tmp_path / "x.png")
    predictions, metrics = cohort
    with pytest.raises(InputError, match=r"lack the columns \['label'\]"):
        write_report(tmp_path / "r", predictions.drop(columns="label"), metrics)
    with pytest.raises(InputError, match="metrics.json not found"):
        write_report_from_dir(tmp_path)
    assert not (tmp_path / "r").exists()


def test_gradcam_montage_on_real_pet(shared_data, tmp_path):
    # STS_001: real FDG PET (SUV) with its expert mask; a smoothed tumour-uptake map stands in for Grad-CAM.
    image = sitk.ReadImage(str(shared_data / "sts_pet" / "STS_001" / "PET_image.nii.gz"))
    mask = sitk.ReadImage(str(shared_data / "sts_pet" / "STS_001" / "PET_mask.nii.gz"))
    cam = sitk.SmoothingRecursiveGaussian(image * sitk.Cast(mask, sitk.sitkFloat32), 8.0)
    px = _png_pixels(gradcam_montage(image, mask, cam, tmp_path / "sts.png", case="STS_001"))
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    assert px.shape[1] > 3 * px.shape[0]  # five panels side by side
    assert ((g > 0.8) & (r < 0.3) & (b < 0.3)).sum() > 100  # tumour contours
    assert ((r - g > 0.2) & (r - b > 0.2))[:, : int(0.9 * px.shape[1])].sum() > 500  # heat inside the panels


def test_suv_conversion_section_counts_rules_and_lists_each_case(cohort, tmp_path, shared_data):
    from DPETResponseLib.io.images import read_pet_with_provenance

    predictions, metrics = cohort
    _, dicom = read_pet_with_provenance(shared_data / "suv_dro" / "DRO_3_0" / "PT")
    _, nifti = read_pet_with_provenance(shared_data / "sts_pet" / "STS_001" / "PET_image.nii.gz")
    records = {"test1_000": dicom, "test1_001": nifti, "test1_002": nifti}
    text = write_report(tmp_path, predictions, {**metrics, "suv_conversion": records}).read_text()
    section = text[text.index("<h3>SUV conversion"):text.index("</details>", text.index("<h3>SUV conversion"))]
    assert section.count("<tr") == 1 + 2 + 1 + 3  # rule counts (header + 2 rules), per case (header + 3 cases)
    assert ">2<" in section and ">1<" in section  # two NIfTI cases, one DICOM case
    assert "RadionuclideTotalDose 368.08 read as MBq" in section and "SeriesDate/SeriesTime" in section


def _significance_block_probs() -> dict:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 150)
    weak = y * 0.4 + rng.normal(size=y.size)
    return {"weak": weak, "near": weak + rng.normal(0, 0.1, y.size), "strong": y * 2.0 + rng.normal(size=y.size)}


def _significance_block():
    """300 cases where `strong` beats `weak` and `near` by paired DeLong and `near` does not differ from `weak`."""
    probs = _significance_block_probs()
    return ev.evaluate_split(np.repeat([0, 1], 150), probs, {m: 0.5 for m in probs}, reference_model="weak",
                             n_boot=50)


def test_split_sentence_says_which_differences_are_significant():
    block = _significance_block()
    p = {frozenset((c["model_a"], c["model_b"])): c["p_value"] for c in block["comparisons"]}
    assert p[frozenset(("strong", "weak"))] < 0.05 and p[frozenset(("strong", "near"))] < 0.05
    assert p[frozenset(("near", "weak"))] >= 0.05
    text = split_sentence("test", block)
    best = block["models"]["strong"]
    assert text.startswith(f"test (300 cases, 150 pCR): highest AUC strong, {best['auc']:.2f} (95% CI "
                           f"{best['auc_ci'][0]:.2f}-{best['auc_ci'][1]:.2f}).")
    assert "2 of 3 paired differences are significant" in text
    assert "strong above weak (p <0.001), near (p <0.001)" in text
    assert "the other 1 are not" in text and "Beat the weak" in text
    probs = _significance_block_probs()
    none = ev.evaluate_split(np.repeat([0, 1], 150), {m: probs[m] for m in ("weak", "near")},
                             {"weak": 0.5, "near": 0.5}, n_boot=50)
    assert "None of the 1 paired differences is significant" in split_sentence("x", none)
    assert split_sentence("one", ev.evaluate_split([1, 1], {"a": [0.2, 0.3]}, {"a": 0.5})).startswith(
        "one (2 cases, 2 pCR): not evaluated (2 of 2 cases are positive")
    lacking = {**block, "missing_modalities": {"ct": 4, "mr": 0}}
    assert split_sentence("test", lacking).endswith(
        "Cases without a modality (its own pathway gives them no probability; the fusions impute it): ct 4.")
    assert "without a modality" not in text


def test_summary_comes_first_with_best_and_reference_marked(cohort, tmp_path):
    predictions, metrics = cohort
    metrics = {**metrics, "splits": {**metrics["splits"], "sig": _significance_block()}}
    text = write_report(tmp_path, predictions, metrics).read_text()
    order = [text.index(f"<section id='{s}'>") for s in ("summary", "models", "splits", "checklists", "provenance",
                                                          "synthetic")]
    assert order == sorted(order)  # the answer first, the generator's ground truth last
    summary = text[order[0]:order[1]]
    for split in ("test1", "test2"):
        models = metrics["splits"][split]["models"]
        best = max(models, key=lambda m: models[m]["auc"])
        lo, hi = models[best]["auc_ci"]
        assert f"<td class='best'>&#9733; {models[best]['auc']:.2f} ({lo:.2f}-{hi:.2f})</td>" in summary
    assert summary.count("<td class='best'>") == 3  # one best per scored split (test1, test2, sig)
    assert "weak (reference)" in summary and "<tr class='baseline'><td>weak (reference)" in summary
    assert summary.count("<li>") == 4 and "strong above weak" in summary
    assert "roc_test1.png" in summary and "decision_test2.png" in summary and "calibration" not in summary


def test_checklist_lists_every_item_and_fills_what_the_metrics_know(report):
    path, predictions, metrics = report
    checklist = json.loads((path.parent / "checklist.json").read_text())
    assert list(checklist) == ["TRIPOD+AI", "METRICS"]
    tripod = {i["item"]: i for i in checklist["TRIPOD+AI"]["items"]}
    assert list(tripod) == list(TRIPOD_AI) and len(tripod) == 52
    assert [i["item"] for i in checklist["METRICS"]["items"]] == [str(n) for n in range(1, 31)]
    for block in checklist.values():
        for item in block["items"]:
            assert item["status"] in (FILLED, PARTLY, TO_COMPLETE), item
    # events per split, counted from predictions.csv (not from metrics)
    back = pd.read_csv(path.parent / "predictions.csv")
    counted = {s: {"n": len(r), "events": int(r["label"].sum())} for s, r in back.groupby("split")}
    assert tripod["10"]["data"] == tripod["21"]["data"] == {**counted, "temporal": {"n": 2, "events": 2}}
    radiomics = metrics["splits"]["test1"]["models"]["radiomics"]
    assert tripod["23a"]["data"]["test1"]["radiomics"] == {"auc": radiomics["auc"], "auc_ci": list(radiomics["auc_ci"])}
    radiomics_items = {i["item"]: i for i in checklist["METRICS"]["items"]}
    for split in ("test1", "test2"):  # item 24: the models significantly above the clinical-only model
        block = metrics["splits"][split]
        clinical_auc = block["models"]["clinical"]["auc"]
        above = [m for m in MODELS if m != "clinical" and block["models"][m]["auc"] > clinical_auc and any(
            {c["model_a"], c["model_b"]} == {m, "clinical"} and c["p_value"] < 0.05 for c in block["comparisons"])]
        assert radiomics_items["24"]["data"][split] == above
    # without the run's record (a bare metrics dict), what only the record knows is left to the authors
    assert tripod["22"]["status"] == tripod["20a"]["status"] == tripod["1"]["status"] == TO_COMPLETE
    assert tripod["6a"]["status"] == TO_COMPLETE  # no site column
    with_sites = {**metrics, "splits": {"test1": {**metrics["splits"]["test1"], "sites": {
        "A": {"n": 3, "n_positive": 1}, "B": {"n": 2, "n_positive": 1}}}}}
    item = {i["item"]: i for i in build_checklist(with_sites)["TRIPOD+AI"]["items"]}["6a"]
    assert item["status"] == PARTLY and item["data"] == {"cases_per_site": {"test1": {"A": 3, "B": 2}}}
    assert item["value"].startswith("cases per site (the manifest's site column): test1: A 3, B 2.")
    text = path.read_text()
    assert "Reporting checklists" in text and "Collins GS et al. BMJ 2024" in text


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; "
                                              ".ci/run installs it)")
def test_report_in_a_real_browser_loads_every_figure_and_fits_1280_px(report):
    path = report[0]
    seen = browser_check(path, width=1280)
    srcs = _links(path.read_text())
    assert [i["src"] for i in seen["images"]] == srcs
    assert all(i["loaded"] for i in seen["images"]), [i for i in seen["images"] if not i["loaded"]]
    assert min(i["shown_width"] for i in seen["images"]) > 250
    assert seen["client_width"] == 1280 and seen["scroll_width"] <= 1280 and seen["overflowing"] == []
    wide = path.with_name("wide.html")  # the check sees an element wider than the page
    wide.write_text(path.read_text().replace("</body>", "<div>" + "x" * 400 + "</div></body>"))
    seen = browser_check(wide, width=1280)
    assert seen["scroll_width"] > 1280 and "div: " + "x" * 80 in seen["overflowing"]


def _partitions_block():
    """metrics.json's ``partitions`` as `protocol.evaluate` writes it, from three partitions' scores."""
    from DPETResponseLib.partitions import summarise

    scores = [{m: {"auc": 0.6 + 0.05 * i + 0.1 * k, "balanced_accuracy": 0.55 + 0.1 * k, "sensitivity": 0.5 + 0.02 * i,
                   "specificity": 0.7} for k, m in enumerate(MODELS)} for i in range(3)]
    return {"n": 3, "seeds": [0, 1, 2], "test_fraction": 0.3, "n_cases": 70, "habitats": "refit",
            "sizes": [{"seed": i, "train": 49, "test": 21, "test_positive": 7, "failed": 0} for i in range(3)],
            "thresholds": {m: [0.4, 0.5, 0.45] for m in MODELS}, "models": summarise(scores)}


def test_partitions_section_and_checklist_give_mean_and_sd(cohort, tmp_path):
    """With metrics.json's ``partitions`` the report has a table of every model's mean +- SD of the four metrics
    (each cell recomputed here with numpy), says the design differs from the single split, and the checklists
    name the design (TRIPOD+AI 12a) and give the means and SDs (23a); without it, neither."""
    predictions, metrics = cohort
    block = _partitions_block()
    settings = {"n_folds": 5, "seed": 0}
    path = write_report(tmp_path, predictions, {**metrics, "settings": settings, "partitions": block})
    text = path.read_text()
    section = text[text.index("<section id='partitions'>"):text.index("</section>", text.index("id='partitions'"))]
    assert text.index("<section id='summary'>") < text.index("<section id='partitions'>") < text.index(
        "<section id='models'>")
    for model in MODELS:
        row = section[section.index(f"<tr><td>{model}</td>"):]
        cells = re.findall(r"<td>([^<]*)</td>", row[:row.index("</tr>")])[1:]
        for cell, metric in zip(cells, ("auc", "balanced_accuracy", "sensitivity", "specificity")):
            values = block["models"][model][metric]["values"]
            assert cell == f"{np.mean(values):.3f} &plusmn; {np.std(values, ddof=1):.3f}", (model, metric)
    assert "different design from the single split" in section and "evaluates the protocol" in section
    assert "seeds 0, 1, 2" in section and "70 labelled cases" in section and "30% of them" in section
    checklist = json.loads((tmp_path / "checklist.json").read_text())
    tripod = {i["item"]: i for i in checklist["TRIPOD+AI"]["items"]}
    assert tripod["12a"]["data"]["partitions"] == {"n": 3, "test_fraction": 0.3, "seeds": [0, 1, 2],
                                                   "habitats": "refit"}
    assert "3 independent stratified partitions" in tripod["12a"]["value"]
    auc = block["models"]["radiomics"]["auc"]
    assert tripod["23a"]["data"]["partitions"]["radiomics"]["auc"] == {"mean": auc["mean"], "sd": auc["sd"]}
    assert f"radiomics AUC {auc['mean']:.2f} ± {auc['sd']:.2f}" in tripod["23a"]["value"]
    plain = write_report(tmp_path / "plain", predictions, {**metrics, "settings": settings}).read_text()
    plain_tripod = {i["item"]: i for i in json.loads((tmp_path / "plain" / "checklist.json").read_text())[
        "TRIPOD+AI"]["items"]}
    assert "id='partitions'" not in plain and "partitions" not in plain_tripod["12a"]["data"]
    assert "partitions" not in plain_tripod["23a"]["data"] and "partitions" not in plain_tripod["12a"]["value"]


def test_report_names_the_outcome_column(cohort, tmp_path):
    """metrics.json's ``outcome``: another column than label is named in the summary, as the event counted in
    each split's heading and sentence, and in TRIPOD+AI 8a; the label column keeps pCR."""
    predictions, metrics = cohort
    text = write_report(tmp_path, predictions, {**metrics, "outcome": {"column": "response",
                                                                       "ignored_columns": ["label"]}}).read_text()
    n, positive = metrics["splits"]["test1"]["n"], metrics["splits"]["test1"]["n_positive"]
    assert "Outcome: the manifest&#x27;s column &#x27;response&#x27; (1 = event, 0 = not)" in text
    assert "Not used as predictors: label." in text
    assert f"<th>test1 (n={n}, response {positive})</th>" in text and f"({n} cases, {positive} response)" in text
    assert f"{positive} pCR" not in text
    tripod = {i["item"]: i for i in json.loads((tmp_path / "checklist.json").read_text())["TRIPOD+AI"]["items"]}
    assert tripod["8a"]["data"] == {"column": "response"} and "'response'" in tripod["8a"]["value"]
    text = write_report(tmp_path / "pcr", predictions, {**metrics, "outcome": {"column": "label"}}).read_text()
    assert f"<th>test1 (n={n}, pCR {positive})</th>" in text and "column &#x27;label&#x27; (1 = pCR" in text


def test_a_comparison_without_a_p_value_is_not_significant(cohort, tmp_path):
    """A paired comparison whose p-value is undefined (NaN, written as null in metrics.json: no variance) is
    reported as not significant, in the sentence, the checklist and the matrix figure, and breaks nothing."""
    import copy

    predictions, metrics = cohort
    metrics = copy.deepcopy(metrics)
    block = metrics["splits"]["test1"]
    for c in block["comparisons"]:
        c["p_value"] = None
    block["comparisons"][0]["p_value"] = float("nan")
    assert f"None of the {len(block['comparisons'])} paired differences is significant" in split_sentence(
        "test1", block)
    write_report(tmp_path, predictions, metrics)
    checklist = json.loads((tmp_path / "checklist.json").read_text())
    item24 = next(i for i in checklist["METRICS"]["items"] if i["item"] == "24")
    assert item24["data"]["test1"] == []
    assert (tmp_path / "comparisons_test1.png").stat().st_size > 5000


def test_sites_section_lists_each_site_with_counts_and_each_models_auc(cohort, tmp_path):
    """metrics.json ``splits[split]["sites"]`` (`evaluation.per_site`) becomes the Sites section: one row per site
    with its cases, events, event rate and each model's AUC over its DeLong CI; a one-class site shows -. Without
    the block there is no section."""
    predictions, metrics = cohort
    rows = predictions[predictions["split"] == "test1"]
    sites = np.where(np.arange(len(rows)) < 25, "Centre A", "Centre <B>")
    sites[-3:] = "C"
    labels = rows["label"].to_numpy().copy()
    labels[-3:] = 0  # C: no pCR
    block = ev.per_site(labels, sites, {m: rows[m].to_numpy() for m in MODELS})
    with_sites = {**metrics, "splits": {**metrics["splits"], "test1": {**metrics["splits"]["test1"],
                                                                         "sites": block}}}
    text = write_report(tmp_path, predictions, with_sites).read_text()
    assert text.index("<section id='summary'>") < text.index("<section id='sites'>") < text.index(
        "<section id='models'>")
    section = text[text.index("<section id='sites'>"):text.index("</section>", text.index("id='sites'"))]
    assert "<h3>test1</h3>" in section and "test2" not in section
    assert "<th>site</th><th>cases</th><th>pCR</th><th>pCR rate</th><th>clinical</th>" in section
    a = block["Centre A"]
    lo, hi = a["models"]["radiomics"]["auc_ci"]
    assert (f"<tr><td>Centre A</td><td>25</td><td>{a['n_positive']}</td><td>{a['event_rate']:.0%}</td>"
            in section)
    assert f"<td>{a['models']['radiomics']['auc']:.2f}<br><small>{lo:.2f}-{hi:.2f}</small></td>" in section
    assert "<td>Centre &lt;B&gt;</td><td>12</td>" in section
    assert "<tr><td>C</td><td>3</td><td>0</td><td>0%</td><td>-</td><td>-</td><td>-</td></tr>" in section
    assert write_report_from_dir(tmp_path).read_text() == text  # rebuilt from metrics.json
    assert "id='sites'" not in write_report(tmp_path / "plain", predictions, metrics).read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; "
                                              ".ci/run installs it)")
def test_sites_section_of_many_models_fits_1280_px(cohort, tmp_path):
    predictions, metrics = cohort
    rows = predictions[predictions["split"] == "test1"]
    names = ["baseline", "clinical", "radiomics", "radiomics_whole", "peritumoural", "ith", "deep",
             "deep_features", "fusion_feature", "fusion_feature_e2e", "fusion_decision"]
    probs = {m: rows[MODELS[i % 3]].fillna(0.5).to_numpy() for i, m in enumerate(names)}
    block = ev.per_site(rows["label"].to_numpy(), np.arange(len(rows)) % 4, probs)
    split = {**metrics["splits"]["test1"], "sites": block}
    path = write_report(tmp_path, predictions, {**metrics, "splits": {**metrics["splits"], "test1": split}})
    seen = browser_check(path, width=1280)
    assert seen["scroll_width"] <= 1280 and seen["overflowing"] == []
