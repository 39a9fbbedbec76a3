"""The study's models trained together (every pathway, both fusions, the CNN, thresholds), their bundle, and the
record of what an evaluation rests on."""

from .bundle import Bundle, read_bundle, write_bundle
from .model import StudyConfig, StudyModel
from .record import provenance_record, run_record

__all__ = ["StudyConfig", "StudyModel", "Bundle", "read_bundle", "write_bundle", "run_record", "provenance_record"]
