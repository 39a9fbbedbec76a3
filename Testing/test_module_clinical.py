"""Clinical values in the Slicer module (stand-ins for qt and slicer, Testing/standins) on a real bundle: the form
a bundle's clinical columns make (training range, training categories, "unknown" first), the values saved per PET
in the parameter node, and what reaches the CLI; then the real CLI's prediction, shown in a slicer-core scene, with
and without the values: the models that used an imputed value are named in the prediction table.

The bundle: a 24-case synthetic cohort (no CNN) whose cT column is text (one training case is "4d", the way T4
subclasses are written), so that a category can look like a number.
"""

import json
import math
import shutil
import warnings

import pandas as pd
import pytest
from conftest import FAST_RADIOMICS_YAML
from module_standins import load_module

from DPETResponseLib import cli
from DPETResponseLib import scene as S
from DPETResponseLib.core.errors import BundleError
from DPETResponseLib.io.images import read_mask, read_pet
from DPETResponseLib.io.manifest import ManifestWarning, clinical_columns, read_manifest, training_cases
from DPETResponseLib.protocol import predict, train
from DPETResponseLib.results import PredictionResult
from DPETResponseLib.study.model import StudyModel
from DPETResponseLib.synthetic import make_cohort


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The cohort, its manifest (cT as text, one training cT "4d", one training ki67 12.5) and a bundle trained on
    it without the CNN."""
    root = tmp_path_factory.mktemp("clinical")
    manifest_path = make_cohort(root / "cohort", n=24, seed=0)
    table = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    train_rows = table.index[table["split"] == "train"]
    table.loc[train_rows[0], "cT"] = "4d"
    table.loc[train_rows[1], "ki67"] = "12.5"
    table.to_csv(manifest_path, index=False)
    settings = {"n_folds": 3, "seed": 0, "deep": False, "classifiers": ["lr"],
                "analysis": {"radiomics_params": str(FAST_RADIOMICS_YAML), "habitat_radius_mm": 3.0}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ManifestWarning)  # cT mixes numbers and text: kept as text, as wanted
        train(manifest_path, root / "bundle", config=settings, jobs=1, cache_dir=root / "cache", progress=False)
        cases = read_manifest(manifest_path)
    return {"root": root, "bundle": root / "bundle", "cases": cases, "cohort": manifest_path.parent,
            "model": StudyModel.load(root / "bundle")}


@pytest.fixture
def loaded():
    return load_module()


def training_values(study) -> dict:
    """Each clinical column of the training cases, as the manifest reader typed it."""
    train_cases = training_cases(study["cases"])
    return {column: train_cases[column] for column in clinical_columns(study["cases"])}


def case_values(study, case_id) -> dict:
    """A case's clinical values, typed as the module stores them (numbers as floats, categories as text)."""
    row = study["cases"].loc[case_id]
    return {c: float(row[c]) if pd.api.types.is_number(row[c]) else row[c] for c in clinical_columns(study["cases"])}


def pet_and_tumour(study, case_id, scene):
    row = study["cases"].loc[case_id]
    image = read_pet(row["image"])
    pet = S.sitk_to_volume_node(image, scene, name=case_id)
    tumour = S.labelmap_to_segmentation(read_mask(row["mask"], image), scene, pet, *S.TUMOUR_SEGMENTS)
    return pet, tumour


def logged(widget) -> list[str]:
    return [args[0] for name, args in widget.ui.logTextEdit.calls if name == "appendPlainText"]


def new_widget(module, bundle=None, volume=None):
    widget = module.DPETResponseWidget()
    widget.setup()
    if volume is not None:
        widget._parameterNode.inputVolume = volume
        widget.onParameterNodeModified()  # Slicer's parameter node emits Modified; the stand-in's does not
    if bundle is not None:
        widget.ui.bundlePathLineEdit.currentPath = str(bundle)
        widget.onParameterNodeModified()
    return widget


