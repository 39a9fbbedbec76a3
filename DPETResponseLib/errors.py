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

    def for_case(self, case: str) -> "InputError":
        """The same error, attributed to ``case`` (used by the cohort runner when a stage did not know the id)."""
        return InputError(self.problem, case=case) if self.case is None else self


class ManifestError(DPETError):
    """A cohort manifest that cannot be used as it is (duplicate ids, missing files, bad labels, ...)."""


class BundleError(DPETError):
    """A model bundle that is incomplete, tampered with, or of an unknown schema version."""
