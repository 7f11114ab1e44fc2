"""What a configuration section is: a frozen pydantic dataclass whose fields carry their
check and their description, and whose refusals read like sentences.

    @section
    class BudgetConfig:
        episodes: Int(ge=0, doc="episodes to collect (0: no limit)") = 48

    BudgetConfig(episodes=-3)   # ConfigError: episodes must be an int >= 0, got -3

A field type (``Int``, ``Number``, ``Text``, ``Flag``, ``Choice``) runs the ``check_*`` function
of its kind on a value before pydantic reads it, so that a refusal names the field and says
what it must be; the same functions check values outside sections (a server's settings, a
generator's arguments). Integers are never booleans or floats; numbers are finite (no NaN,
no infinity) and never booleans or strings; ``also`` lists values a field takes besides
(None, "auto"). A section refuses unknown keys, naming the ones it knows.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Annotated, Literal, Union

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass


class ConfigError(ValueError):
    """A configuration value that is refused; the message names the field."""


# --------------------------------------------------------------------------- value checks
# Each returns the value it accepts and raises a ValueError that starts with the value's name.
def check_int(name: str, value, minimum: int | None = 0, maximum: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not (ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)):
        bounds = (f" in [{minimum}, {maximum}]" if maximum is not None
                  else f" >= {minimum}" if minimum is not None else "")
        raise ValueError(f"{name} must be an int{bounds}, got {value!r}")
    return value


def check_number(name: str, value, minimum: float | None = None, *, above: float | None = None,
                 maximum: float | None = None) -> float:
    """A finite number (no NaN, no infinity) within the bounds given."""
    bounds = {">=": minimum, ">": above, "<=": maximum}
    rule = " and ".join(f"{op} {bound}" for op, bound in bounds.items() if bound is not None)
    try:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and (minimum is None or value >= minimum) and (above is None or value > above) \
            and (maximum is None or value <= maximum)
    except OverflowError:  # an int too large for a float
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a finite number{' ' + rule if rule else ''}, got {value!r}")
    return value


def check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def check_text(name: str, value, nonblank: bool = False) -> str:
    if not isinstance(value, str) or (nonblank and not value.strip()):
        raise ValueError(f"{name} must be {'a non-empty' if nonblank else 'a'} string, got {value!r}")
    return value


def check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


# --------------------------------------------------------------------------- field types
def checked(base, check, doc: str = "", also: tuple = (), **bounds):
    """Field type ``base`` whose values pass ``check(field name, value, **bounds)`` first, or
    are one of ``also``; ``doc`` is the field's description (``mara config`` prints it)."""
    def validate(value, info):
        if any(value is a or (type(value) is type(a) and value == a) for a in also):
            return value
        try:
            return check(info.field_name, value, **bounds)
        except ValueError as err:
            accepted = ", ".join("null" if a is None else repr(a) for a in also)  # as YAML writes None
            raise ValueError(f"{err}{'; also accepted: ' + accepted if also else ''}") from None

    extra = [Literal[a] for a in also if a is not None] + [type(None)] * (None in also)
    return Annotated[Union[(base, *extra)], BeforeValidator(validate), Field(description=doc)]  # noqa: UP007


def Int(ge: int | None = None, le: int | None = None, doc: str = "", also: tuple = ()):  # noqa: N802 - a type
    return checked(int, check_int, doc, also, minimum=ge, maximum=le)


def Number(ge: float | None = None, gt: float | None = None, le: float | None = None,  # noqa: N802 - a type
           doc: str = "", also: tuple = ()):
    return checked(float, check_number, doc, also, minimum=ge, above=gt, maximum=le)


def Text(doc: str = "", nonblank: bool = False, also: tuple = ()):  # noqa: N802 - a type
    return checked(str, check_text, doc, also, nonblank=nonblank)


def Flag(doc: str = ""):  # noqa: N802 - a type
    return checked(bool, check_flag, doc)


def Choice(options, doc: str = "", also: tuple = ()):  # noqa: N802 - a type
    return checked(Literal[tuple(options)], check_choice, doc, also, choices=tuple(options))


# --------------------------------------------------------------------------- sections
SECTION_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def section(cls):
    """Make ``cls`` a frozen, validated configuration section whose refusals are ``ConfigError``s."""
    cls = dataclass(frozen=True, config=SECTION_CONFIG)(cls)
    validated_init = cls.__init__

    @functools.wraps(validated_init)
    def __init__(self, *args, **kwargs):
        if len(args) > len(cls.__pydantic_fields__):
            raise TypeError(f"{cls.__name__} takes {len(cls.__pydantic_fields__)} settings, got {len(args)}")
        kwargs.update(zip(cls.__pydantic_fields__, args))  # by name: a refusal names the field, not its position
        try:
            validated_init(self, **kwargs)
        except ValidationError as err:
            raise ConfigError(readable(err, type(self))) from None

    cls.__init__ = __init__
    return cls


def describe(cls) -> dict[str, str]:
    """Each field of section ``cls`` with its description, in declaration order."""
    return {name: info.description or "" for name, info in cls.__pydantic_fields__.items()}


# What pydantic's own refusals (the shape of a section or a list, a missing field) ask for.
SHAPES = {"dict_type": "a mapping", "dataclass_type": "a mapping", "dataclass_exact_type": "a mapping",
          "tuple_type": "a list", "list_type": "a list", "string_type": "a string"}


def readable(err: ValidationError, root) -> str:
    """One line per problem of ``err`` (raised validating section ``root``), each naming the
    field by its path (``budget.episodes``, ``reward.scorers[0].kind``)."""
    lines, unknown = [], {}
    for e in err.errors(include_url=False):
        *parent, last = e["loc"] or ("",)
        if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            unknown.setdefault(tuple(parent), []).append(str(last))
        elif e["type"] == "value_error":  # a field's check or a section's: the message names the field
            message = str(e["ctx"]["error"])
            where = _path(parent if message.startswith(str(last)) else e["loc"])
            lines.append(f"{where}.{message}" if where else message)
        elif e["type"] == "missing":
            lines.append(f"{_path(e['loc'])} is missing")
        else:
            lines.append(f"{_path(e['loc'])} must be {SHAPES.get(e['type'], e['msg'])}, got {e['input']!r}")
    for parent, keys in unknown.items():
        known = sorted(getattr(_section_at(root, parent), "__pydantic_fields__", ()))
        lines.append(f"unknown {_path(parent) or root.__name__} setting(s) {sorted(keys)}; known: {known}")
    return "; ".join(lines)


def _path(loc) -> str:
    """``('reward', 'scorers', 0, 'kind')`` -> ``reward.scorers[0].kind``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _section_at(root, loc):
    """The section type found at ``loc`` below ``root`` (None if there is none)."""
    for part in loc:
        if isinstance(part, str):  # an int is an entry of a tuple of sections, whose type was taken already
            info = getattr(root, "__pydantic_fields__", {}).get(part)
            root = _section_type(info.annotation) if info else None
    return root


def _section_type(annotation):
    """The section type a field's annotation holds (itself, a tuple's items, a side of a union)."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    return next(filter(None, map(_section_type, typing.get_args(annotation))), None)
