"""Learning on the feature table (scikit-learn estimators): feature selection, the pathways, decision- and
feature-level fusion, and SHAP explanations."""

from .explain import contribution_shares, shap_values
from .fusion import DecisionFusion, FeatureFusion, TiedLogisticRegression
from .harmonise import ComBat
from .pathways import (
                       ClinicalEncoder,
                       ClinicalPathway,
                       ColumnProbability,
                       DeepFeaturePathway,
                       ITHPathway,
                       RadiomicsPathway,
                       pool_probabilities,
)
from .selection import LabelError, LassoSelector, MannWhitneySelector, MRMRSelector, VarianceCorrelationFilter

__all__ = [
    "LassoSelector", "MannWhitneySelector", "MRMRSelector", "VarianceCorrelationFilter", "ClinicalEncoder",
    "ClinicalPathway", "ColumnProbability", "DeepFeaturePathway", "ITHPathway", "RadiomicsPathway",
    "pool_probabilities", "DecisionFusion", "FeatureFusion", "TiedLogisticRegression", "contribution_shares",
    "shap_values", "LabelError", "ComBat",
]