# ------------------------------------------------------------------------------------------------ the schema
def test_clinical_schema_is_the_training_cases_range_and_categories(study, tmp_path):
    """Numbers: min and max of the training cases, the decimals they need; categories: the training ones, sorted.
    The same as the model's own training table (StudyModel.load) holds, read without loading a model."""
    schema = S.clinical_schema(study["bundle"])
    values = training_values(study)
    assert list(schema) == list(values)
    for column, spec in schema.items():
        given = values[column].dropna()
        if pd.api.types.is_numeric_dtype(given):
            assert spec == {"kind": "number", "min": float(given.min()), "max": float(given.max()),
                            "decimals": 1 if column == "ki67" else 0}, column
        else:
            assert spec == {"kind": "category", "values": sorted(set(given))}, column
    assert "4d" in schema["cT"]["values"] and schema["ki67"]["decimals"] == 1
    background = study["model"].background_
    for column, spec in schema.items():
        if spec["kind"] == "number":
            assert (spec["min"], spec["max"]) == (background[column].min(), background[column].max())
        else:
            assert spec["values"] == sorted(background[column].dropna().unique())
    with pytest.raises(BundleError, match="not a model bundle"):
        S.clinical_schema(tmp_path)
    damaged = tmp_path / "damaged"
    shutil.copytree(study["bundle"], damaged)
    (damaged / "tensors" / "background.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(BundleError, match="cannot read its clinical columns"):
        S.clinical_schema(damaged)


# ------------------------------------------------------------------------------------------------ the form
def test_form_offers_the_training_range_and_categories_with_unknown_first(study, loaded):
    module, _ = loaded
    volume = S.standalone_scene().AddNewNodeByClass("vtkMRMLScalarVolumeNode", "PET")
    widget = new_widget(module, study["bundle"], volume)
    schema = S.clinical_schema(study["bundle"])
    assert list(widget._clinicalFields) == list(schema)
    assert widget._clinicalLayout.widgets == [widget._clinicalForm]
    rows = widget._clinicalForm.layout().rows
    assert rows == [(f"{column}:", widget._clinicalFields[column]) for column in schema]
    for column, field in widget._clinicalFields.items():
        spec = schema[column]
        assert field.enabled, column
        if spec["kind"] == "number":
            step = 10.0 ** -spec["decimals"]
            assert (field.minimum, field.maximum, field.decimals) == pytest.approx(
                (spec["min"] - step, spec["max"], spec["decimals"])), column
            assert field.specialValueText == "unknown" and field.value == field.minimum, column  # unknown
        else:
            assert [field.itemText(i) for i in range(field.count)] == ["unknown", *spec["values"]], column
            assert field.currentIndex == 0, column
    assert widget.clinicalValues() == {}
    assert widget.ui.clinicalStatusLabel.text == module.CLINICAL_HELP


def test_form_states_before_a_bundle_without_a_pet_and_for_a_folder_that_is_no_bundle(study, loaded, tmp_path):
    module, _ = loaded
    widget = new_widget(module)
    assert widget._clinicalFields == {} and "Choose a model bundle" in widget.ui.clinicalStatusLabel.text
    widget.ui.bundlePathLineEdit.currentPath = str(tmp_path)
    widget.onParameterNodeModified()
    assert widget._clinicalFields == {} and "not a model bundle" in widget.ui.clinicalStatusLabel.text
    widget.ui.bundlePathLineEdit.currentPath = str(study["bundle"])
    widget.onParameterNodeModified()
    assert widget._clinicalFields and not any(f.enabled for f in widget._clinicalFields.values())  # no PET yet


def test_values_are_saved_per_pet_in_the_parameter_node_and_restored(study, loaded):
    """Values belong to the patient: a PET has its own, another PET starts unknown, and a widget on a parameter
    node that holds them (a reloaded scene) shows them."""
    module, standins = loaded
    scene = S.standalone_scene()
    first, second = (scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name) for name in ("PET 1", "PET 2"))
    widget = new_widget(module, study["bundle"], first)
    schema = widget._clinicalSchema
    number = next(c for c, s in schema.items() if s["kind"] == "number")
    category = next(c for c, s in schema.items() if s["kind"] == "category")
    widget._clinicalFields[number].setValue(schema[number]["max"])
    widget._clinicalFields[category].setCurrentIndex(len(schema[category]["values"]))  # the last category
    entered = {number: schema[number]["max"], category: schema[category]["values"][-1]}
    saved = json.loads(widget._parameterNode.clinicalValues)
    assert saved == {first.GetID(): entered} and widget.clinicalValues() == entered

    widget._parameterNode.inputVolume = second
    widget.onParameterNodeModified()
    assert widget.clinicalValues() == {}
    assert widget._clinicalFields[number].value == widget._clinicalFields[number].minimum  # unknown
    assert widget._clinicalFields[category].currentIndex == 0
    widget._parameterNode.inputVolume = first
    widget.onParameterNodeModified()
    assert widget._clinicalFields[category].currentText == entered[category]

    again = new_widget(module)  # the same parameter node, as a saved scene brings it back
    assert again._parameterNode.clinicalValues == json.dumps(saved, sort_keys=True)
    assert again.clinicalValues() == entered
    assert again._clinicalFields[number].value == pytest.approx(entered[number])
    assert again._clinicalFields[category].currentText == entered[category]
    standins["slicer"].mrmlScene.Clear()  # a new scene
    assert new_widget(module, study["bundle"], first).clinicalValues() == {}


