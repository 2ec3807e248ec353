"""The base of every plan section, and of the kinds of a section a discriminated union picks.

The destination, a dataset's source and each KEK are one model per kind, picked by the kind
field (`kind` or `provider`), so each kind's required fields are plain, non-optional types.
A plan may still carry another kind's field if it leaves it null (a plan edited from one kind
to another, or a template listing every field); a value there, or a required field left out,
is named the way an author thinks of it: "required when kind is 's3'", "not used when kind is
'local' (only when it is 's3' or 'azure')".
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, ClassVar, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    GetJsonSchemaHandler,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, ErrorDetails, InitErrorDetails, PydanticCustomError

__all__ = ["KindVariant", "PlanModel", "Problem", "field_errors"]

# A field below the validating model, and what is wrong with it.
Problem = tuple[tuple[str | int, ...], str]


def field_errors(title: str, problems: list[Problem]) -> ValidationError:
    """Errors about fields below the validating model; pydantic prefixes the model's own loc."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("plan_field", "{message}", {"message": message}),
                loc=loc,
                input=None,
            )
            for loc, message in problems
        ],
    )


def _reraised(title: str, errors: list[ErrorDetails]) -> ValidationError:
    """Some of a ValidationError's errors, each with its type, message and context kept."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError(error["type"], error["msg"], error.get("ctx")),
                loc=error["loc"],
                input=error["input"],
            )
            for error in errors
        ],
    )


def _unset(name: str, value: object, kind_only: frozenset[str]) -> bool:
    """A kind's field written as null is left out: required, it is then "required when"."""
    return value is None and name in kind_only


@functools.cache
def _field_type(variant: type[KindVariant], name: str) -> TypeAdapter[Any]:
    """The type of a field of another kind of the variant's section."""
    kind = next(kind for kind in variant.section_kinds() if name in kind.model_fields)
    field = kind.model_fields[name]
    annotated: Any = Annotated[field.annotation, field]
    return TypeAdapter(annotated)


def _field_of(error: ErrorDetails) -> str:
    """The field of the validated model an error is about ("" for the model itself)."""
    loc = error["loc"]
    return str(loc[0]) if loc else ""


def _missing(error: ErrorDetails, names: frozenset[str]) -> bool:
    return error["type"] == "missing" and len(error["loc"]) == 1 and _field_of(error) in names


class PlanModel(BaseModel):
    """A plan section: unknown fields are errors, and a loaded plan never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The fields' schema with the section's `add_schema_rules`, so editors flag them too."""
        schema = handler.resolve_ref_schema(
            super().__get_pydantic_json_schema__(core_schema, handler)
        )
        cls.add_schema_rules(schema)
        return schema

    @classmethod
    def add_schema_rules(cls, schema: JsonSchemaValue) -> None:
        """Adds to the model's schema what its validators check beyond the fields' types."""


class KindVariant(PlanModel):
    """One kind of a section. Subclasses name the kind field and list the section's kinds."""

    # The field naming the kind ("kind" or "provider"); a Literal of one member in each kind.
    kind_field: ClassVar[str]
    # Every field of every kind of the section, in the order its problems are listed.
    section_layout: ClassVar[tuple[str, ...]]

    @classmethod
    def section_kinds(cls) -> tuple[type[KindVariant], ...]:
        """The models of every kind of this section, in the order messages list them."""
        raise NotImplementedError

    @classmethod
    def kind_name(cls) -> str:
        """The word a plan writes for this kind, e.g. 's3'."""
        (member,) = get_args(cls.model_fields[cls.kind_field].annotation)
        return str(member)

    @classmethod
    def kind_only_fields(cls) -> frozenset[str]:
        """Fields some kinds of the section have and others not."""
        kinds = [frozenset(kind.model_fields) for kind in cls.section_kinds()]
        return frozenset.union(*kinds) - frozenset.intersection(*kinds)

    @classmethod
    def _not_used(cls, name: str) -> str:
        only = " or ".join(
            repr(kind.kind_name()) for kind in cls.section_kinds() if name in kind.model_fields
        )
        return f"not used when {cls.kind_field} is {cls.kind_name()!r} (only when it is {only})"

    @classmethod
    def kind_value_problems(cls, data: dict[str, Any]) -> list[Problem]:
        """Checks of values that depend on the kind, made once every field has its type."""
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _name_kind_problems(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        """Type errors first, another kind's fields among them; then, together, the fields
        this kind requires and the other kinds' fields given a value, then the kind's values."""
        if not isinstance(data, dict):
            return handler(data)
        kind_only = cls.kind_only_fields()
        own = cls.model_fields
        foreign = {k: v for k, v in data.items() if k in kind_only and k not in own}
        given = {k: v for k, v in data.items() if k not in foreign and not _unset(k, v, kind_only)}
        errors = [e for k, v in foreign.items() for e in cls._type_errors(k, v, info.context)]
        try:
            model = handler(given)
        except ValidationError as exc:
            errors += exc.errors()
        missing = [e for e in errors if _missing(e, kind_only)]
        errors = [e for e in errors if e not in missing]
        if errors:
            errors.sort(key=lambda error: cls._position(_field_of(error)))
            raise _reraised(cls.__name__, errors)
        # The handler failed, if at all, only for the fields this kind requires: named here.
        required = f"required when {cls.kind_field} is {cls.kind_name()!r}"
        problems = [(e["loc"], required) for e in missing]
        problems += [((k,), cls._not_used(k)) for k, v in foreign.items() if v is not None]
        problems.sort(key=lambda problem: cls._position(str(problem[0][0])))
        problems += cls.kind_value_problems(given)
        if problems:
            raise field_errors(cls.__name__, problems)
        return model

    @classmethod
    def _position(cls, name: str) -> int:
        """Where a field's errors are listed: in the section's order, unknown fields last."""
        layout = cls.section_layout
        return layout.index(name) if name in layout else len(layout)

    @classmethod
    def _type_errors(cls, name: str, value: object, context: Any) -> list[ErrorDetails]:
        """What is wrong with the type of another kind's field, checked as that kind would."""
        if value is None:
            return []
        try:
            _field_type(cls, name).validate_python(value, context=context)
        except ValidationError as exc:
            return [{**error, "loc": (name, *error["loc"])} for error in exc.errors()]
        return []

    @classmethod
    def add_schema_rules(cls, schema: JsonSchemaValue) -> None:
        """Other kinds' fields appear as null, as the model accepts them."""
        for name in cls.section_layout:
            if name in cls.kind_only_fields() and name not in cls.model_fields:
                schema["properties"][name] = {"type": "null"}
