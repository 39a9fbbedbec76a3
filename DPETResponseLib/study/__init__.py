"""The study's models trained together (every pathway, both fusions, the CNN, thresholds) and their bundle."""

from .bundle import Bundle, read_bundle, write_bundle
from .model import StudyConfig, StudyModel

__all__ = ["StudyConfig", "StudyModel", "Bundle", "read_bundle", "write_bundle"]
