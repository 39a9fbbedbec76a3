"""The 3D CNN pathway (MONAI): crops, networks, cross-validated training of the fold ensemble, Grad-CAM and the
end-to-end fusion head; the frozen MedicalNet encoder of the deep-feature pathway."""

from .data import CropSpec, preprocess_cohort
from .frozen import FrozenEncoder, FrozenSettings
from .gradcam import gradcam_on_pet
from .nets import build_net, load_pretrained
from .train import DeepConfig, DeepModel, train_deep

__all__ = [
    "CropSpec", "preprocess_cohort", "build_net", "load_pretrained", "DeepConfig", "DeepModel", "train_deep",
    "gradcam_on_pet", "FrozenEncoder", "FrozenSettings",
]
