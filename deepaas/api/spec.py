"""The API description: Swagger 2.0 at /swagger.json, OpenAPI 3.0 at /openapi.json.

Both are generated from the same route declarations (aiohttp-apigami over
apispec). The handlers declare their operations the Swagger 2.0 way (form
parameters, ``produces``, ``consumes``), which is what existing DEEPaaS
clients read; for OpenAPI 3 the few places where the two versions differ are
rewritten: form and file parameters become a ``multipart/form-data`` request
body, and the media types an operation produces become its responses'
content.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp_apigami
from aiohttp import web
from aiohttp_apigami import core as aiohttp_apigami_core
from aiohttp_apigami.constants import SWAGGER_DICT
from aiohttp_apigami.route_processor import RouteProcessor
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow import common as marshmallow_common
from marshmallow import fields

from deepaas import __version__
from deepaas.api import auth, keys
from deepaas.api.v2 import responses

if TYPE_CHECKING:
    from deepaas.api.auth import Authenticator

TITLE = "DEEP as a Service API endpoint"
DESCRIPTION = (
    "Machine learning models served by deepaas: metadata, predictions and "
    "trainings, generated from each model's declarations."
)
OPENAPI3_VERSION = "3.0.3"
# Upstream's, so that the documents agree on where the API is described.
EXTERNAL_DOCS = {
    "description": "API documentation",
    "url": "https://deepaas.readthedocs.org/",
}

_BINARY = {"type": "string", "format": "binary"}


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _form_body(parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """A multipart request body from OpenAPI-3-shaped ``formData`` parameters."""
    properties = {}
    required = []
    for parameter in parameters:
        schema = dict(parameter.get("schema") or {})
        if schema.get("type") == "file" and "items" in schema:
            # a list declared ``type="file"``: several files
            schema = {**schema, "type": "array", "items": dict(_BINARY)}
        elif schema.get("type") == "file":
            schema = {**_BINARY, **{k: v for k, v in schema.items() if k != "type"}}
        elif schema.get("items", {}).get("type") == "file":  # several files
            schema["items"] = dict(_BINARY)
        if "description" in parameter:
            schema.setdefault("description", parameter["description"])
        properties[parameter["name"]] = schema
        if parameter.get("required"):
            required.append(parameter["name"])
    body_schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        body_schema["required"] = required
    return {
        "required": bool(required),
        "content": {"multipart/form-data": {"schema": body_schema}},
    }


def _content_for(produces: list[str], schema: dict[str, Any] | None) -> dict[str, Any]:
    content = {}
    for media_type in produces:
        if _is_json(media_type) and schema is not None:
            content[media_type] = {"schema": schema}
        elif media_type.startswith("text/"):
            content[media_type] = {"schema": {"type": "string"}}
        else:
            content[media_type] = {"schema": dict(_BINARY)}
    return content


def _object_parameter_2(parameter: dict[str, Any]) -> None:
    """A Swagger 2.0 query or form parameter cannot be an object: it is sent
    as a JSON string (which the parser reads). A nested schema's
    parameter is a reference to its definition, named in the description."""
    if parameter.get("in") == "body":
        return
    reference = parameter.pop("$ref", None)
    if reference is not None:
        parameter["type"] = "object"
        shape = reference.rsplit("/", 1)[-1]
        parameter["description"] = (
            f"{parameter.get('description', '')} (shaped as {shape})".lstrip()
        )
    if parameter.get("type") != "object":
        return
    parameter["type"] = "string"
    parameter["format"] = "json"
    for key in ("additionalProperties", "properties"):
        parameter.pop(key, None)
    if "default" in parameter:
        parameter["default"] = json.dumps(parameter["default"])
    parameter["description"] = (
        parameter.get("description", "") + " (a JSON object)"
    ).lstrip()


def _object_parameter_3(parameter: dict[str, Any]) -> None:
    """The OpenAPI 3 way to say the same: the value is JSON-encoded."""
    schema = parameter.get("schema") or {}
    if parameter.get("in") == "query" and schema.get("type") == "object":
        del parameter["schema"]
        parameter["content"] = {"application/json": {"schema": schema}}


def _file_list_parameter_2(parameter: dict[str, Any]) -> None:
    """Swagger 2.0 has no array of files: a field taking several files is one
    ``file`` parameter whose part may be repeated."""
    # (``type`` is ``file`` already for a list declared ``type="file"``)
    if parameter.get("in") != "formData" or parameter.get("type") not in (
        "array",
        "file",
    ):
        return
    if parameter.get("items", {}).get("type") != "file":
        return
    parameter["type"] = "file"
    for key in ("items", "collectionFormat", "default"):
        parameter.pop(key, None)
    parameter["description"] = (
        parameter.get("description", "") + " (one or more files: repeat the part)"
    ).lstrip()


def fix_swagger2(spec: dict[str, Any]) -> None:
    """Make apispec's Swagger 2.0 rendering valid where it is not (in place)."""
    for path in spec.get("paths", {}).values():
        for method, operation in path.items():
            if method != "parameters":
                for parameter in operation.get("parameters", []):
                    _object_parameter_2(parameter)
                    if parameter.get("in") != "body" and "type" not in parameter:
                        parameter["type"] = "string"  # a model's own field class
                    _file_list_parameter_2(parameter)
                    # Swagger 2.0 has no null: a null default is no default.
                    if parameter.get("default", "") is None:
                        del parameter["default"]


