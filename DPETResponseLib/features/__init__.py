"""Per-case features from one PET and its tumour mask: segmentation from a seed, PET metrics, metabolic subregions
(habitats), radiomics per region, the ITH score, and the per-case analysis that runs them all."""

from .analysis import analyse_case, analyse_image, check_settings, default_settings, resolve_settings
from .ith import ith_score
from .petmetrics import pet_metrics, suv_peak
from .radiomics import RadiomicsExtractor, default_params_path
from .segmentation import segment_from_seed
from .subregions import PopulationHabitats, TumourHabitats, tumour_habitats

__all__ = [
    "segment_from_seed", "pet_metrics", "suv_peak", "PopulationHabitats", "TumourHabitats", "tumour_habitats",
    "RadiomicsExtractor", "default_params_path", "ith_score", "analyse_case", "analyse_image", "check_settings",
    "default_settings", "resolve_settings",
]
