"""What a prediction for one patient returns (plain data the CLI prints and the Slicer module puts in the scene), and
the prediction folder (`dpet-response predict --out`) it is written to and read back from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from .core.errors import InputError
from .core.files import atomic_write, write_text

#: The prediction folder: the file of each part (images only where the prediction has them).
PREDICTION_FILES = {"json": "prediction.json", "mask": "mask.nii.gz", "subregions": "subregions.nii.gz",
                    "peritumoural": "peritumoural.nii.gz", "gradcam": "gradcam.nii.gz", "shap": "shap.csv"}
IMAGE_PARTS = ("mask", "subregions", "peritumoural", "gradcam")
REQUIRED_JSON_KEYS = ("case_id", "probabilities", "decision", "thresholds", "pet_metrics")


@dataclass
class PredictionResult:
    """Prediction for one PET and tumour mask.

    probabilities: pCR probability per model (`clinical`, `radiomics`, `ith`, `deep`, `fusion_feature`,
        `fusion_decision`, ...), only the models the bundle holds and the inputs allow.
    decision: predicted class per model at the bundle's threshold (1 = pCR).
    thresholds: the threshold per model, fixed on the training data.
    pet_metrics: SUVmax, SUVmean, SUVpeak, MTV, TLG of the tumour.
    imputed_inputs: per model whose inputs included a value imputed from the training data (a clinical value not
        given, a feature that could not be computed, a modality not given), the columns imputed; empty when no model
        used one.
    missing_modalities: the bundle's other modalities (CT, MR, ...) this patient was predicted without: their own
        pathways give no probability, the fusions had their inputs imputed (listed in imputed_inputs).
    shap: per model, feature name -> SHAP value for this patient (log-odds units).
    suv_conversion: how the PET became SUV (`io.suv`'s record; empty where the PET came in as an image).
    mask, subregions, peritumoural, gradcam: images on the PET's grid (subregions: 0 background, 1..K by increasing
        uptake; peritumoural: the 0/1 shell the ``peri_`` features were computed on, None where the bundle has
        none; gradcam: float32 in [0, 1], None where the bundle has no deep model).
    """

    case_id: str
    probabilities: dict[str, float]
    decision: dict[str, int]
    thresholds: dict[str, float]
    pet_metrics: dict[str, float]
    shap: dict[str, dict[str, float]] = field(default_factory=dict)
    imputed_inputs: dict[str, list[str]] = field(default_factory=dict)
    missing_modalities: list[str] = field(default_factory=list)
    mask: sitk.Image | None = None
    subregions: sitk.Image | None = None
    peritumoural: sitk.Image | None = None
    gradcam: sitk.Image | None = None
    warnings: list[str] = field(default_factory=list)
    suv_conversion: dict = field(default_factory=dict)

    def to_json_dict(self) -> dict:
        """The JSON-able part (no images)."""
        return {
            "case_id": self.case_id,
            "probabilities": self.probabilities,
            "decision": self.decision,
            "thresholds": self.thresholds,
            "pet_metrics": self.pet_metrics,
            "shap": self.shap,
            "imputed_inputs": self.imputed_inputs,
            "missing_modalities": self.missing_modalities,
            "warnings": self.warnings,
            "suv_conversion": self.suv_conversion,
        }

    def write(self, out_dir) -> Path:
        """Write the prediction folder (`PREDICTION_FILES`) to ``out_dir``; the JSON last, so that its presence
        means the folder is complete."""
        import pandas as pd

        from .io.images import write_image

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for part in IMAGE_PARTS:
            if getattr(self, part) is not None:
                write_image(getattr(self, part), out_dir / PREDICTION_FILES[part])
        rows = [(m, f, v) for m, d in self.shap.items() for f, v in d.items()]
        with atomic_write(out_dir / PREDICTION_FILES["shap"]) as tmp:
            pd.DataFrame(rows, columns=["model", "feature", "shap"]).to_csv(tmp, index=False)
        return write_text(out_dir / PREDICTION_FILES["json"], json.dumps(self.to_json_dict(), indent=2))

    @classmethod
    def read(cls, out_dir) -> "PredictionResult":
        """The prediction a folder written by `write` holds."""
        out_dir = Path(out_dir)
        json_path = out_dir / PREDICTION_FILES["json"]
        if not json_path.is_file():
            raise InputError(f"no {json_path.name} in {out_dir}: the prediction did not finish")
        data = json.loads(json_path.read_text())
        missing = set(REQUIRED_JSON_KEYS) - set(data)
        if missing:
            raise InputError(f"{json_path} lacks {sorted(missing)}")
        images = {part: sitk.ReadImage(str(out_dir / PREDICTION_FILES[part]))
                  for part in IMAGE_PARTS if (out_dir / PREDICTION_FILES[part]).is_file()}
        return cls(case_id=data["case_id"], probabilities=data["probabilities"], decision=data["decision"],
                   thresholds=data["thresholds"], pet_metrics=data["pet_metrics"], shap=data.get("shap") or {},
                   imputed_inputs=data.get("imputed_inputs") or {}, warnings=list(data.get("warnings") or []),
                   missing_modalities=list(data.get("missing_modalities") or []),
                   suv_conversion=data.get("suv_conversion") or {},
                   **images)
