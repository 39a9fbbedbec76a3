"""PET DICOM headers -> SUV, by the IBSI-SUV manual (Vácha, Hofheinz, Braune, Löck, Zwanenburg: "Comprehensive
manual for SUV computation and digital reference objects for its verification"), every rule with a record of how.

`suv_conversion` turns a series' headers into one factor per slice (stored value x RescaleSlope x factor = SUV)
and a JSON-ready record of the rule, the tags and the values used (the IBSI reporting guidelines ask for it). The
steps, each the manual's section:

1. Rescale: the DICOM reader applies each slice's own RescaleSlope; RescaleIntercept must be 0.
2. Units -> body-weight SUV (SUVbw): BQML (Bq/ml) divided by the decay-corrected dose per gram of body weight;
   GML (already SUV of SUVType, BW when empty) and CM2ML (SUVbsa) converted back to body weight from the patient's
   weight, height and sex; CNTS via Philips' private SUV scale factor (7053,1000), else its activity concentration
   factor (7053,1009), else divided by the frame duration into CPS; CPS divided by the voxel volume (dose
   calibrated images, "DCAL") or also multiplied by DoseCalibrationFactor. Other units are refused.
3. Dose: RadionuclideTotalDose in Bq or MBq told apart by value; decay correction ADMIN (no decay), START (decayed
   to the reference time: DecayCorrectionDateTime, GE's private scan date-time, the series date/time unless it is
   after the acquisition, or back-computed from each slice's acquisition time, frame reference time and frame
   duration), NONE (each slice corrected from its own acquisition time over its frame duration).
4. SUVbw -> the requested SUV type (body weight, lean body mass, ideal body weight, body surface area).

Values that come out implausible for a human PET are refused by `require_plausible_suv`, never passed on.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from pydicom.multival import MultiValue

from ..core.errors import ConfigError, InputError

#: The `suv_type` a caller asks for -> its DICOM SUVType. "lbm" is Janmahasatian's lean body mass (SUL, as PERCIST).
SUV_TYPES = {"bw": "BW", "lbm": "LBMJANMA", "lbmjames128": "LBMJAMES128", "ibw": "IBW", "bsa": "BSA"}

#: RadionuclideTotalDose is stored in Bq or MBq (both allowed by DICOM IODs); the manual says to tell them apart by
#: value: human PET doses cluster near 4e2 in MBq and 4e8 in Bq. Below MBQ_MAX the value is read as MBq (up to
#: 10 GBq), from BQ_MIN as Bq (10 MBq and more); in between neither reading is a plausible dose.
MBQ_MAX, BQ_MIN = 1e4, 1e7

#: The manual: PatientWeight above 1000 was entered in grams.
WEIGHT_IN_GRAMS_ABOVE = 1000.0
#: PatientSize is in metres; outside this range it is not a human height in metres (e.g. entered in cm).
HEIGHT_RANGE_M = (0.3, 2.8)

#: A human PET in SUV has its maximum within these bounds; outside them the conversion (or the file) is wrong:
#: e.g. Bq/ml taken as SUV gives maxima in the tens of thousands, a dose in Bq read as MBq a maximum near 1e-5.
PLAUSIBLE_SUVMAX = (0.05, 1000.0)

#: A RadiopharmaceuticalStartTime without a date is placed on the day that puts it nearest before the scan; that
#: is only unambiguous for uptake times under 12 h, so it is refused for nuclides that are imaged days later.
TIME_ONLY_MAX_HALF_LIFE_S = 12 * 3600.0
#: Beyond this many half-lives between injection and scan (< 0.1 % of the dose left) the times are inconsistent.
MAX_UPTAKE_HALF_LIVES = 10.0
#: RadionuclideHalfLife and the nuclide named in RadionuclideCodeSequence must agree within this fraction.
HALF_LIFE_TOLERANCE = 0.05
#: Reference times back-computed from different slices must agree within this many seconds.
REFERENCE_TIME_TOLERANCE_S = 1.0

#: Physical half-lives (s) of PET radionuclides (DDEP/NNDC), for a series without RadionuclideHalfLife and to
#: check the one it has; keyed by (mass number, element) as CodeMeaning spells them ("^18^Fluorine").
HALF_LIVES_S = {
    (18, "fluorine"): 6586.2, (11, "carbon"): 1223.4, (13, "nitrogen"): 597.9, (15, "oxygen"): 122.24,
    (68, "gallium"): 4062.6, (64, "copper"): 45720.0, (89, "zirconium"): 282276.0, (82, "rubidium"): 75.45,
    (124, "iodine"): 360806.0,
}

# Private tags the manual names, each valid under its creator (or with no creator at all, as anonymisers leave it).
_GE_SCAN_DATETIME = ((0x0009, 0x100D), "GEMS_PETD_01")
_GE_ADMIN_DATETIME = ((0x0009, 0x103B), "GEMS_PETD_01")
_PHILIPS_SUV_FACTOR = ((0x7053, 0x1000), "Philips PET Private Group")
_PHILIPS_ACTIVITY_FACTOR = ((0x7053, 0x1009), "Philips PET Private Group")


def check_suv_type(suv_type: str) -> str:
    if suv_type not in SUV_TYPES:
        raise ConfigError(f"suv_type must be one of {sorted(SUV_TYPES)}, got {suv_type!r}")
    return SUV_TYPES[suv_type]


@dataclass
class _Reading:
    """What one conversion read and decided: becomes the provenance record."""

    case: object
    source: str
    tags: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    steps: list = field(default_factory=list)

    def note(self, text: str) -> None:
        """Record something worth a look, once however often the rule that notices it runs (per slice, per
        normaliser)."""
        if text not in self.notes:
            self.notes.append(text)

    def error(self, message: str) -> InputError:
        return InputError(f"{message} ({self.source})", case=self.case)

    def tag(self, ds, keyword: str, positive: bool = False):
        """A standard tag's value (recorded in the provenance); missing or empty is an error naming it."""
        value = ds.get(keyword)
        if value is None or value == "":
            raise self.error(f"DICOM tag {keyword} is missing")
        if positive:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise self.error(f"DICOM tag {keyword}={value!r} is not a number") from None
            if not (number > 0 and math.isfinite(number)):
                raise self.error(f"DICOM tag {keyword}={value} must be a positive number")
            value = number
        self.tags.setdefault(keyword, _jsonable(value))
        return value

    def private(self, ds, spec, name: str) -> str | None:
        """A private tag's value as text, if present under its creator (or under none)."""
        (group, element), creator = spec
        item = ds.get((group, element))
        if item is None or item.value in (None, b"", ""):
            return None
        block_creator = ds.get((group, element >> 8))
        if block_creator is not None and str(block_creator.value).strip() != creator:
            return None
        value = item.value
        if isinstance(value, bytes):
            value = value.decode("ascii", errors="replace")
        if isinstance(value, MultiValue):
            value = value[0]
        text = str(value).strip().strip("\x00").strip()
        self.tags.setdefault(f"{name} ({group:04X},{element:04X})", text)
        return text or None


