"""Names every stage and the Slicer scene share: the subregion label values and the segments that show them."""

#: Label value of each metabolic subregion in a subregion label image (ordered by increasing mean SUV).
REGION_LABELS = {"low": 1, "high": 2}
#: Region name (and feature prefix, `peri_`) of the shell around the tumour (`features.peritumoural`).
PERITUMOURAL = "peri"
#: Segment name of the tumour, and of each subregion label value.
TUMOUR_SEGMENT = "Tumour"
SUBREGION_SEGMENTS = {1: "Low uptake", 2: "High uptake"}
