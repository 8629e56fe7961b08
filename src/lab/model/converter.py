"""The one cattrs converter of labctl.

Strict by design: unknown keys are rejected, a string never becomes a list of characters, bools
are not ints, numbers are not strings. Errors surface as :class:`lab.errors.Invalid` whose
``details["fields"]`` names every wrong field path (``body.roles[0]``).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, TypeVar

import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.v import transform_error

from lab.errors import Invalid
from lab.model.records import Effect, MachineState, TokenKind

T = TypeVar("T")


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {type(value).__name__}")
    return value


def _datetime(value: Any, _: type) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"not an ISO 8601 time: {value!r}") from exc
    else:
        raise TypeError(f"expected an ISO 8601 time, got {type(value).__name__}")
    if parsed.tzinfo is None:
        raise ValueError("time must carry a timezone")
    return parsed


def _enum_hook(value: Any, cls: type[enum.Enum]) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in cls)
        raise ValueError(f"{value!r} is not one of: {allowed}") from None


def _is_sequence_type(t: Any) -> bool:
    origin = getattr(t, "__origin__", None)
    return origin in (list, tuple, set, frozenset)


def make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, prefer_attrib_converters=False)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(datetime, _datetime)
    conv.register_unstructure_hook(datetime, lambda d: d.isoformat())

    # cattrs would happily iterate a string (or a dict) into a list: refuse anything that is
    # not a JSON array where a sequence is expected, then let cattrs build the element hooks.
    def _sequence_factory(t: Any, c: cattrs.Converter) -> Any:
        origin = t.__origin__
        if origin is list:
            inner = list_structure_factory(t, c)
        elif origin is tuple:
            inner = homogenous_tuple_structure_factory(t, c)
        else:
            elem = c.get_structure_hook(t.__args__[0])
            elem_type = t.__args__[0]

            def inner(value: Any, _t: Any) -> Any:
                return origin(elem(v, elem_type) for v in value)

        def hook(value: Any, target: Any) -> Any:
            if not isinstance(value, list | tuple):
                raise TypeError(f"expected a list, got {type(value).__name__}")
            return inner(value, target)

        return hook

    conv.register_structure_hook_factory(_is_sequence_type, _sequence_factory)

    # StrEnums are str subclasses, so the str hook above would win the dispatch and let any
    # text through; give each enum of the domain its own hook.
    for enum_cls in (Effect, TokenKind, MachineState):
        conv.register_structure_hook(enum_cls, _enum_hook)
    return conv


converter = make_converter()


def structure(data: Any, cls: type[T], *, path: str = "body") -> T:
    """Structure ``data`` into ``cls`` or raise :class:`Invalid` naming each wrong field."""
    try:
        return converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as exc:
        fields = transform_error(exc, path=path)
        raise Invalid("request does not validate", details={"fields": fields}) from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise Invalid("request does not validate", details={"fields": [f"{exc} @ {path}"]}) from exc


def unstructure(obj: Any) -> Any:
    return converter.unstructure(obj)
