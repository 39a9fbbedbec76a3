"""The synthetic D-PET cohort: the demo's default data and the ground truth every model is judged against.

Each case is a small crop (1 mm isotropic voxels, as in dedicated breast PET) of breast tissue around one tumour.
Tumour properties (size, uptake, high-uptake fraction, core/rim uptake ratio, rim heterogeneity, surface
irregularity), the uptake of the stroma around the tumour, and clinical properties are drawn per case; a hidden
logit, linear in these factors, gives P(pCR) and the label is drawn from it. Each pathway of the study sees part
of the truth, and none sees all of it: the radiomics the tumour's own factors (size, uptake, shape, and through
the subregions the high-uptake fraction, core/rim contrast and rim texture); the CNN the tumour's pattern and
shape and also the peritumoural uptake, which lies outside the mask that radiomics reads; the clinical model
noisy Ki-67/grade, nodes, age, regimen and hormone-receptor status. The information is complementary, so fusing
the pathways can beat each of them (population AUC of the factors each pathway could see at best: clinical 0.71,
tumour 0.80, CNN-visible 0.78, all 0.89). The factors and logit go to ``hidden_factors.csv`` and ``oracle.json``,
never to the manifest.

Randomness: case ``i`` of seed ``s`` depends only on ``(s, i)`` (not on ``n``), so cohorts of different sizes
share their first cases; the split assignment depends on ``(s, n)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from .core.errors import InputError
from .core.files import atomic_write
from .io.images import write_image

STUDY_SPLITS = {"train": 90, "test": 39, "test2": 18}  # D-PET: 90 train, 39 test, 18 temporal test (n=147)
SPACING_MM = 1.0
MAX_SIDE = 80  # voxels per axis of a crop


@dataclass(frozen=True)
class Factor:
    """One hidden factor: drawn uniformly on [low, high] (through a Gaussian copula) and weighted in the logit
    by ``coefficient`` per population standard deviation."""

    low: float
    high: float
    coefficient: float
    description: str
    visible_to: str

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    @property
    def sd(self) -> float:
        return (self.high - self.low) / np.sqrt(12.0)


FACTORS = {
    "diameter_mm": Factor(8.0, 30.0, -0.35, "equivalent-sphere diameter of the tumour",
                          "whole-tumour shape/volume, CNN, clinical cT (noisy)"),
    "uptake_suv": Factor(3.5, 13.0, 0.40, "SUV of the high-uptake tissue before blur and noise",
                         "SUVmax, whole-tumour first order, CNN"),
    "high_fraction": Factor(0.35, 1.0, 0.95, "fraction of the tumour volume that is high-uptake (1: solid)",
                            "subregion volumes, CNN (rim vs solid)"),
    # a hypometabolic (necrotic/fibrotic) core takes up 10-50% of the viable rim's FDG; above that it is no longer a
    # distinct habitat at D-PET resolution and noise (DEVELOPERS.md: the wider range that was tried)
    "core_ratio": Factor(0.10, 0.50, 0.50, "uptake of the low-uptake core relative to the high-uptake rim",
                         "low/high subregion first order"),
    "rim_heterogeneity": Factor(0.05, 0.45, -0.85, "coefficient of variation of uptake inside the high-uptake part",
                                "high-subregion texture and first order"),
    "irregularity": Factor(0.0, 0.35, -0.70, "amplitude of surface lobulation (relative radius)",
                           "shape features, CNN"),
    "peritumoural_uptake": Factor(0.0, 0.8, 0.70, "uptake of a 2-6 mm shell of stroma around the tumour above the "
                                  "breast background (relative; an FDG-avid immune infiltrate)",
                                  "CNN (its crop holds the surroundings); not the mask-bound radiomics"),
    "proliferation": Factor(10.0, 80.0, 0.65, "true Ki-67 index (%) of the tumour",
                            "clinical Ki-67 and grade (both noisy); correlated with uptake"),
    "age_years": Factor(28.0, 75.0, -0.25, "age at diagnosis", "clinical age"),
    "node_positive": Factor(0.0, 1.0, -0.40, "clinically node positive (cN >= 1); indicator, P=0.6",
                            "clinical cN"),
    "dual_her2_blockade": Factor(0.0, 1.0, 0.65, "regimen with trastuzumab + pertuzumab (TCHP) vs trastuzumab "
                                 "(TCH); indicator, P=0.6", "clinical regimen"),
    "hormone_receptor_positive": Factor(0.0, 1.0, -0.55, "oestrogen/progesterone receptor positive; indicator, P=0.5 "
                                        "(HR+ HER2+ tumours reach pCR about half as often)", "clinical hr_status"),
}
# P(1) of the indicator factors; drawn by thresholding the copula
BINARY_FACTORS = {"node_positive": 0.6, "dual_her2_blockade": 0.6, "hormone_receptor_positive": 0.5}
# Copula correlations between factors (the rest are independent): bigger tumours are more necrotic, uptake
# follows proliferation, irregular tumours are more heterogeneous, bigger tumours more often node positive,
# HR-positive tumours proliferate less.
CORRELATIONS = {("diameter_mm", "high_fraction"): -0.3, ("uptake_suv", "proliferation"): 0.4,
                ("irregularity", "rim_heterogeneity"): 0.25, ("diameter_mm", "node_positive"): 0.3,
                ("proliferation", "hormone_receptor_positive"): -0.3}
# Solved (Monte Carlo, 2e5 factor draws, scipy brentq) so that the population pCR rate is 45% with these coefficients.
INTERCEPT = -0.362


def _case_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """Stream 0 draws a case's factors and label, stream 1 renders its image."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream], spawn_key=(index,)))