def test_values_outside_what_the_bundle_takes_are_not_passed(study, loaded):
    module, _ = loaded
    schema = S.clinical_schema(study["bundle"])
    number = next(c for c, s in schema.items() if s["kind"] == "number")
    category = next(c for c, s in schema.items() if s["kind"] == "category")
    values = {number: schema[number]["max"] + 1, category: "never seen", "not_a_column": 1.0}
    assert module.validClinicalValues(schema, values) == {}
    assert module.validClinicalValues(schema, {number: schema[number]["min"]}) == {number: schema[number]["min"]}
    # training values with more decimals than the field shows: its ends, as the field rounds them, are in range
    fine = {"kind": "number", "min": 0.12345, "max": 0.98765, "decimals": 3}
    field = module.clinicalField(fine)
    shown = []
    for value in (fine["min"], fine["max"]):
        field.setValue(value)
        shown.append(module.clinicalFieldValue(field, fine))
    assert shown == [0.123, 0.988] and module.validClinicalValues({"x": fine}, {"x": 0.123}) == {"x": 0.123}
    field.setValue(field.minimum)
    assert module.clinicalFieldValue(field, fine) is None
    assert module.validClinicalValues({"x": fine}, {"x": field.minimum}) == {}


def test_packages_missing_then_installed_by_apply_show_the_form_before_a_run(study, loaded, monkeypatch):
    """Before the module's packages are installed the library cannot read the bundle: the form says so; Apply
    installs them, shows the form and waits for the values instead of running at once."""
    module, _ = loaded
    monkeypatch.setattr(module, "PIP_REQUIREMENTS", ["dpet-response-absent-package>=1"])
    volume = S.standalone_scene().AddNewNodeByClass("vtkMRMLScalarVolumeNode", "PET")
    widget = new_widget(module, study["bundle"], volume)
    assert widget._clinicalFields == {} and "Python packages" in widget.ui.clinicalStatusLabel.text
    runs = []
    monkeypatch.setattr(widget.logic, "checkDependencies", lambda askConfirmation: True)
    monkeypatch.setattr(widget.logic, "processAsync", lambda *args, **kwargs: runs.append(kwargs))
    monkeypatch.setattr(module, "PIP_REQUIREMENTS", [])  # installed
    widget.onApplyButton()
    assert list(widget._clinicalFields) == list(S.clinical_schema(study["bundle"])) and runs == []
    widget.onApplyButton()
    assert [run["clinical"] for run in runs] == [{}]


