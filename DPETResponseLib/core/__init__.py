"""Foundations every stage uses: the error model, the files the library writes (atomic, JSON, hashes), package
versions for provenance, and typed settings. Imports nothing else of the library."""

from .errors import BundleError, ConfigError, DPETError, InputError, ManifestError, unknown_names_error
from .files import atomic_write, plain, sha256_file, write_json, write_text
from .provenance import package_versions
from .settings import check_field_types, check_value

__all__ = [
    "BundleError", "ConfigError", "DPETError", "InputError", "ManifestError", "unknown_names_error", "atomic_write",
    "plain", "sha256_file", "write_json", "write_text", "package_versions", "check_field_types", "check_value",
]
