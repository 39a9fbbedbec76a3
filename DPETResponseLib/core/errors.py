"""Errors that name the case and the problem, so a user can act on them without a traceback."""


class DPETError(Exception):
    """Base class of every error this library raises on purpose."""


class InputError(DPETError):
    """Bad input for one case (unreadable file, empty mask, geometry mismatch, missing DICOM tag, ...).

    ``case`` names the case (case id or file path) and ``problem`` says what is wrong; ``str(err)`` joins them.
    """

    def __init__(self, problem: str, case: str | None = None):
        self.case = case
        self.problem = problem
        super().__init__(f"{case}: {problem}" if case else problem)


class ConfigError(DPETError):
    """Settings that cannot be used: an unknown or mistyped name, or a value the pipeline does not support."""


def listing(items, limit: int = 20) -> str:
    """``items`` as text for a message: the first ``limit`` comma-separated, then ", ... and N more"."""
    items = [str(item) for item in items]
    return ", ".join(items[:limit]) + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


def unknown_names_error(kind: str, unknown, known) -> ConfigError:
    """A ConfigError naming each unknown setting with the closest known name, if any is close."""
    from difflib import get_close_matches

    described = []
    for name in sorted(unknown):
        close = get_close_matches(str(name), [str(k) for k in known], n=1)
        described.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ConfigError(f"unknown {kind}: {', '.join(described)}; known: {', '.join(sorted(map(str, known)))}")


class ManifestError(DPETError):
    """A cohort manifest that cannot be used as it is (duplicate ids, missing files, bad labels, ...)."""


class BundleError(DPETError):
    """A model bundle that is incomplete, tampered with, or of an unknown schema version."""