# ------------------------------------------------------------------------------------------------ the run
def predicted(module, widget, pet, tumour, bundle, monkeypatch, capsys):
    """Apply (its processAsync arguments), then the prediction the real CLI makes of the arguments the logic
    builds from them, shown in the PET's scene: (clinical values passed, the CLI's typed values, {model: imputed
    inputs shown in the prediction table})."""
    runs = []
    monkeypatch.setattr(widget.logic, "checkDependencies", lambda askConfirmation: True)
    monkeypatch.setattr(widget.logic, "processAsync", lambda *args, **kwargs: runs.append(kwargs))
    widget.onApplyButton()
    clinical = runs[0]["clinical"]
    logic = module.DPETResponseLogic()
    args, out = logic._prepare(pet, tumour, bundle, None, clinical)
    try:
        parsed = cli.build_parser().parse_args(args[2:])
        typed = cli._clinical_values(parsed.bundle, parsed.clinical)
        capsys.readouterr()
        assert cli.main(args[2:]) == 0, capsys.readouterr().err
        printed = json.loads(capsys.readouterr().out)
        result = PredictionResult.read(out)
        assert result.imputed_inputs == printed["imputed_inputs"]
        table = S.show_prediction(result, pet.GetScene(), pet, segments=False, gradcam=False,
                                  shap_chart=False)["prediction_table"]
    finally:
        logic._cleanup()
    column = [table.GetTable().GetColumnName(i) for i in range(table.GetNumberOfColumns())].index("imputed inputs")
    shown = {table.GetCellText(row, 0): table.GetCellText(row, column) for row in range(table.GetNumberOfRows())}
    return clinical, typed, shown


def test_given_values_reach_the_cli_and_no_model_imputes_them_unknown_ones_are_named(study, loaded, monkeypatch,
                                                                                     capsys):
    """A training case predicted twice from the module: with every clinical value entered, no model lists a
    clinical column under 'imputed inputs'; with every value unknown, the clinical pathway lists the columns it
    uses (and the log says which were unknown)."""
    module, _ = loaded
    scene = S.standalone_scene()
    case_id = training_cases(study["cases"]).index[2]
    pet, tumour = pet_and_tumour(study, case_id, scene)
    widget = new_widget(module, study["bundle"], pet)
    p = widget._parameterNode
    p.tumourSegmentation, p.bundlePath = tumour, str(study["bundle"])
    columns = list(widget._clinicalSchema)
    values = case_values(study, case_id)

    p.clinicalValues = json.dumps({pet.GetID(): values})
    widget.onParameterNodeModified()
    clinical, typed, shown = predicted(module, widget, pet, tumour, study["bundle"], monkeypatch, capsys)
    assert clinical == values and typed == values
    assert shown.keys() == set(study["model"].model_names)
    assert all(column not in imputed for imputed in shown.values() for column in columns), shown
    assert "unknown" not in logged(widget)[-1]

    p.clinicalValues = ""
    widget.onParameterNodeModified()
    clinical, typed, shown = predicted(module, widget, pet, tumour, study["bundle"], monkeypatch, capsys)
    assert clinical == {} and typed == {}
    used = [c for c in study["model"].estimators_["clinical"].used_columns_ if c in columns]
    assert used and shown["clinical"] == ", ".join(used)
    assert logged(widget)[-1] == "Clinical values: none; unknown, imputed from the training data: " + ", ".join(columns)


def test_cli_reads_a_category_that_looks_like_a_number_as_the_category(study, capsys):
    """`--clinical cT=2`, where the training cT values are "1", "2", ..., "4d": the CLI passed 2.0, a category the
    clinical encoder never saw (ignored, and not flagged as imputed); it must pass "2"."""
    schema = S.clinical_schema(study["bundle"])
    cT = next(v for v in schema["cT"]["values"] if v.isdigit())
    case_id = training_cases(study["cases"]).index[2]
    row = study["cases"].loc[case_id]
    values = {**case_values(study, case_id), "cT": cT}
    capsys.readouterr()
    code = cli.main(["predict", str(study["bundle"]), "--image", row["image"], "--mask", row["mask"],
                     "--clinical", *(f"{c}={v}" for c, v in values.items())])
    assert code == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)["probabilities"]["clinical"]
    image = read_pet(row["image"])
    mask = read_mask(row["mask"], image)

    def clinical_probability(clinical):
        return predict(study["bundle"], image, mask=mask, case_id=case_id, clinical=clinical,
                       model=study["model"]).probabilities["clinical"]

    as_text, as_number = clinical_probability(values), clinical_probability({**values, "cT": float(cT)})
    assert printed == pytest.approx(as_text, abs=1e-9)
    assert not math.isclose(as_text, as_number, abs_tol=1e-6)  # the number would have mattered
