"""The per-case analysis settings for habitats: population habitats learned on training cases through the cached
cohort runner give the same centroids as fitting the images in memory; missing or unknown settings are errors."""

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from test_subregions import cored_or_solid

from DPETResponseLib.casefeatures import (analyse_image, default_settings, population_habitats,
                                          with_habitat_model)
from DPETResponseLib.errors import InputError
from DPETResponseLib.subregions import PopulationHabitats

FIRST_ORDER_ONLY = """
imageType:
  Original: {}
featureClass:
  firstorder:
setting:
  binWidth: 0.25
  label: 1
  minimumROIDimensions: 2
  minimumROISize: 9
"""


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("habitat_cohort")
    rows, images = [], []
    for i, (scale, core) in enumerate([(1, 8), (0.5, 0), (2, 9), (1.5, 0)]):
        img, mask, _ = cored_or_solid(scale, core, i)
        sitk.WriteImage(img, str(root / f"c{i}_pet.nrrd"))
        sitk.WriteImage(mask, str(root / f"c{i}_mask.nrrd"))
        rows.append({"case_id": f"c{i}", "image": str(root / f"c{i}_pet.nrrd"), "mask": str(root / f"c{i}_mask.nrrd")})
        images.append((img, mask))
    (root / "params.yaml").write_text(FIRST_ORDER_ONLY)
    return root, pd.DataFrame(rows).set_index("case_id"), images


def test_population_habitats_fit_through_the_cache_equal_the_in_memory_fit(cohort):
    root, cases, images = cohort
    settings = with_habitat_model(cases, {"radiomics_params": str(root / "params.yaml")}, root / "cache",
                                  progress=False)
    cached = PopulationHabitats.from_dict(settings["habitat_model"])
    in_memory = population_habitats({"habitat_k": 2, "habitat_radius_mm": 7.0, "habitat_seed": 0}).fit(images)
    assert cached.relative and cached.k == 2
    np.testing.assert_allclose(cached.centroids_, in_memory.centroids_, atol=1e-6)
    # settings with a model, or with per-tumour habitats, are passed through untouched
    assert with_habitat_model(cases, settings, root / "cache", progress=False) == settings
    per_tumour = with_habitat_model(cases, {"habitat_method": "tumour"}, root / "cache", progress=False)
    assert per_tumour == {**default_settings(), "habitat_method": "tumour"}
    assert settings["habitat_method"] == "population"  # explicit: a bundle keeps it whatever the default becomes

    img, mask, truth_high = cored_or_solid(1, 8, 99)
    features, labels, _ = analyse_image(img, mask, settings, "new")
    assert features["sub_high_fraction"] == pytest.approx((sitk.GetArrayFromImage(labels) == 2).sum()
                                                          / sitk.GetArrayFromImage(mask).sum())
    assert 0.3 < features["sub_high_fraction"] < truth_high + 0.05
    # the low habitat holds the cold core (SUV 3) and the blurred shell around it: measured means 8.2 vs 5.1
    assert features["high_original_firstorder_Mean"] > 1.5 * features["low_original_firstorder_Mean"]


def test_habitat_settings_errors_name_the_case(cohort):
    root, _, images = cohort
    img, mask = images[0]
    params = str(root / "params.yaml")
    with pytest.raises(InputError, match="case7.*habitat_model"):
        analyse_image(img, mask, {"radiomics_params": params, "habitat_method": "population"}, "case7")
    with pytest.raises(InputError, match="unknown habitat_method 'voxel'"):
        analyse_image(img, mask, {"radiomics_params": params, "habitat_method": "voxel"}, "case7")