def _typed_parameter_3(parameter: dict[str, Any]) -> None:
    """A parameter declared the Swagger 2.0 way (``type`` beside ``in``) gets
    its type in a ``schema``, as OpenAPI 3 has it."""
    if parameter.get("in") == "formData" or "schema" in parameter:
        return
    schema = {
        key: parameter.pop(key)
        for key in (
            "type",
            "format",
            "enum",
            "default",
            "items",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "minLength",
            "maxLength",
            "pattern",
            "minItems",
            "maxItems",
        )  # fmt: skip
        if key in parameter
    }
    if schema:
        parameter["schema"] = schema


def _response_headers_3(response: dict[str, Any]) -> None:
    for header in response.get("headers", {}).values():
        if "schema" not in header and "type" in header:
            header["schema"] = {"type": header.pop("type")}


def _operation_to_openapi3(operation: dict[str, Any]) -> None:
    produces = operation.pop("produces", None)
    operation.pop("consumes", None)
    parameters = operation.get("parameters", [])
    for parameter in parameters:
        _object_parameter_3(parameter)
        _typed_parameter_3(parameter)
    for response in operation.get("responses", {}).values():
        _response_headers_3(response)
    form = [p for p in parameters if p.get("in") == "formData"]
    if form:
        operation["parameters"] = [p for p in parameters if p.get("in") != "formData"]
        operation["requestBody"] = _form_body(form)
    if not produces:
        return
    for status, response in operation.get("responses", {}).items():
        if str(status) != "200":
            continue  # errors and accepted jobs are always JSON
        content = response.get("content") or {}
        schema = next(
            (c["schema"] for t, c in content.items() if _is_json(t) and "schema" in c),
            None,
        )
        response["content"] = _content_for(produces, schema)