def _copula_cholesky() -> np.ndarray:
    names = list(FACTORS)
    corr = np.eye(len(names))
    for (a, b), r in CORRELATIONS.items():
        corr[names.index(a), names.index(b)] = corr[names.index(b), names.index(a)] = r
    return np.linalg.cholesky(corr)


def _standardized(factors: pd.DataFrame) -> pd.DataFrame:
    """Each factor centred and scaled by its population (uniform or Bernoulli) mean and SD."""
    out = {}
    for name, f in FACTORS.items():
        if name in BINARY_FACTORS:
            p = BINARY_FACTORS[name]
            out[name] = (factors[name] - p) / np.sqrt(p * (1 - p))
        else:
            out[name] = (factors[name] - f.mean) / f.sd
    return pd.DataFrame(out, index=factors.index)


def hidden_logit(factors: pd.DataFrame) -> pd.Series:
    """The hidden model: INTERCEPT + sum of coefficient * standardized factor."""
    z = _standardized(factors)
    return INTERCEPT + sum(FACTORS[name].coefficient * z[name] for name in FACTORS)


def sample_factors(n: int, seed: int = 0) -> pd.DataFrame:
    """The hidden factors, logit, P(pCR) and label of cases 0..n-1 (cheap: no image is rendered)."""
    from scipy.stats import norm

    chol = _copula_cholesky()
    rows, labels = [], []
    for i in range(n):
        rng = _case_rng(seed, i, 0)
        u = norm.cdf(chol @ rng.standard_normal(len(FACTORS)))
        row = {}
        for (name, f), ui in zip(FACTORS.items(), u):
            row[name] = (float(ui > 1 - BINARY_FACTORS[name]) if name in BINARY_FACTORS
                         else f.low + (f.high - f.low) * ui)
        rows.append(row)
        labels.append(rng.random())
    factors = pd.DataFrame(rows, index=pd.Index([case_id(i, n) for i in range(n)], name="case_id"))
    factors["hidden_logit"] = hidden_logit(factors)
    factors["p_pcr"] = 1.0 / (1.0 + np.exp(-factors["hidden_logit"]))
    factors["label"] = (np.array(labels) < factors["p_pcr"].to_numpy()).astype(int)
    return factors


def case_id(index: int, n: int) -> str:
    return f"DPET{index + 1:0{max(3, len(str(n)))}d}"


# ----------------------------------------------------------------------------------------------------- splits
def split_sizes(n: int, splits: dict | None = None) -> dict[str, int]:
    """Cases per split: ``splits`` (name -> count, summing to n) or the study's 90/39/18 scaled to ``n``."""
    if splits is not None:
        if sum(splits.values()) != n or any(int(v) != v or v < 2 for v in splits.values()):
            raise InputError(f"splits {splits} must be whole counts of at least 2 that sum to n={n}")
        return {k: int(v) for k, v in splits.items()}
    if n < 2 * len(STUDY_SPLITS):
        raise InputError(f"n={n} is too small: each of the splits {list(STUDY_SPLITS)} needs at least 2 cases")
    total = sum(STUDY_SPLITS.values())
    exact = {k: v * n / total for k, v in STUDY_SPLITS.items()}
    sizes = {k: max(2, int(np.floor(v))) for k, v in exact.items()}
    by_remainder = sorted(exact, key=lambda k: exact[k] - np.floor(exact[k]), reverse=True)
    i = 0
    while sum(sizes.values()) != n:  # largest remainder first; take back from the largest split if over
        if sum(sizes.values()) < n:
            sizes[by_remainder[i % len(by_remainder)]] += 1
            i += 1
        else:
            sizes[max(sizes, key=sizes.get)] -= 1
    return sizes


