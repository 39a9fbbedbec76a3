"""Reading and checking inputs: PET in SUV (NIfTI, NRRD, DICOM), masks (label images, RTSTRUCT), the one grid rule,
the case gatekeeper and the cohort manifest."""

from .geometry import GRID_TOLERANCE, grid_differences, require_same_grid, same_grid
from .images import read_image, read_mask, read_pet, write_image
from .manifest import clinical_columns, default_cache_dir, read_manifest, training_cases, validate_for_training
from .validation import InputWarning, check_case, require_case

__all__ = [
    "GRID_TOLERANCE", "grid_differences", "require_same_grid", "same_grid", "read_image", "read_mask", "read_pet",
    "write_image", "InputWarning", "check_case", "require_case", "clinical_columns", "default_cache_dir",
    "read_manifest", "training_cases", "validate_for_training",
]
