"""The 3D CNN pathway (MONAI): crops, networks, cross-validated training of the fold ensemble, Grad-CAM and the
end-to-end fusion head."""

from .data import CropSpec, preprocess_cohort
from .gradcam import gradcam_on_pet
from .nets import build_net, load_pretrained
from .train import DeepConfig, DeepModel, train_deep

__all__ = [
    "CropSpec", "preprocess_cohort", "build_net", "load_pretrained", "DeepConfig", "DeepModel", "train_deep",
    "gradcam_on_pet",
]
