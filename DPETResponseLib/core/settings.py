"""Settings checked where they are made: each value against its declared type, so that a mistyped value fails at
load with its name, not deep inside a run (names are checked by `errors.unknown_names_error`)."""

from __future__ import annotations

import dataclasses
import types
import typing

from .errors import ConfigError


def _matches(value, annotation) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is typing.Any:
        return True
    if annotation is type(None) or annotation is None:
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(annotation))
    if annotation is float:  # an integer is a valid float setting (JSON and YAML write 2.0 as 2)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if not isinstance(value, (tuple, list)):
            return False
        return not args or all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, annotation)


def _describe(annotation) -> str:
    text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    return getattr(annotation, "__name__", text) if typing.get_origin(annotation) is None else text


def check_value(what: str, name: str, value, annotation) -> None:
    """Raise ConfigError when ``value`` is not of type ``annotation`` (int, float, bool, str, None, unions,
    tuple[...]/list[...] of one type, dict)."""
    if not _matches(value, annotation):
        raise ConfigError(f"{what}: {name}={value!r} ({type(value).__name__}) is not a valid value; expected "
                          f"{_describe(annotation)}")


def check_field_types(settings, what: str) -> None:
    """`check_value` for every field of the dataclass instance ``settings``."""
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        check_value(what, field.name, getattr(settings, field.name), hints[field.name])