def _jsonable(value):
    if isinstance(value, (int, float, str)):
        return value
    if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
        return [str(v) for v in value]
    return str(value)


# ----------------------------------------------------------------------------------------------------- times
def _naive(value: datetime, ds, reading: _Reading) -> datetime:
    """A DT with a UTC offset, as local time: in the series' TimezoneOffsetFromUTC if given, else its own."""
    if value.tzinfo is None:
        return value
    offset = ds.get("TimezoneOffsetFromUTC")
    if offset:
        from pydicom.valuerep import DT

        local = DT(f"20000101000000{offset}").tzinfo
        return value.astimezone(local).replace(tzinfo=None)
    reading.note(f"a date-time carries a UTC offset ({value.isoformat()}) and the series has no "
                         "TimezoneOffsetFromUTC: taken as local time")
    return value.replace(tzinfo=None)


def _parse_dt(text, what: str, ds, reading: _Reading) -> datetime:
    from pydicom.valuerep import DT

    try:
        value = DT(str(text).strip())
        return _naive(datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                               value.microsecond, tzinfo=value.tzinfo), ds, reading)
    except (ValueError, TypeError, AttributeError):
        raise reading.error(f"cannot parse {what} {text!r} as a DICOM date-time") from None


def _parse_da_tm(date, time, what: str, reading: _Reading) -> datetime:
    from pydicom.valuerep import DA, TM

    try:
        day, clock = DA(str(date).strip()), TM(str(time).strip())
        return datetime(day.year, day.month, day.day, clock.hour, clock.minute, clock.second, clock.microsecond)
    except (ValueError, TypeError, AttributeError):
        raise reading.error(f"cannot parse {what} (date {date!r}, time {time!r})") from None


