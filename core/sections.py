"""What a configuration section is: a frozen pydantic dataclass whose fields carry their
constraints and their description, and whose errors read like sentences.

    @section
    class BudgetConfig:
        episodes: Int(ge=0, doc="episodes to collect (0: no limit)") = 48

    BudgetConfig(episodes=-3)   # ConfigError: episodes must be an int >= 0, got -3

``Int``, ``Number``, ``Text``, ``Flag`` and ``Choice`` are the field types: integers are
never booleans or floats, numbers are finite (no NaN, no infinity) and never booleans or
strings. A section refuses unknown keys. ``readable`` turns pydantic's errors into one line
per problem that names the field by its path from the root (``budget.episodes``,
``reward.scorers[0].kind``) and says what it must be.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Annotated, Literal

import annotated_types
from pydantic import ConfigDict, Field, Strict, ValidationError
from pydantic.dataclasses import dataclass

SECTION_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


class ConfigError(ValueError):
    """A configuration value that is refused; the message names the field."""


def Int(ge: int | None = None, le: int | None = None, doc: str = ""):  # noqa: N802 - a type
    return Annotated[int, Strict(), Field(ge=ge, le=le, description=doc)]


def Number(ge: float | None = None, gt: float | None = None, le: float | None = None,  # noqa: N802
           doc: str = ""):
    return Annotated[float, Strict(), Field(ge=ge, gt=gt, le=le, description=doc)]


def Text(doc: str = ""):  # noqa: N802 - a type
    return Annotated[str, Strict(), Field(description=doc)]


def Flag(doc: str = ""):  # noqa: N802 - a type
    return Annotated[bool, Strict(), Field(description=doc)]


def Choice(options, doc: str = ""):  # noqa: N802 - a type
    return Annotated[Literal[tuple(options)], Field(description=doc)]


def section(cls):
    """Make ``cls`` a frozen, validated configuration section whose refusals are ``ConfigError``s."""
    cls = dataclass(frozen=True, config=SECTION_CONFIG)(cls)
    validated_init = cls.__init__

    @functools.wraps(validated_init)
    def __init__(self, *args, **kwargs):
        try:
            validated_init(self, *args, **kwargs)
        except ValidationError as err:
            raise ConfigError(readable(err, type(self))) from None

    cls.__init__ = __init__
    return cls


def describe(cls) -> dict[str, str]:
    """Each field of section ``cls`` with its description, in declaration order."""
    return {name: info.description or _inner_doc(info.annotation) for name, info in cls.__pydantic_fields__.items()}


def _inner_doc(annotation) -> str:
    """The description of a field type inside a union (``Int(doc=...) | None``)."""
    for arg in typing.get_args(annotation):
        for meta in typing.get_args(arg)[1:] if typing.get_origin(arg) is Annotated else ():
            if getattr(meta, "description", None):
                return meta.description
    return ""


# --------------------------------------------------------------------------- readable errors
def readable(err: ValidationError, root) -> str:
    """One line per problem of ``err`` (raised validating section ``root``), each naming the
    field by its path and saying what it must be."""
    lines, unknown = [], {}
    for e in err.errors(include_url=False):
        *parent, last = e["loc"] or ("",)
        if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            unknown.setdefault(tuple(parent), []).append(str(last))
            continue
        where = _path(e["loc"])
        if e["type"] in ("value_error", "assertion_error"):  # a section's own check: it names the field
            message = str(e["ctx"]["error"]) if "error" in e.get("ctx", {}) else e["msg"]
            if e["loc"] and message.startswith(str(last)):  # a field's check: the path of its section
                where = _path(parent)
            lines.append(f"{where}.{message}" if where else message)
            continue
        info = _field_info(root, e["loc"])
        lines.append(f"{where} must be {_what(e, info)}, got {e['input']!r}")
    for parent, keys in unknown.items():
        section_type = _section_at(root, parent)
        known = sorted(section_type.__pydantic_fields__) if section_type else []
        lines.append(f"unknown {_path(parent) or root.__name__} setting(s) {sorted(keys)}; known: {known}")
    return "; ".join(lines)


def _what(e: dict, info) -> str:
    """What a field whose value was refused with error ``e`` must be."""
    kind = e["type"]
    if kind == "literal_error":
        options = typing.get_args(_unwrapped(info.annotation)) if info else ()
        return f"one of {sorted(map(str, options)) or e['ctx']['expected']}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "int"
    if kind in ("float_type", "float_parsing"):
        return "a number"
    if kind in ("bool_type", "bool_parsing"):
        return "true or false"
    if kind in ("string_type",):
        return "a string"
    if kind in ("dict_type", "dataclass_type", "dataclass_exact_type", "model_type"):
        return "a mapping"
    if kind in ("tuple_type", "list_type"):
        return "a list"
    if info is not None and kind in ("greater_than_equal", "greater_than", "less_than_equal", "finite_number"):
        return _bounds(info)
    return e["msg"][0].lower() + e["msg"][1:]


def _bounds(info) -> str:
    """"an int >= 0", "an int in [-1, 65535]", "a finite number > 0 and <= 1" of a field."""
    limits = {type(m).__name__: m for m in info.metadata if isinstance(m, annotated_types.BaseMetadata)}
    ge, gt, le = (getattr(limits.get(k), k.lower(), None) for k in ("Ge", "Gt", "Le"))
    if _unwrapped(info.annotation) is int:
        if ge is not None and le is not None:
            return f"an int in [{ge}, {le}]"
        return "an int" + (f" >= {ge}" if ge is not None else "")
    rule = " and ".join(f"{op} {bound}" for op, bound in ((">=", ge), (">", gt), ("<=", le)) if bound is not None)
    return "a finite number" + (f" {rule}" if rule else "")


def _path(loc) -> str:
    """``('reward', 'scorers', 0, 'kind')`` -> ``reward.scorers[0].kind``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrapped(annotation):
    """The type inside ``Annotated[...]`` and ``X | None``."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(options) == 1:
            return _unwrapped(options[0])
    return annotation


def _field_info(root, loc):
    """The FieldInfo of the field at ``loc`` below section ``root`` (None if not found)."""
    section_type = _section_at(root, loc[:-1])
    if section_type is None or not isinstance(loc[-1], str):
        return None
    return section_type.__pydantic_fields__.get(loc[-1])


def _section_at(root, loc):
    """The section type found at ``loc`` below ``root`` (through lists of sections)."""
    current = root
    for part in loc:
        if isinstance(part, int):
            continue  # an entry of a tuple of sections: the tuple's item type was taken already
        info = getattr(current, "__pydantic_fields__", {}).get(part)
        if info is None:
            return None
        current = _section_type(info.annotation)
    return current if dataclasses.is_dataclass(current) else None


def _section_type(annotation):
    """The section type a field holds (itself, or a tuple's items, or one side of a union)."""
    annotation = _unwrapped(annotation)
    if dataclasses.is_dataclass(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_type(arg)
        if found is not None:
            return found
    return None
