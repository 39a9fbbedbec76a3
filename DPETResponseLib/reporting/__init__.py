"""Metrics (DeLong and bootstrap AUC CIs, thresholds, calibration, decision curves), the figures and the HTML
report with its reporting checklists, and the DICOM outputs of a prediction (SEG, SR, parametric map)."""

from .checklist import build_checklist
from .dicom import dicom_pet_datasets, write_dicom_outputs
from .evaluation import auc_ci_delong, bootstrap_auc_ci, delong_paired_test, evaluate_split, youden_threshold
from .figures import (
    gradcam_montage,
    plot_comparison_matrix,
    plot_contribution_shares,
    plot_shap_summary,
    plot_shap_waterfall,
    save_figure,
)
from .report import write_report, write_report_from_dir

__all__ = [
    "auc_ci_delong", "bootstrap_auc_ci", "delong_paired_test", "evaluate_split", "youden_threshold",
    "gradcam_montage", "plot_comparison_matrix", "plot_contribution_shares", "plot_shap_summary",
    "plot_shap_waterfall", "save_figure", "write_report", "write_report_from_dir", "dicom_pet_datasets",
    "write_dicom_outputs", "build_checklist",
]