def _nearest_day(date_time: datetime, anchor: datetime) -> datetime:
    """``date_time``'s time of day on the day (anchor's, the one before or after) that puts it nearest ``anchor``:
    a time without its own date, in a scan that may cross midnight."""
    return min((date_time + timedelta(days=d) for d in (-1, 0, 1)), key=lambda t: abs(t - anchor))


def _series_start(ds, reading: _Reading) -> datetime:
    return _parse_da_tm(reading.tag(ds, "SeriesDate"), reading.tag(ds, "SeriesTime"), "SeriesDate/SeriesTime",
                        reading)


def _acquisition(ds, series_start: datetime, reading: _Reading) -> datetime:
    """A slice's acquisition start: AcquisitionDateTime, or AcquisitionDate + AcquisitionTime, or the time alone on
    the day nearest the series start."""
    if ds.get("AcquisitionDateTime"):
        return _parse_dt(ds.AcquisitionDateTime, "AcquisitionDateTime", ds, reading)
    time = reading.tag(ds, "AcquisitionTime")
    if ds.get("AcquisitionDate"):
        return _parse_da_tm(ds.AcquisitionDate, time, "AcquisitionDate/AcquisitionTime", reading)
    return _nearest_day(_parse_da_tm(series_start.strftime("%Y%m%d"), time, "AcquisitionTime", reading),
                        series_start)


def _frame_duration_s(ds, reading: _Reading) -> float:
    return reading.tag(ds, "ActualFrameDuration", positive=True) / 1000.0  # stored in ms


def _average_count_time_s(decay_constant: float, duration_s: float) -> float:
    """T_ave = ln(lambda T / (1 - exp(-lambda T))) / lambda: when, after the frame start, the activity equals its
    mean over a frame of length T (the manual's formula)."""
    x = decay_constant * duration_s
    return math.log(x / -math.expm1(-x)) / decay_constant


def _reference_time(headers, reading: _Reading, decay_constant: float) -> datetime:
    """The time START-corrected images are decay corrected to, by the first of the manual's methods that the tags
    allow (its QIBA order, with the GE private tag first as it overrides the series time where present)."""
    first = headers[0]
    if first.get("DecayCorrectionDateTime"):
        reading.values["reference_time_from"] = "DecayCorrectionDateTime (0018,9701)"
        return _parse_dt(first.DecayCorrectionDateTime, "DecayCorrectionDateTime", first, reading)
    ge_scan = reading.private(first, _GE_SCAN_DATETIME, "GE PET scan date-time")
    if ge_scan:
        reading.values["reference_time_from"] = "GE private PET scan date-time (0009,100D)"
        return _parse_dt(ge_scan, "GE private PET scan date-time (0009,100D)", first, reading)
    series = _series_start(first, reading)
    acquisitions = [_acquisition(ds, series, reading) for ds in headers]
    if series <= min(acquisitions):
        reading.values["reference_time_from"] = "SeriesDate/SeriesTime"
        return series
    # SeriesTime was rewritten (post-processing, anonymisation): back-compute t_ref = t_acq + T_ave - dt per slice.
    reading.note(f"SeriesTime {series:%H:%M:%S} is after the earliest AcquisitionTime "
                         f"{min(acquisitions):%H:%M:%S} (post-processed series?)")
    if all(ds.get("FrameReferenceTime") not in (None, "") and ds.get("ActualFrameDuration") for ds in headers):
        starts = [acq + timedelta(seconds=_average_count_time_s(decay_constant, _frame_duration_s(ds, reading))
                                  - float(reading.tag(ds, "FrameReferenceTime")) / 1000.0)
                  for ds, acq in zip(headers, acquisitions)]
        spread = (max(starts) - min(starts)).total_seconds()
        if spread > REFERENCE_TIME_TOLERANCE_S:
            raise reading.error(f"the reference time back-computed from AcquisitionTime, FrameReferenceTime and "
                                f"ActualFrameDuration differs by {spread:.1f} s between slices")
        reading.values["reference_time_from"] = ("back-computed from AcquisitionTime + T_ave(ActualFrameDuration) "
                                                 "- FrameReferenceTime")
        return min(starts)
    warnings.warn(f"{reading.case or reading.source}: SeriesTime is after the earliest AcquisitionTime and no "
                  "FrameReferenceTime/ActualFrameDuration is given: the earliest AcquisitionDate/Time is the decay "
                  "reference", stacklevel=4)
    reading.values["reference_time_from"] = "earliest AcquisitionDate/AcquisitionTime"
    return min(acquisitions)


