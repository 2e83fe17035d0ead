"""A model's declared arguments, made usable on webargs 8 and marshmallow 3.

Model packages declare arguments the way the DEEPaaS documentation shows:
``fields.Str(missing=..., enum=[...], description=...)``, file fields as
``fields.Field(type="file", location="form")``, and even plain dicts
(``{"default": ..., "help": ..., "required": ...}``). This module turns such a
declaration into an ``Arguments`` object: the fields (with ``enum`` enforced as a
choice), which of them are files, and the marshmallow schemas built from them.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import marshmallow
from marshmallow import fields, validate
from webargs.multidictproxy import MultiDictProxy

from deepaas import exceptions

# An ``accept`` argument also takes this, meaning its default (as upstream).
ANY_MEDIA_TYPE = "*/*"
MULTI_VALUED = (fields.List, fields.Tuple)  # fields that take every value of a name

# Python types allowed in the deprecated plain-dict declarations.
_PLAIN_TYPES: dict[Any, type[fields.Field]] = {
    int: fields.Int,
    float: fields.Float,
    bool: fields.Bool,
    str: fields.Str,
    list: fields.List,
    dict: fields.Dict,
}


def is_file_field(field: fields.Field) -> bool:
    """True when a field is uploaded as a multipart file part."""
    return field.metadata.get("type") == "file" or field.metadata.get("location") in (
        "form",
        "files",
    )


def choices_of(field: fields.Field) -> list[Any] | None:
    """The allowed values of a field (``enum=`` or a ``OneOf`` validator)."""
    for validator in field.validators:
        if isinstance(validator, validate.OneOf):
            return list(validator.choices)
    enum = field.metadata.get("enum")
    return list(enum) if enum is not None else None


def _from_plain_dict(name: str, spec: Mapping[str, Any]) -> fields.Field:
    """Build a field from a deprecated ``{"default", "help", "required"}`` dict."""
    default = spec.get("default")
    declared_type = spec.get("type")
    if declared_type is None and default is not None:
        declared_type = type(default)
    field_cls = _PLAIN_TYPES.get(declared_type, fields.Str)
    kwargs: dict[str, Any] = {
        "required": bool(spec.get("required", False)),
        "metadata": {"description": spec.get("help", "")},
    }
    if not kwargs["required"]:
        kwargs["load_default"] = default
        kwargs["allow_none"] = default is None
    if "choices" in spec:
        kwargs["validate"] = validate.OneOf(spec["choices"])
    if field_cls is fields.List:
        return fields.List(fields.Raw(), **kwargs)
    return field_cls(**kwargs)


def normalize_field(name: str, declared: Any) -> fields.Field:
    """Return a marshmallow 3 field for one declared argument."""
    if isinstance(declared, Mapping):
        return _from_plain_dict(name, declared)
    if isinstance(declared, type) and issubclass(declared, fields.Field):
        declared = declared()
    if not isinstance(declared, fields.Field):
        raise TypeError(
            f"argument {name!r} is a {type(declared).__name__}, not a "
            "marshmallow/webargs field or a dict"
        )
    field = copy.deepcopy(declared)
    enum = field.metadata.get("enum")
    if enum is not None and not any(
        isinstance(v, validate.OneOf) for v in field.validators
    ):
        field.validators.append(validate.OneOf(list(enum)))
    return field


def accepting_any_media_type(field: fields.Field) -> fields.Field:
    """``field`` (an ``accept`` argument) with ``*/*`` among its choices."""
    choices = choices_of(field)
    if choices is None or ANY_MEDIA_TYPE in choices:
        return field
    widened = [*choices, ANY_MEDIA_TYPE]
    declared = next(v for v in field.validators if isinstance(v, validate.OneOf))
    wider = validate.OneOf(widened, error=declared.error)
    # A value outside them is refused naming the declared choices, as upstream.
    wider.choices_text = declared.choices_text
    field.validators = [v for v in field.validators if v is not declared] + [wider]
    if "enum" in field.metadata:
        field.metadata = {**field.metadata, "enum": widened}
    return field


class Arguments:
    """The arguments one model method accepts.

    With ``any_media_type`` an ``accept`` argument with choices also takes
    ``*/*`` (predict's, as upstream).
    """

    def __init__(
        self, declared: Mapping[str, Any], *, any_media_type: bool = False
    ) -> None:
        self.fields: dict[str, fields.Field] = {
            name: normalize_field(name, value) for name, value in declared.items()
        }
        if any_media_type and "accept" in self.fields:
            self.fields["accept"] = accepting_any_media_type(self.fields["accept"])
        self.file_names: frozenset[str] = frozenset(
            name for name, f in self.fields.items() if is_file_field(f)
        )
        self.schema = self._schema_for(self.fields)
        self.value_schema = self._schema_for(
            {n: f for n, f in self.fields.items() if n not in self.file_names}
        )
        self.file_schema = self._schema_for(
            {n: f for n, f in self.fields.items() if n in self.file_names}
        )
        # What reading a request needs to know of them, found once: the
        # arguments given as JSON objects, those given as lists, and those
        # that take every value of a repeated name (webargs' rule).
        self.dict_names: frozenset[str] = frozenset(
            n for n, f in self.fields.items() if isinstance(f, fields.Dict)
        )
        self.list_names: frozenset[str] = frozenset(
            n for n, f in self.fields.items() if isinstance(f, fields.List)
        )
        self.multiple_keys: frozenset[str] = frozenset(
            MultiDictProxy(
                {}, self.schema, known_multi_fields=MULTI_VALUED
            ).multiple_keys
        )

    @staticmethod
    def _schema_for(fields_: Mapping[str, fields.Field]) -> marshmallow.Schema:
        schema_cls = marshmallow.Schema.from_dict(
            {name: copy.deepcopy(f) for name, f in fields_.items()}
        )
        return schema_cls()

    def __contains__(self, name: str) -> bool:
        return name in self.fields

    def choices(self, name: str) -> list[Any] | None:
        """The allowed values of argument ``name``, if it declares any."""
        field = self.fields.get(name)
        return choices_of(field) if field is not None else None

    def load(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``data`` and return the model's keyword arguments.

        Raises ``InvalidArguments`` naming every bad field.
        """
        try:
            loaded = load_arguments(self.schema, data, unknown=marshmallow.RAISE)
        except marshmallow.ValidationError as exc:
            errors = (
                exc.messages
                if isinstance(exc.messages, dict)
                else {"_schema": exc.messages}
            )
            raise exceptions.InvalidArguments(errors) from None
        return dict(loaded)


def read_declaration(
    model_name: str,
    what: str,
    getter: Callable[[], Any] | None,
    *,
    any_media_type: bool = False,
) -> Arguments:
    """Call a model's ``get_predict_args``/``get_train_args`` and normalise it.

    A model without the method (or whose method raises NotImplementedError)
    takes no arguments. A declaration that is not a
    mapping of fields stops start-up with a message naming the model.
    """
    if getter is None:
        return Arguments({})
    with warnings.catch_warnings():
        # The documented declarations use marshmallow 3 keywords (missing=,
        # description=, enum=) that marshmallow flags for version 4; they are
        # the contract here, so do not fill the log with them.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            try:
                declared = getter()
            except NotImplementedError:
                declared = {}
            if declared is None:
                declared = {}
            if not isinstance(declared, Mapping):
                raise TypeError(f"it returned a {type(declared).__name__}, not a dict")
            return Arguments(declared, any_media_type=any_media_type)
        except Exception as exc:
            raise exceptions.ModelLoadError(
                f"Model {model_name!r}: {what}() is not a valid argument "
                f"declaration: {exc}"
            ) from exc


def by_field(messages: Any) -> dict[str, Any]:
    """A schema's error messages keyed by field, as a 422 reports them."""
    return messages if isinstance(messages, dict) else {"_schema": messages}


def load_arguments(schema: marshmallow.Schema, data: Any, **kwargs: Any) -> Any:
    """``data`` loaded through ``schema`` (``kwargs`` go to ``load``).

    A field may fail with something other than a ``ValidationError`` (a
    model's own field class, a value nested too deeply for the interpreter's
    stack): whatever the client sent, that is a ``InvalidArguments`` naming
    the argument, never the end of the process that reads it.
    """
    try:
        return schema.load(data, **kwargs)
    except marshmallow.ValidationError:
        raise
    except Exception as exc:
        raise unreadable_argument(schema, data, exc) from None


def unreadable_argument(
    schema: marshmallow.Schema, data: Any, exc: BaseException
) -> exceptions.InvalidArguments:
    """The 422 for arguments whose loading raised ``exc``: the argument
    whose value raises when loaded alone, or the whole of them."""
    why = (
        "The value is nested too deeply to be read."
        if isinstance(exc, RecursionError)
        else "The value cannot be read."
    )
    if isinstance(data, Mapping):
        for name, value in data.items():
            field = schema.fields.get(name) if isinstance(name, str) else None
            if field is None:
                continue
            try:
                field.deserialize(value, name, data)
            except marshmallow.ValidationError:
                continue
            except Exception:
                return exceptions.InvalidArguments({name: [why]})
    return exceptions.InvalidArguments({"_schema": [why]})