def assign_splits(labels: np.ndarray, sizes: dict[str, int], seed: int) -> np.ndarray:
    """Split names per case, stratified by label so that every split holds both classes."""
    n = len(labels)
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if min(len(positives), len(negatives)) < len(sizes):
        raise InputError(f"seed {seed}, n={n}: {len(positives)} pCR and {len(negatives)} non-pCR cases cannot give "
                         f"each of the splits {list(sizes)} both classes; use a larger n")
    # positives per split: proportional (largest remainder), at least 1 and leaving at least 1 negative
    exact = {k: s * len(positives) / n for k, s in sizes.items()}
    n_pos = {k: int(np.clip(np.floor(v), 1, sizes[k] - 1)) for k, v in exact.items()}
    order = sorted(exact, key=lambda k: exact[k] - np.floor(exact[k]), reverse=True)
    while sum(n_pos.values()) != len(positives):
        step = 1 if sum(n_pos.values()) < len(positives) else -1
        for k in order if step == 1 else order[::-1]:
            if 1 <= n_pos[k] + step <= sizes[k] - 1 and sum(n_pos.values()) != len(positives):
                n_pos[k] += step
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2, n]))
    positives, negatives = rng.permutation(positives), rng.permutation(negatives)
    out = np.empty(n, dtype=object)
    p = q = 0
    for k, size in sizes.items():
        out[positives[p:p + n_pos[k]]] = k
        out[negatives[q:q + size - n_pos[k]]] = k
        p, q = p + n_pos[k], q + size - n_pos[k]
    return out


# ----------------------------------------------------------------------------------------------------- clinical
def clinical_table(factors: pd.DataFrame, seed: int) -> pd.DataFrame:
    """What the clinic records: age, cT, cN, grade, Ki-67 (noisy readings of the hidden factors), regimen,
    hormone-receptor status."""
    rows = []
    for i, (cid, f) in enumerate(factors.iterrows()):
        rng = _case_rng(seed, i, 2)
        # clinical size (exam/ultrasound) overstates the PET-avid tumour; T4 (skin/chest wall) independently
        size = f["diameter_mm"] * np.exp(rng.normal(0.45, 0.3))
        ct = 4 if rng.random() < 0.06 else (1 if size <= 20 else 2 if size <= 50 else 3)
        cn = int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1])) if f["node_positive"] else 0
        ki67 = float(np.clip(np.round(f["proliferation"] + rng.normal(0, 15)), 1, 95))
        grade = int(np.clip(np.round(1.2 + (f["proliferation"] - 10) / 40 + rng.normal(0, 0.5)), 1, 3))
        rows.append({"case_id": cid, "age": int(round(f["age_years"])), "cT": ct, "cN": cn, "grade": grade,
                     "ki67": ki67, "regimen": "TCHP" if f["dual_her2_blockade"] else "TCH",
                     "hr_status": "positive" if f["hormone_receptor_positive"] else "negative"})
    return pd.DataFrame(rows).set_index("case_id")