def _injection_time(ds, item, anchor: datetime, half_life_s: float, reading: _Reading) -> datetime:
    """Radiopharmaceutical administration: RadiopharmaceuticalStartDateTime, else RadiopharmaceuticalStartTime on
    the day nearest before ``anchor`` (a scan may cross midnight), else GE's private administration date-time."""
    if item.get("RadiopharmaceuticalStartDateTime"):
        reading.values["injection_time_from"] = "RadiopharmaceuticalStartDateTime"
        return _parse_dt(reading.tag(item, "RadiopharmaceuticalStartDateTime"), "RadiopharmaceuticalStartDateTime",
                         ds, reading)
    if item.get("RadiopharmaceuticalStartTime"):
        if half_life_s > TIME_ONLY_MAX_HALF_LIFE_S:
            raise reading.error(f"only RadiopharmaceuticalStartTime (no date) is given for a radionuclide with a "
                                f"half-life of {half_life_s / 3600:.1f} h: the injection day is ambiguous; set "
                                "RadiopharmaceuticalStartDateTime")
        time = reading.tag(item, "RadiopharmaceuticalStartTime")
        injected = _nearest_day(_parse_da_tm(anchor.strftime("%Y%m%d"), time, "RadiopharmaceuticalStartTime",
                                             reading), anchor)
        if injected.date() != anchor.date():
            reading.note(f"RadiopharmaceuticalStartTime {time} has no date: placed on {injected:%Y-%m-%d}, "
                                 f"the day before the scan (the scan crossed midnight)")
        reading.values["injection_time_from"] = "RadiopharmaceuticalStartTime on the scan's day"
        return injected
    ge_admin = reading.private(ds, _GE_ADMIN_DATETIME, "GE administration date-time")
    if ge_admin:
        reading.values["injection_time_from"] = "GE private administration date-time (0009,103B)"
        return _parse_dt(ge_admin, "GE private administration date-time (0009,103B)", ds, reading)
    raise reading.error("the injection time is missing: neither RadiopharmaceuticalStartDateTime nor "
                        "RadiopharmaceuticalStartTime is set")


# ----------------------------------------------------------------------------------------------------- dose
_ELEMENTS = {"f": "fluorine", "c": "carbon", "n": "nitrogen", "o": "oxygen", "ga": "gallium", "cu": "copper",
             "zr": "zirconium", "rb": "rubidium", "i": "iodine"}


def _nuclide(meaning: str) -> tuple[int, str] | None:
    """(mass number, element) of a known PET nuclide named in a CodeMeaning: "^18^Fluorine", "Fluorine-18", "F-18",
    "18F", "F^18^[^18^Fluorine]"."""
    pairs = [(m, e) for m, e in re.findall(r"(\d+)\^?\s*-?\s*([A-Za-z]+)", meaning)]
    pairs += [(m, e) for e, m in re.findall(r"([A-Za-z]+)\s*-?\s*\^?(\d+)", meaning)]
    for mass, element in pairs:
        key = (int(mass), _ELEMENTS.get(element.lower(), element.lower()))
        if key in HALF_LIVES_S:
            return key
    return None


