"""Names every stage and the Slicer scene share: the subregion label values and the segments that show them, the
imaging modalities besides the PET, the site and the body mask columns."""

#: Label value of each metabolic subregion in a subregion label image (ordered by increasing mean SUV).
REGION_LABELS = {"low": 1, "high": 2}
#: Region name (and feature prefix, `peri_`) of the shell around the tumour (`features.peritumoural`).
PERITUMOURAL = "peri"
#: Segment name of the tumour, and of each subregion label value.
TUMOUR_SEGMENT = "Tumour"
PERITUMOURAL_SEGMENT = "Peritumoural shell"
SUBREGION_SEGMENTS = {1: "Low uptake", 2: "High uptake"}

#: A modality's name in the manifest (``image_<name>``, ``mask_<name>``) and feature prefix (``<name>_``): lower-case
#: letters and digits. The PET is the manifest's ``image``; names that are feature prefixes already are taken.
MODALITY_NAME = r"[a-z][a-z0-9]*"
RESERVED_MODALITIES = frozenset({"pet", "whole", "high", "low", "sub", "ith", "dl", "dlf", PERITUMOURAL})
#: The manifest column naming each case's centre or scanner: the harmonisation's batch, never a predictor.
SITE = "site"
#: The manifest column of each case's body (or breast) mask on the PET's grid, which limits the peritumoural shell.
BODY_MASK = "body_mask"


def site_label(value) -> str:
    """A site value as text; 2.0 (an integer code read into a column with gaps) reads as 2."""
    if isinstance(value, float) and value.is_integer():  # numpy floats are floats
        return str(int(value))
    return str(value)


def modality_kind(name: str) -> str:
    """How a modality's intensities are read: "ct" (Hounsfield units, absolute) for names starting with ``ct``,
    else "unitless" (MR, ultrasound ...: an arbitrary scale, normalised before any feature)."""
    return "ct" if name.startswith("ct") else "unitless"


def modality_columns(name: str) -> tuple[str, str]:
    """The manifest columns of a modality: its image and its tumour mask."""
    return f"image_{name}", f"mask_{name}"
