"""Pydantic's and PyYAML's errors in the words a plan author needs: "field.path[1]: message".

A section picked by its kind (destination, source, keys) puts the kind in pydantic's error
locations ("destination.s3.bucket"); the author wrote no such field, so it is left out here.
"""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from migrator.errors import PlanError
from migrator.plan.section import KindVariant
from migrator.plan.types import PATTERN_HINTS

__all__ = ["describe_error", "plan_error", "yaml_problem"]


@dataclass(frozen=True)
class _KindUnion:
    """A section pydantic picks one model of by the value of `field`."""

    field: str
    kinds: dict[str, type[BaseModel]]

    def expected(self) -> str:
        """The kinds as literal errors list them: "'local', 's3' or 'azure'"."""
        names = [repr(name) for name in self.kinds]
        return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _kind_union(annotation: Any, discriminator: str) -> _KindUnion:
    kinds: dict[str, type[BaseModel]] = {}
    for model in get_args(annotation):
        (member,) = get_args(model.model_fields[discriminator].annotation)
        kinds[str(member)] = model
    return _KindUnion(discriminator, kinds)


def _unwrapped(annotation: Any, field: FieldInfo | None = None) -> Any:
    """The type a value is checked against: a _KindUnion, a model, a tuple, or anything else."""
    discriminator = field.discriminator if field is not None else None
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            for meta in annotation.__metadata__:
                if isinstance(meta, FieldInfo) and meta.discriminator is not None:
                    discriminator = meta.discriminator
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            if isinstance(discriminator, str):
                return _kind_union(annotation, discriminator)
            args = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(args) != 1:
                return None
            annotation = args[0]
        else:
            return annotation


@dataclass(frozen=True)
class _Place:
    """Where an error is, as the author sees it."""

    loc: tuple[int | str, ...]  # without the kinds pydantic adds
    owner: type[BaseModel] | None  # the model whose field the last part names
    at: Any  # what the location itself is checked against


def _place(root: type[BaseModel], loc: tuple[int | str, ...]) -> _Place:
    current: Any = root
    owner: type[BaseModel] | None = None
    shown: list[int | str] = []
    for part in loc:
        if isinstance(current, _KindUnion) and str(part) in current.kinds:
            current = current.kinds[str(part)]  # the kind pydantic picked: not a field
            continue
        shown.append(part)
        owner = None
        if isinstance(current, type) and issubclass(current, BaseModel):
            owner = current
            field = current.model_fields.get(str(part))
            current = _unwrapped(field.annotation, field) if field else None
        elif isinstance(part, int) and get_origin(current) in (tuple, list):
            current = _unwrapped(get_args(current)[0])
        else:
            current = None
    return _Place(tuple(shown), owner, current)


def _known_fields(owner: type[BaseModel] | None) -> list[str]:
    if owner is None:
        return []
    kinds = owner.section_kinds() if issubclass(owner, KindVariant) else (owner,)
    # A field's alias is the word the plan writes (`json`, which would shadow BaseModel.json).
    return list(dict.fromkeys(f.alias or n for kind in kinds for n, f in kind.model_fields.items()))


def _dotted(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_MESSAGES = {
    "string_too_short": "must not be empty",
    "string_type": "expected a string",
    "path_type": "expected a path",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "model_type": "expected a mapping of fields",
    "model_attributes_type": "expected a mapping of fields",
    "dict_type": "expected a mapping of fields",
}


def _kind_problem(place: _Place, value: object) -> tuple[str, str] | None:
    """A section's kind missing or not one of its kinds, named at the kind field."""
    union = place.at
    if not isinstance(union, _KindUnion) or not isinstance(value, dict):
        return None
    field = _dotted((*place.loc, union.field))
    if union.field not in value:
        return field, "required"
    return field, f"must be {union.expected()} (got {_shown(value.get(union.field))})"


def describe_error(root: type[BaseModel], error: ErrorDetails) -> tuple[str, str]:
    """(dotted field, message) for one pydantic error from validating a `root`."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    place = _place(root, tuple(error["loc"]))
    field = _dotted(place.loc)
    if kind == "plan_field":
        return field, str(ctx["message"])
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        named = _kind_problem(place, value)
        if named is not None:
            return named
    if kind == "missing":
        return field, "required"
    if kind == "extra_forbidden":
        name = str(place.loc[-1])
        close = difflib.get_close_matches(name, _known_fields(place.owner))
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return field, f"unknown field {name!r}{hint}"
    if kind in ("value_error", "assertion_error"):
        return field, str(ctx.get("error", error["msg"]))
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        hint = PATTERN_HINTS.get(pattern, f"must match {pattern}")
        return field, f"{hint} (got {_shown(value)})"
    if kind == "greater_than_equal":
        message = f"must be at least {ctx.get('ge')}"
    elif kind == "less_than_equal":
        message = f"must be at most {ctx.get('le')}"
    elif kind in ("literal_error", "enum"):
        message = f"must be {ctx.get('expected')}"
    else:
        message = _MESSAGES.get(kind, error["msg"])
    return field, f"{message} (got {_shown(value)})"


def yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or exc.context or "unreadable"
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"invalid YAML: {exc}"


def plan_error(shown: str, problems: list[tuple[str, str]]) -> PlanError:
    """One PlanError for all problems: the first in the fields, each on its own line."""
    (field, message), rest = problems[0], problems[1:]
    lines = [message] + [f"{shown}: {f}: {m}" if f else f"{shown}: {m}" for f, m in rest]
    return PlanError(shown, field or None, "\n".join(lines))
