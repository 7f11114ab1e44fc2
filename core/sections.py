"""What a configuration section is: a frozen pydantic dataclass whose fields carry pydantic's
own constraints and a description, and whose refusals read like sentences.

    @section
    class BudgetConfig:
        episodes: Int(ge=0, doc="episodes to collect (0: no limit)") = 48

    BudgetConfig(episodes=-3)   # ConfigError: episodes must be an int >= 0, got -3

A field type (``Int``, ``Number``, ``Text``, ``Flag``, ``Choice``) is pydantic's type with its
constraints, strict (an int is never a boolean or a float, a number never a boolean or a
string), finite (no NaN, no infinity), and with the rule it states in words (``Rule``), which
a refusal quotes; ``also`` lists values a field takes besides (None, "auto"). ``check``
checks a function's argument against the same field types. A section refuses unknown keys,
naming the ones it knows.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Annotated, Literal, Union

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass


class ConfigError(ValueError):
    """A configuration value that is refused; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field's values must be, in words ("an int >= 0"), and the values it takes besides."""

    text: str
    also: tuple = ()

    def refusal(self, name: str, value) -> str:
        accepted = ", ".join("null" if a is None else repr(a) for a in self.also)  # as YAML writes None
        return f"{name} must be {self.text}, got {value!r}" + (f"; also accepted: {accepted}" if self.also else "")


# --------------------------------------------------------------------------- field types
def constrained(base, rule: str, doc: str = "", also: tuple = (), **constraints):
    """Field type: ``base`` under pydantic's ``constraints``, or one of ``also``."""
    allowed = Annotated[base, Field(**{key: value for key, value in constraints.items() if value is not None})]
    return Annotated[_or(allowed, also), Field(description=doc), Rule(rule, also)]


def _or(base, also: tuple):
    """``base`` or one of the values ``also``."""
    return Union[(base, *[Literal[a] for a in also if a is not None], *[type(None)] * (None in also))]


def _bounds(**bounds) -> str:
    """``ge=0, le=1`` -> ``>= 0 and <= 1``."""
    ops = {"ge": ">=", "gt": ">", "le": "<="}
    return " and ".join(f"{ops[key]} {value}" for key, value in bounds.items() if value is not None)


def Int(ge: int | None = None, le: int | None = None, doc: str = "", also: tuple = ()):
    bounds = f"in [{ge}, {le}]" if ge is not None and le is not None else _bounds(ge=ge, le=le)
    return constrained(int, f"an int {bounds}".rstrip(), doc, also, strict=True, ge=ge, le=le)


def Number(ge: float | None = None, gt: float | None = None, le: float | None = None,
           doc: str = "", also: tuple = ()):
    return constrained(float, f"a finite number {_bounds(ge=ge, gt=gt, le=le)}".rstrip(), doc, also,
                       strict=True, allow_inf_nan=False, ge=ge, gt=gt, le=le)


def Text(doc: str = "", nonblank: bool = False, also: tuple = (), pattern: str | None = None,
         rule: str = ""):
    rule = rule or ("a non-empty string" if nonblank else "a string")
    return constrained(str, rule, doc, also, strict=True, pattern=pattern or (r"\S" if nonblank else None))


def Flag(doc: str = ""):
    return constrained(bool, "true or false", doc, strict=True)


def Choice(options, doc: str = "", also: tuple = ()):
    return constrained(Literal[tuple(options)], f"one of {sorted(options)}", doc, also)


def checked(base, test, doc: str = "", also: tuple = ()):
    """Field type ``base`` whose values pass ``test(field name, value)`` first (a rule pydantic
    cannot state; the test's ValueError names the field), or are one of ``also``."""
    def validate(value, info):
        same = any(value is a or (type(value) is type(a) and value == a) for a in also)
        return value if same else test(info.field_name, value)

    return Annotated[_or(base, also), BeforeValidator(validate), Field(description=doc)]


def check(name: str, value, field_type):
    """``value`` as field type ``field_type`` reads it (``Int(ge=1)``, ``Number(gt=0, le=1)``, ...),
    else a ValueError naming ``name``: the checks of a function's arguments."""
    try:
        return TypeAdapter(field_type).validate_python(value)
    except ValidationError:
        raise ValueError(_rule(field_type).refusal(name, value)) from None


def _rule(field_type) -> Rule | None:
    return next((m for m in getattr(field_type, "__metadata__", ()) if isinstance(m, Rule)), None)


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
    """One line per refused setting of ``err`` (raised validating section ``root``), each naming
    the field by its path (``budget.episodes``, ``reward.scorers[0].kind``)."""
    lines, unknown = [], {}
    for e in err.errors(include_url=False):
        loc, rule, holder = _setting_at(root, e["loc"])
        if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            unknown.setdefault(loc[:-1], (holder, []))[1].append(str(loc[-1]))
            continue
        if e["type"] == "value_error":  # a field's check or a section's: the message names the field
            message = str(e["ctx"]["error"])
            where = _path(loc[:-1] if loc and message.startswith(str(loc[-1])) else loc)
            line = f"{where}.{message}" if where else message
        elif rule is not None:
            line = rule.refusal(_path(loc), e["input"])
        elif e["type"] == "missing":
            line = f"{_path(loc)} is missing"
        else:
            line = f"{_path(loc)} must be {SHAPES.get(e['type'], e['msg'])}, got {e['input']!r}"
        if line not in lines:  # one line per setting, not one per side of its union
            lines.append(line)
    for parent, (holder, keys) in unknown.items():
        lines.append(f"unknown {_path(parent) or root.__name__} setting(s) {sorted(keys)}; "
                     f"known: {sorted(getattr(holder, '__pydantic_fields__', ()))}")
    return "; ".join(lines)


def _setting_at(root, loc: tuple):
    """The part of ``loc`` that names a setting (without a union's branch), the setting's
    ``Rule`` (None for a section, a list or a key ``root`` does not know) and the section
    holding it."""
    holder = root
    for i, part in enumerate(loc):
        if isinstance(part, int):  # an entry of a tuple of sections, whose type was taken already
            continue
        info = getattr(holder, "__pydantic_fields__", {}).get(part)
        if info is None:
            return tuple(loc[:i + 1]), None, holder
        rule = next((m for m in info.metadata if isinstance(m, Rule)), None)
        if rule is not None:
            return tuple(loc[:i + 1]), rule, holder
        holder = _section_type(info.annotation)
    return tuple(loc), None, holder


def _path(loc) -> str:
    """``('reward', 'scorers', 0, 'kind')`` -> ``reward.scorers[0].kind``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _section_type(annotation):
    """The section type a field's annotation holds (itself, a tuple's items, a side of a union)."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    return next(filter(None, map(_section_type, typing.get_args(annotation))), None)
