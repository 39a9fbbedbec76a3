"""Reading and checking inputs: PET in SUV (NIfTI, NRRD, DICOM), masks (label images, RTSTRUCT, DICOM SEG), the one
grid rule, the case gatekeeper and the cohort manifest."""

from .dicom_seg import read_seg_mask
from .geometry import GRID_TOLERANCE, grid_differences, require_same_grid, same_grid
from .images import read_image, read_mask, read_pet, read_pet_with_provenance, write_image
from .manifest import clinical_columns, default_cache_dir, read_manifest, training_cases, validate_for_training
from .suv import SUV_TYPES, suv_conversion
from .validation import InputWarning, check_case, require_case

__all__ = [
    "GRID_TOLERANCE", "grid_differences", "require_same_grid", "same_grid", "read_image", "read_mask", "read_pet",
    "read_pet_with_provenance", "read_seg_mask", "SUV_TYPES", "suv_conversion", "write_image", "InputWarning",
    "check_case", "require_case", "clinical_columns", "default_cache_dir", "read_manifest", "training_cases",
    "validate_for_training",
]