def _half_life_s(item, reading: _Reading) -> float:
    """RadionuclideHalfLife, checked against (or, when missing, taken from) RadionuclideCodeSequence's nuclide."""
    nuclide = None
    for code in item.get("RadionuclideCodeSequence") or []:
        nuclide = nuclide or _nuclide(str(code.get("CodeMeaning", "")))
        reading.tags.setdefault("RadionuclideCodeSequence", str(code.get("CodeMeaning")))
    known = HALF_LIVES_S.get(nuclide)
    if item.get("RadionuclideHalfLife") in (None, ""):
        if known is None:
            raise reading.error("DICOM tag RadionuclideHalfLife is missing and RadionuclideCodeSequence names no "
                                f"radionuclide of known half-life ({sorted(f'{e}-{m}' for m, e in HALF_LIVES_S)})")
        reading.note(f"RadionuclideHalfLife missing: {known} s of {nuclide[1]}-{nuclide[0]} used "
                             "(RadionuclideCodeSequence)")
        reading.values["half_life_from"] = "RadionuclideCodeSequence"
        return known
    half_life = reading.tag(item, "RadionuclideHalfLife", positive=True)
    if known is not None and abs(half_life / known - 1) > HALF_LIFE_TOLERANCE:
        raise reading.error(f"DICOM tags disagree: RadionuclideHalfLife={half_life:g} s but "
                            f"RadionuclideCodeSequence names {nuclide[1]}-{nuclide[0]} (half-life {known:g} s)")
    reading.values["half_life_from"] = "RadionuclideHalfLife"
    return half_life


def _dose_bq(item, reading: _Reading) -> float:
    value = reading.tag(item, "RadionuclideTotalDose", positive=True)
    if value < MBQ_MAX:
        reading.note(f"RadionuclideTotalDose {value:g} read as MBq (by its value)")
        return value * 1e6
    if value >= BQ_MIN:
        return value
    raise reading.error(f"RadionuclideTotalDose {value:g} is neither a plausible dose in MBq (< {MBQ_MAX:g}) nor "
                        f"in Bq (>= {BQ_MIN:g}): SUV cannot be computed")


# ----------------------------------------------------------------------------------------------------- patient
def _weight_kg(ds, reading: _Reading) -> float:
    weight = reading.tag(ds, "PatientWeight", positive=True)
    if weight > WEIGHT_IN_GRAMS_ABOVE:
        reading.note(f"PatientWeight {weight:g} > {WEIGHT_IN_GRAMS_ABOVE:g}: taken as grams (manual)")
        weight /= 1000.0
    return weight


def _height_m(ds, reading: _Reading) -> float:
    height = reading.tag(ds, "PatientSize", positive=True)
    if not HEIGHT_RANGE_M[0] <= height <= HEIGHT_RANGE_M[1]:
        raise reading.error(f"DICOM tag PatientSize={height:g} is not a height in metres "
                            f"({HEIGHT_RANGE_M[0]}-{HEIGHT_RANGE_M[1]})")
    return height


def _by_sex(ds, reading: _Reading, male: float, female: float, what: str) -> float:
    """The sex-specific value; for PatientSex "O" (other) the mean of both, as the manual suggests."""
    sex = str(reading.tag(ds, "PatientSex")).strip().upper()
    if sex == "M":
        return male
    if sex == "F":
        return female
    if sex == "O":
        reading.note(f"PatientSex O: {what} is the mean of the male and female formulas")
        return (male + female) / 2
    raise reading.error(f"DICOM tag PatientSex={sex!r}: {what} needs M, F or O")


def normaliser(suv_type: str, ds, reading: _Reading) -> float:
    """The SUV normaliser of a DICOM SUVType: grams of body weight, lean body mass or ideal body weight, or square
    centimetres of body surface area (the manual's formulas; W in kg, H in cm unless said)."""
    w = _weight_kg(ds, reading)
    if suv_type == "BW":
        return 1000.0 * w
    h_cm = 100.0 * _height_m(ds, reading)
    if suv_type == "LBM":  # Morgan
        return 1000.0 * _by_sex(ds, reading, 1.10 * w - 120 * (w / h_cm) ** 2, 1.07 * w - 148 * (w / h_cm) ** 2,
                                "LBM (Morgan)")
    if suv_type == "LBMJAMES128":
        return 1000.0 * _by_sex(ds, reading, 1.10 * w - 128 * (w / h_cm) ** 2, 1.07 * w - 148 * (w / h_cm) ** 2,
                                "LBM (James)")
    if suv_type == "LBMJANMA":  # BMI in kg/m^2
        bmi = w / (h_cm / 100) ** 2
        return 1000.0 * _by_sex(ds, reading, 9270 * w / (6680 + 216 * bmi), 9270 * w / (8780 + 244 * bmi),
                                "LBM (Janmahasatian)")
    if suv_type == "IBW":
        return 1000.0 * _by_sex(ds, reading, 48.0 + 1.06 * (h_cm - 152), 45.5 + 0.91 * (h_cm - 152), "IBW")
    if suv_type == "BSA":  # Du Bois, m^2 -> cm^2
        return 1e4 * 0.007184 * h_cm**0.725 * w**0.425
    raise reading.error(f"DICOM tag SUVType={suv_type!r} is not a DICOM SUV type (BW, LBM, LBMJAMES128, LBMJANMA, "
                        "IBW, BSA)")