def to_openapi3(spec: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.0 document from apispec's OpenAPI 3 rendering of
    Swagger-2.0-style declarations."""
    spec = copy.deepcopy(spec)
    for path in spec.get("paths", {}).values():
        for method, operation in path.items():
            if method != "parameters":
                _operation_to_openapi3(operation)
    return spec


def schema_namer(owners: dict[type, str]) -> Callable[[Any], str]:
    """A component-name resolver for one document.

    Names are aiohttp-apigami's (the class name without "Schema"). When two
    different classes share a name, as the response schemas that models declare
    as dicts all do (``ModelPredictionResponse``), the later one gets its
    model's name appended (``owners`` maps a class to its model), or a number.
    """
    taken: dict[str, type] = {}

    def resolve(schema: Any) -> str:
        name: str = aiohttp_apigami_core.resolver(schema)
        resolved = marshmallow_common.resolve_schema_cls(schema)
        cls = resolved[0] if isinstance(resolved, list) else resolved
        if taken.setdefault(name, cls) is cls:
            return name
        owner = owners.get(cls)
        candidates = [f"{name}-{owner}"] if owner else []
        candidates += (f"{name}{n}" for n in range(2, len(taken) + 3))
        for candidate in candidates:
            if taken.setdefault(candidate, cls) is cls:
                return candidate
        raise AssertionError("unreachable: a numbered name is always free")

    return resolve


def _document(
    version: str, *, url: str, namer: Callable[[Any], str], **options: Any
) -> aiohttp_apigami.AiohttpApiSpec:
    """One API document (not yet registered on an app), typed as upstream's:
    integers are ``int32`` and floats ``float``, and upstream's definitions
    are there even where no operation uses them."""
    document = aiohttp_apigami.AiohttpApiSpec(
        url=url,
        openapi_version=version,
        schema_name_resolver=namer,
        title=TITLE,
        version=__version__,
        info={"description": DESCRIPTION},
        externalDocs=EXTERNAL_DOCS,
        **options,
    )
    (plugin,) = document.spec.plugins
    assert isinstance(plugin, MarshmallowPlugin) and plugin.converter is not None
    # A mapping of this document's own: apispec's default one is shared.
    plugin.converter.field_mapping = {
        **plugin.converter.field_mapping,
        fields.Integer: ("integer", "int32"),
        fields.Float: ("number", "float"),
    }
    document.spec.components.schema("TrainingList", schema=responses.TrainingList)
    return document


UNAUTHORIZED = "No credentials, or credentials not accepted (see WWW-Authenticate)"
FORBIDDEN = "The credentials' role does not allow this"


def declare_security(
    swagger2: dict[str, Any], openapi3: dict[str, Any], authenticator: Authenticator
) -> None:
    """Declare how to authenticate in both documents (in place), and the
    401 and 403 answers of every operation they describe (none of which is
    open without credentials)."""
    ways = []
    if authenticator.api_keys is not None:
        ways.append("an API key")
    if authenticator.oidc is not None:
        ways.append(f"an access token of {authenticator.oidc.issuer}")
    bearer = " or ".join(ways)
    bearer = bearer[0].upper() + bearer[1:]
    definitions2: dict[str, Any] = {
        "bearer": {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": f"{bearer}, as `Bearer <credentials>`.",
        }
    }
    schemes3: dict[str, Any] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": f"{bearer}."}
    }
    if authenticator.api_keys is not None:
        api_key = {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "An API key, as it is.",
        }
        definitions2["apiKey"] = api_key
        schemes3["apiKey"] = dict(api_key)
    if authenticator.oidc is not None:
        schemes3["oidc"] = {
            "type": "openIdConnect",
            "openIdConnectUrl": authenticator.oidc.discovery_url,
        }
    swagger2["securityDefinitions"] = definitions2
    swagger2["security"] = [{name: []} for name in definitions2]
    openapi3.setdefault("components", {})["securitySchemes"] = schemes3
    openapi3["security"] = [{name: []} for name in schemes3]
    failure2 = {"$ref": "#/definitions/Failure"}
    failure3 = {"content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Failure"
    }}}}  # fmt: skip
    for document, failure in ((swagger2, {"schema": failure2}), (openapi3, failure3)):
        for path in document.get("paths", {}).values():
            for method, operation in path.items():
                if method == "parameters" or operation.get("security") == []:
                    continue  # (an operation open without credentials)
                answers = operation.setdefault("responses", {})
                answers.setdefault("401", {"description": UNAUTHORIZED, **failure})
                answers.setdefault("403", {"description": FORBIDDEN, **failure})


def add_part(openapi3: dict[str, Any], part: dict[str, Any]) -> None:
    """Add a part described apart (``paths``, ``schemas`` and its ``tag``)
    to an OpenAPI 3 document, in place."""
    openapi3.setdefault("paths", {}).update(part["paths"])
    openapi3.setdefault("components", {}).setdefault("schemas", {}).update(
        part["schemas"]
    )
    openapi3.setdefault("tags", []).append(part["tag"])


# How the part of /openapi.json described apart is made, from the app and
# its base path (``add_part``).
Part = Callable[[web.Application, str], dict[str, Any]]


def documents(
    app: web.Application, base: str, part: Part | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Swagger 2.0 and OpenAPI 3 documents of the app's routes as they
    are now: what /swagger.json and /openapi.json answer."""
    owners = {
        type(model.declaration.response_schema): name
        for name, model in app[keys.MODELS].items()
        if model.declaration.response_schema is not None
    }
    made = []
    for version in ("2.0", OPENAPI3_VERSION):
        document = _document(version, url="", namer=schema_namer(owners))
        RouteProcessor(document.spec).register_routes(app)
        made.append(document.swagger_dict())
    swagger2, openapi3 = made[0], to_openapi3(made[1])
    fix_swagger2(swagger2)
    if part is not None:
        add_part(openapi3, part(app, base))
    authenticator = app[auth.AUTHENTICATOR]
    if authenticator is not None:
        declare_security(swagger2, openapi3, authenticator)
    return swagger2, openapi3


def refresh(app: web.Application) -> None:
    """Describe the routes anew (after a reload changed their handlers):
    the documents are replaced in place."""
    base = app[keys.BASE_PATH]
    swagger2, openapi3 = documents(app, base, app[PART])
    for served, made in ((app[SWAGGER_DICT], swagger2), (app[keys.OPENAPI3], openapi3)):
        served.clear()
        served.update(made)


PART: web.AppKey[Part | None] = web.AppKey("deepaas_spec_part")


def setup(
    app: web.Application,
    base: str,
    with_ui: bool,
    *,
    part: Part | None = None,
) -> None:
    """Serve /swagger.json, /openapi.json and (``with_ui``) Swagger UI;
    ``part`` makes a part of /openapi.json described apart (``add_part``)."""
    swagger2, openapi3 = documents(app, base, part)
    app[PART] = part
    app[keys.OPENAPI3] = openapi3

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(request.app[keys.OPENAPI3])

    app.router.add_get(f"{base}/openapi.json", openapi_json)
    # aiohttp-apigami serves /swagger.json and the UI; it describes the
    # routes too, a document replaced by the one made above.
    served = _document(
        "2.0",
        url=f"{base}/swagger.json",
        namer=schema_namer({}),
        swagger_path=f"{base}/api" if with_ui else None,
        static_path=f"{base}/static/swagger",
    )
    served.register(app, in_place=True)
    app[SWAGGER_DICT] = swagger2
    if with_ui:
        ui = next(r.handler for r in app.router["swagger.docs"] if r.method == "GET")
        for path in (f"{base}/api/", f"{base}/ui", f"{base}/ui/"):
            app.router.add_get(path, ui)
