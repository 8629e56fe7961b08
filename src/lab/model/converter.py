"""The one cattrs converter of labctl.

Strict by design: unknown keys are rejected, a string never becomes a list of characters, bools
are not ints, numbers are not strings. Errors surface as :class:`lab.errors.Invalid` whose
``details["fields"]`` names every wrong field path (``body.roles[0]``).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, TypeVar, get_args, get_origin

import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError
from cattrs.v import format_exception, transform_error

from lab.errors import Invalid
from lab.model.facts import FactsSpec, structure_facts
from lab.model.records import Effect, MachineState, TokenKind
from lab.model.text import PlainText, escape_control, has_surrogate, plain_text_problem

T = TypeVar("T")


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    if has_surrogate(value):
        # No encoder (database, log, terminal) accepts it: refuse it wherever a str is expected.
        raise ValueError("contains a lone surrogate (not valid Unicode)")
    return value


def _plain_text_spec(t: Any) -> PlainText | None:
    if get_origin(t) is not Annotated:
        return None
    return next((m for m in get_args(t)[1:] if isinstance(m, PlainText)), None)


def _is_facts(t: Any) -> bool:
    return get_origin(t) is Annotated and any(isinstance(m, FactsSpec) for m in get_args(t)[1:])


def _plain_text_hook(value: Any, t: Any) -> str:
    text = _strict_str(value, str)
    spec = _plain_text_spec(t)
    problem = plain_text_problem(text, allow=spec.allow if spec is not None else "")
    if problem is not None:
        raise ValueError(problem)
    return text


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
    conv.register_structure_hook_func(lambda t: _plain_text_spec(t) is not None, _plain_text_hook)
    conv.register_structure_hook_func(_is_facts, structure_facts)
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


_SURROGATE_WORDS = "lone surrogate"
_CONTROL_WORDS = "control character"


def describe_error(exc: BaseException, type_: Any) -> str:
    """cattrs' words for a wrong field, keeping a hook's or validator's own reason."""
    if type(exc) is ValueError and str(exc):
        return f"invalid value ({exc})"
    if get_origin(type_) is Annotated:
        type_ = get_args(type_)[0]
    return format_exception(exc, type_)


def text_reason(fields: list[str]) -> str | None:
    """``surrogate`` or ``control_character`` when a field was refused for its text."""
    if any(_SURROGATE_WORDS in f for f in fields):
        return "surrogate"
    if any(_CONTROL_WORDS in f for f in fields):
        return "control_character"
    return None


def structure(data: Any, cls: type[T], *, path: str = "body") -> T:
    """Structure ``data`` into ``cls`` or raise :class:`Invalid` naming each wrong field.

    ``details["fields"]`` lists ``"<what> @ <path>"`` with control characters escaped;
    ``details["reason"]`` is ``surrogate`` or ``control_character`` when text was refused.
    """
    try:
        return converter.structure(data, cls)
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError) as exc:
        raise _invalid(transform_error(exc, path=path, format_exception=describe_error)) from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise _invalid([f"{exc} @ {path}"]) from exc


def _invalid(fields: list[str]) -> Invalid:
    details: dict[str, Any] = {"fields": [escape_control(f) for f in fields]}
    reason = text_reason(fields)
    if reason is not None:
        details["reason"] = reason
    return Invalid("request does not validate", details=details)


def unstructure(obj: Any) -> Any:
    return converter.unstructure(obj)