# ----------------------------------------------------------------------------------------------------- units
def _activity_to_suvbw(headers, reading: _Reading) -> np.ndarray:
    """Per-slice factor Bq/ml -> SUVbw: body weight over the dose at the time the voxel values refer to."""
    first = headers[0]
    corrected = first.get("CorrectedImage")
    if corrected is not None and "ATTN" not in corrected:
        raise reading.error(f"DICOM tag CorrectedImage={list(corrected)}: the image is not attenuation corrected, so "
                            "SUV is meaningless")
    decay = str(reading.tag(first, "DecayCorrection")).strip().upper()
    if corrected is not None and decay in ("START", "ADMIN") and "DECY" not in corrected:
        raise reading.error(f"DICOM tags disagree: DecayCorrection={decay} but CorrectedImage={list(corrected)} "
                            "lacks DECY")
    sequence = first.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise reading.error("DICOM tag RadiopharmaceuticalInformationSequence is missing")
    item = sequence[0]
    dose = _dose_bq(item, reading)
    weight_g = normaliser("BW", first, reading)
    reading.values.update(dose_bq=dose, weight_g=weight_g)
    if decay == "ADMIN":
        reading.steps.append("DecayCorrection ADMIN: images refer to the injection, so the injected dose is used")
        return np.full(len(headers), weight_g / dose)
    if decay not in ("START", "NONE"):
        raise reading.error(f"DICOM tag DecayCorrection={decay}: expected START, ADMIN or NONE")
    half_life = _half_life_s(item, reading)
    decay_constant = math.log(2) / half_life
    reading.values["half_life_s"] = half_life

    def uptake_s(at: datetime, injected: datetime, what: str) -> float:
        elapsed = (at - injected).total_seconds()
        if elapsed < 0:
            raise reading.error(f"the injection ({injected:%Y-%m-%d %H:%M:%S}) is after the {what} "
                                f"({at:%Y-%m-%d %H:%M:%S})")
        if elapsed > MAX_UPTAKE_HALF_LIVES * half_life:
            raise reading.error(f"{elapsed / 3600:.1f} h between injection and {what} is more than "
                                f"{MAX_UPTAKE_HALF_LIVES:g} half-lives ({half_life:g} s): the times are inconsistent")
        return elapsed

    if decay == "START":
        reference = _reference_time(headers, reading, decay_constant)
        injected = _injection_time(first, item, reference, half_life, reading)
        elapsed = uptake_s(reference, injected, "decay reference time")
        reading.values.update(reference_time=reference.isoformat(), injection_time=injected.isoformat(),
                              uptake_s=elapsed, decay_factor=math.exp(-decay_constant * elapsed))
        reading.steps.append("DecayCorrection START: dose decayed from the injection to the reference time")
        return np.full(len(headers), weight_g / (dose * math.exp(-decay_constant * elapsed)))
    # NONE: each slice holds the mean activity over its own frame [t_acq, t_acq + T], not decay corrected.
    series = _series_start(first, reading)
    acquisitions = [_acquisition(ds, series, reading) for ds in headers]
    injected = _injection_time(first, item, min(acquisitions), half_life, reading)
    factors = []
    for ds, acq in zip(headers, acquisitions):
        frame = decay_constant * _frame_duration_s(ds, reading)
        elapsed = uptake_s(acq, injected, "acquisition")
        factors.append(weight_g * frame / -math.expm1(-frame) * math.exp(decay_constant * elapsed) / dose)
    reading.values.update(injection_time=injected.isoformat(), first_acquisition=min(acquisitions).isoformat())
    reading.steps.append("DecayCorrection NONE: each slice decay corrected from its AcquisitionTime over its "
                         "ActualFrameDuration to the injection")
    return np.asarray(factors)


