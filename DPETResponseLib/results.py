"""What a prediction for one patient returns: plain data the CLI prints and the Slicer module puts in the scene."""

from __future__ import annotations

from dataclasses import dataclass, field

import SimpleITK as sitk


@dataclass
class PredictionResult:
    """Prediction for one PET and tumour mask.

    probabilities: pCR probability per model (`clinical`, `radiomics`, `ith`, `deep`, `fusion_feature`,
        `fusion_decision`, ...), only the models the bundle holds and the inputs allow.
    decision: predicted class per model at the bundle's threshold (1 = pCR).
    thresholds: the threshold per model, fixed on the training data.
    pet_metrics: SUVmax, SUVmean, SUVpeak, MTV, TLG of the tumour.
    imputed_inputs: per model whose inputs included a value imputed from the training data (a clinical value not
        given, a feature that could not be computed), the columns imputed; empty when no model used one.
    shap: per model, feature name -> SHAP value for this patient (log-odds units).
    mask, subregions, gradcam: images on the PET's grid (subregions: 0 background, 1..K by increasing uptake;
        gradcam: float32 in [0, 1], None where the bundle has no deep model).
    """

    case_id: str
    probabilities: dict[str, float]
    decision: dict[str, int]
    thresholds: dict[str, float]
    pet_metrics: dict[str, float]
    shap: dict[str, dict[str, float]] = field(default_factory=dict)
    imputed_inputs: dict[str, list[str]] = field(default_factory=dict)
    mask: sitk.Image | None = None
    subregions: sitk.Image | None = None
    gradcam: sitk.Image | None = None
    warnings: list[str] = field(default_factory=list)

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
            "warnings": self.warnings,
        }