# ----------------------------------------------------------------------------------------------------- images
def _smooth_noise(rng, shape, sigma_vox: float) -> np.ndarray:
    """A Gaussian random field with correlation length ``sigma_vox``, scaled to unit SD."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox, truncate=3.0)
    return field / max(float(field.std()), 1e-6)


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def render_case(factors: pd.Series, seed: int, index: int) -> tuple[sitk.Image, sitk.Image]:
    """The PET crop (float32 SUV) and the expert mask (UInt8) of one case, from its factors."""
    rng = _case_rng(seed, index, 1)
    factors = {name: float(factors[name]) for name in FACTORS}  # Python floats keep the arrays float32
    radius = factors["diameter_mm"] / 2
    ratios = np.array([1.0, rng.uniform(0.75, 1.0), rng.uniform(0.6, 1.0)])
    semi_axes = radius * ratios / np.prod(ratios) ** (1 / 3)  # same volume as the sphere of that diameter
    irregularity = factors["irregularity"]
    reach = semi_axes.max() * (1 + 2.5 * irregularity) + 12.0  # tumour extent + margin, mm
    side = int(min(MAX_SIDE, 2 * np.ceil(reach / SPACING_MM / 2) * 2))
    shape = (side, side, side)  # numpy (z, y, x)
    centre = (np.array(shape) - 1) / 2 + rng.uniform(-3, 3, 3)
    axes = [((np.arange(side, dtype=np.float32) - np.float32(c)) * SPACING_MM).reshape([-1 if a == d else 1
                                                                                       for a in range(3)])
            for d, c in enumerate(centre)]
    rotation = _random_rotation(rng)
    # tumour-frame coordinates in units of the semi-axes: local_k = sum_d rotation[d, k] * axes[d] / semi_axis_k
    local = [sum(float(rotation[d, k] / semi_axes[k]) * axes[d] for d in range(3)) for k in range(3)]
    rho = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2)

    # irregular surface: the boundary radius is modulated by a smooth field (lobulation)
    lobes = _smooth_noise(rng, shape, max(2.0, radius / 3) / SPACING_MM)
    lobes -= lobes[rho < 1].mean()  # bumps, not an overall growth or shrinkage of small tumours
    boundary = np.clip(1 + irregularity * lobes, 0.3, None)
    depth = rho / boundary  # < 1 inside the tumour, 1 on its surface
    tumour = depth < 1

    # low-uptake (necrotic) core: a scaled, slightly off-centre copy of the tumour, holding 1 - high_fraction
    core_radius = (1 - factors["high_fraction"]) ** (1 / 3)
    offset = [float(o) * core_radius for o in rng.uniform(-0.15, 0.15, 3)]
    core_depth = np.sqrt(sum((local[k] - offset[k]) ** 2 for k in range(3))) / boundary
    highness = (1 / (1 + np.exp(-(core_depth - core_radius) / 0.05)) if core_radius > 0.05
                else np.ones(shape, np.float32))
    texture = np.clip(1 + factors["rim_heterogeneity"] * _smooth_noise(rng, shape, 2.0 / SPACING_MM), 0.2, 2.5)
    uptake = factors["uptake_suv"] * (factors["core_ratio"] + (1 - factors["core_ratio"]) * highness * texture)

    # breast tissue: smooth structured background (two scales of correlated texture)
    level = float(rng.uniform(0.6, 1.1))
    background = level * np.clip(1 + 0.15 * _smooth_noise(rng, shape, 6.0 / SPACING_MM)
                                 + 0.08 * _smooth_noise(rng, shape, 2.0 / SPACING_MM), 0.3, None)
    # peritumoural stroma: a patchy shell of raised uptake 2-6 mm outside the tumour surface
    outside_mm = ndimage.distance_transform_edt(~tumour) * SPACING_MM
    shell = np.exp(-0.5 * ((outside_mm - 3.5) / 1.2) ** 2) * (outside_mm > 0)
    patches = np.clip(1 + 0.3 * _smooth_noise(rng, shape, 2.0 / SPACING_MM), 0.0, None)
    background = background * (1 + factors["peritumoural_uptake"] * shell * patches)
    activity = np.where(tumour, uptake, background).astype(np.float32)

    # scanner: partial-volume blur (PSF 1.5-2.5 mm FWHM, dedicated breast PET), then Poisson-like noise with
    # short-range correlation
    fwhm = float(rng.uniform(1.5, 2.5))
    blurred = ndimage.gaussian_filter(activity, fwhm / 2.3548 / SPACING_MM, truncate=3.0)
    counts_scale = float(rng.uniform(0.004, 0.012))  # variance per unit SUV
    noise = _smooth_noise(rng, shape, 0.7 / SPACING_MM)
    pet = np.clip(blurred + np.sqrt(blurred * counts_scale) * noise, 0, None).astype(np.float32)

    # expert mask: the tumour outline blurred and cut at a jittered level, then the observer's habit
    soft = ndimage.gaussian_filter(tumour.astype(np.float32), 1.0 / SPACING_MM, truncate=3.0)
    mask = soft > rng.uniform(0.3, 0.7)
    habit = rng.choice(["dilate", "erode", "none"], p=[0.25, 0.25, 0.5])
    if habit == "dilate":
        mask = ndimage.binary_dilation(mask)
    elif habit == "erode" and mask.sum() > 2000:  # eroding a small tumour would halve it
        mask = ndimage.binary_erosion(mask)
    mask = _largest_component(mask)
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    mask[box] = ndimage.binary_fill_holes(mask[box])

    origin = rng.uniform([-120, -150, -80], [120, -50, 80])  # somewhere in a breast, LPS mm
    return _to_image(pet, origin), _to_image(mask.astype(np.uint8), origin)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    return labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)


def _to_image(array: np.ndarray, origin) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((SPACING_MM,) * 3)
    image.SetOrigin(tuple(float(o) for o in origin))
    return image


# ----------------------------------------------------------------------------------------------------- cohort
def oracle_auc(factors: pd.DataFrame) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(factors["label"], factors["hidden_logit"]))


def make_cohort(outdir, n: int = 147, seed: int = 0, splits: dict | None = None, clinical: bool = True,
                progress: bool = False) -> Path:
    """Write a synthetic D-PET cohort of ``n`` cases to ``outdir``; returns the path of its manifest.csv.

    Files: images/<case>_pet.nii.gz, masks/<case>_mask.nii.gz, manifest.csv (case_id,image,mask,label,split
    and, with ``clinical``, age,cT,cN,grade,ki67,regimen; paths relative to the manifest), hidden_factors.csv
    (the true factors, hidden logit, P(pCR), label, split) and oracle.json (the hidden model and its AUC per
    split). ``splits``: name -> number of cases (default: the study's 90/39/18, scaled to ``n``); every split
    holds both classes. Same seed, same bytes.
    """
    outdir = Path(outdir)
    sizes = split_sizes(n, splits)
    factors = sample_factors(n, seed)
    factors["split"] = assign_splits(factors["label"].to_numpy(), sizes, seed)
    (outdir / "images").mkdir(parents=True, exist_ok=True)
    (outdir / "masks").mkdir(parents=True, exist_ok=True)

    cases = factors.index
    if progress:
        from tqdm import tqdm

        cases = tqdm(cases, desc="synthetic cases", unit="case")
    rows = []
    for i, cid in enumerate(cases):
        pet, mask = render_case(factors.loc[cid], seed, i)
        image_rel, mask_rel = f"images/{cid}_pet.nii.gz", f"masks/{cid}_mask.nii.gz"
        write_image(pet, outdir / image_rel)
        write_image(mask, outdir / mask_rel)
        rows.append({"case_id": cid, "image": image_rel, "mask": mask_rel,
                     "label": int(factors.at[cid, "label"]), "split": factors.at[cid, "split"]})
    manifest = pd.DataFrame(rows).set_index("case_id")
    if clinical:
        manifest = manifest.join(clinical_table(factors, seed))

    manifest_path = outdir / "manifest.csv"
    with atomic_write(manifest_path) as tmp:
        manifest.to_csv(tmp, float_format="%.6g")
    with atomic_write(outdir / "hidden_factors.csv") as tmp:
        factors.to_csv(tmp, float_format="%.10g")
    with atomic_write(outdir / "oracle.json") as tmp:
        tmp.write_text(json.dumps(_oracle(factors, n, seed, sizes), indent=2))
    return manifest_path


def _oracle(factors: pd.DataFrame, n: int, seed: int, sizes: dict) -> dict:
    by_split = {k: factors[factors["split"] == k] for k in sizes}
    return {
        "what": "Ground truth of the synthetic D-PET cohort: P(pCR) = 1 / (1 + exp(-logit)), label ~ Bernoulli(P).",
        "formula": "logit = intercept + sum_k coefficient_k * (x_k - mean_k) / sd_k  (x_k: hidden_factors.csv)",
        "intercept": INTERCEPT,
        "factors": {name: {"coefficient": f.coefficient,
                           "mean": BINARY_FACTORS.get(name, f.mean),
                           "sd": (np.sqrt(BINARY_FACTORS[name] * (1 - BINARY_FACTORS[name]))
                                  if name in BINARY_FACTORS else f.sd),
                           "range": [f.low, f.high], "description": f.description, "visible_to": f.visible_to}
                    for name, f in FACTORS.items()},
        "copula_correlations": {f"{a}~{b}": r for (a, b), r in CORRELATIONS.items()},
        "n": n, "seed": seed,
        "split_sizes": sizes,
        "pcr_rate_by_split": {k: float(v["label"].mean()) for k, v in by_split.items()},
        "auc_by_split": {k: oracle_auc(v) for k, v in by_split.items()},
        "auc_overall": oracle_auc(factors),
    }