def _voxel_ml(ds, reading: _Reading) -> float:
    rows, cols = (float(v) for v in reading.tag(ds, "PixelSpacing"))
    return rows * cols * reading.tag(ds, "SliceThickness", positive=True) / 1000.0


def _counts_to_suvbw(headers, reading: _Reading) -> np.ndarray:
    """Units CNTS (Philips): its SUV scale factor gives SUVbw, its activity concentration factor Bq/ml; with
    neither (or both 0), counts / frame duration = CPS."""
    suv_factors = [reading.private(ds, _PHILIPS_SUV_FACTOR, "Philips SUV scale factor") for ds in headers]
    if all(f not in (None, "") and float(f) != 0 for f in suv_factors):
        reading.steps.append("Units CNTS: Philips SUV scale factor (7053,1000) gives SUVbw")
        return np.array([float(f) for f in suv_factors])
    activity = [reading.private(ds, _PHILIPS_ACTIVITY_FACTOR, "Philips activity concentration scale factor")
                for ds in headers]
    if all(f not in (None, "") and float(f) != 0 for f in activity):
        reading.steps.append("Units CNTS: Philips activity concentration scale factor (7053,1009) gives Bq/ml")
        return np.array([float(f) for f in activity]) * _activity_to_suvbw(headers, reading)
    reading.steps.append("Units CNTS without Philips scale factors: counts / ActualFrameDuration = CPS")
    per_second = np.array([1.0 / _frame_duration_s(ds, reading) for ds in headers])
    return per_second * _cps_to_suvbw(headers, reading)


def _cps_to_suvbw(headers, reading: _Reading) -> np.ndarray:
    """Units CPS: per voxel volume (ml) gives Bq/ml if dose calibrated ("DCAL" in CorrectedImage), else also times
    DoseCalibrationFactor; the image must be attenuation corrected."""
    first = headers[0]
    corrected = list(first.get("CorrectedImage") or [])
    if "ATTN" not in corrected:
        raise reading.error(f"counts-based PET needs CorrectedImage with ATTN (is {corrected}): without attenuation "
                            "correction SUV is meaningless")
    if "DCAL" in corrected:
        calibration = 1.0
        reading.steps.append("CPS dose calibrated (DCAL): divided by the voxel volume")
    else:
        calibration = first.get("DoseCalibrationFactor")
        if calibration in (None, "") or float(calibration) <= 0:
            raise reading.error("counts-based PET that is not dose calibrated (no DCAL in CorrectedImage) needs "
                                "DoseCalibrationFactor, which is missing")
        calibration = reading.tag(first, "DoseCalibrationFactor", positive=True)
        reading.steps.append("CPS: times DoseCalibrationFactor, divided by the voxel volume")
    bqml = np.array([calibration / _voxel_ml(ds, reading) for ds in headers])
    return bqml * _activity_to_suvbw(headers, reading)


def _to_suvbw(headers, reading: _Reading) -> np.ndarray:
    first = headers[0]
    units = str(reading.tag(first, "Units")).strip().upper()
    if units == "BQML":
        reading.steps.append("Units BQML: activity concentration in Bq/ml")
        return _activity_to_suvbw(headers, reading)
    if units in ("GML", "CM2ML"):
        stored = str(first.get("SUVType") or ("BSA" if units == "CM2ML" else "BW")).strip().upper()
        reading.tags.setdefault("SUVType", stored)
        if (units == "CM2ML") != (stored == "BSA"):
            raise reading.error(f"DICOM tags disagree: Units={units} with SUVType={stored} (CM2ML is SUVbsa)")
        if stored == "BW":
            reading.steps.append("Units GML, SUVType BW: already SUVbw")
            return np.ones(len(headers))
        reading.steps.append(f"Units {units}, SUVType {stored}: SUV{stored.lower()} x body weight / {stored}")
        return np.full(len(headers), normaliser("BW", first, reading) / normaliser(stored, first, reading))
    if units == "CNTS":
        return _counts_to_suvbw(headers, reading)
    if units == "CPS":
        return _cps_to_suvbw(headers, reading)
    raise reading.error(f"DICOM tag Units={units}: SUV cannot be computed from it (the manual: BQML, GML, CM2ML, "
                        "CNTS, CPS can be converted; PROPCNTS, PROPCPS, 1CM and others cannot)")


def suv_conversion(headers, source: str, suv_type: str = "bw", case=None) -> tuple[np.ndarray, dict]:
    """Per-slice factors (stored value x RescaleSlope x factor = SUV of ``suv_type``) of a PET series' headers in
    slice order, and the provenance record: ``rule`` (the steps), ``tags`` (the values read), ``values`` (derived:
    dose in Bq, reference and injection times, uptake, normalisers, factors) and ``notes``."""
    target = check_suv_type(suv_type)
    reading = _Reading(case=case, source=source)
    frames = max(int(ds.get("NumberOfFrames") or 1) for ds in headers)
    if frames > 1:  # Enhanced PET keeps slopes and times per frame in functional groups, which are not read here
        raise reading.error(f"a multi-frame (Enhanced) PET file of {frames} frames is not supported: give the "
                            "series as single-frame slices")
    for keyword in ("Units", "SUVType", "DecayCorrection", "PatientWeight", "SeriesTime"):
        values = {str(ds.get(keyword)) for ds in headers}
        if len(values) > 1:
            raise reading.error(f"DICOM tag {keyword} differs between slices: {sorted(values)}")
    for ds in headers:
        intercept = ds.get("RescaleIntercept")
        if intercept not in (None, "") and float(intercept) != 0:
            raise reading.error(f"DICOM tag RescaleIntercept={intercept}: PET must have intercept 0 (manual: "
                                "exclude the series)")
    factors = _to_suvbw(headers, reading)
    if target != "BW":
        first = headers[0]
        factors = factors * normaliser(target, first, reading) / normaliser("BW", first, reading)
        reading.steps.append(f"SUVbw x {target} / body weight = SUV{target.lower()}")
    slopes = [float(ds.get("RescaleSlope", 1) or 1) for ds in headers]
    reading.values.update(factor_min=float(factors.min()), factor_max=float(factors.max()),
                          rescale_slope_min=min(slopes), rescale_slope_max=max(slopes))
    record = {"source": "DICOM", "path": source, "suv_type": suv_type, "dicom_suv_type": target,
              "rule": "; ".join(reading.steps), "tags": reading.tags, "values": reading.values,
              "notes": reading.notes}
    return factors, record


def file_record(path) -> dict:
    """The provenance of a PET image file (NIfTI, NRRD, MHA): taken to hold SUV already, not converted."""
    return {"source": "image file", "path": str(path), "suv_type": "as stored",
            "rule": "image file taken to hold SUV already: no conversion", "tags": {}, "values": {}, "notes": []}


def rule_counts(records: dict) -> dict[str, int]:
    """How many cases (``case -> record``) got their SUV by each rule, the most common first."""
    return dict(Counter(record["rule"] for record in records.values()).most_common())


def require_plausible_suv(values: np.ndarray, record: dict, case=None) -> None:
    """Refuse a PET whose SUV maximum is implausible for a human PET (`PLAUSIBLE_SUVMAX`), naming how the SUV was
    obtained; an all-zero image is left to the case checks."""
    finite = values[np.isfinite(values)]
    peak = float(finite.max()) if finite.size else 0.0
    record.setdefault("values", {})["image_max"] = peak
    low, high = PLAUSIBLE_SUVMAX
    if peak <= 0 or low <= peak <= high:
        return
    hint = ("is the file in Bq/ml or another unit? convert it from DICOM (dpet-response convert)"
            if record["source"] != "DICOM" else f"check the tags used: {record['tags']}")
    raise InputError(f"PET maximum {peak:.4g} is not a plausible SUV (expected {low:g}-{high:g}) for "
                     f"{record['path']} ({record['rule']}): {hint}", case=case)
