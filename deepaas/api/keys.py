"""The keys of what the Application and its requests hold.

State lives on the Application (``app[keys.X]``) or on a request, never in a
module. This module imports the types it names for type checkers only, and
none of a module that imports it: the keys of what such a module defines
live beside it (``access.INFLIGHT``, ``auth.AUTHENTICATOR``,
``auth.PRINCIPAL``, ``metrics.METRICS``, ``parser.PARSER``).
"""

from __future__ import annotations

import typing

from aiohttp import web

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

    from aiohttp.web_urldispatcher import AbstractRoute

    from deepaas.api.capture import DebugCapture
    from deepaas.api.connections import Connections
    from deepaas.api.startup import Startup
    from deepaas.api.uploads import Uploads
    from deepaas.runtime.wrapper import ModelWrapper
    from deepaas.settings import Settings
    from deepaas.state import Database
    from deepaas.work.events import EventJournal
    from deepaas.work.jobs import Jobs
    from deepaas.work.runner import Runner
    from deepaas.work.trainings import Trainings
    from deepaas.work.webhooks import WebhookSender

# The application's
SETTINGS: web.AppKey[Settings] = web.AppKey("deepaas_settings")
BASE_PATH: web.AppKey[str] = web.AppKey("deepaas_base_path")
MODELS: web.AppKey[dict[str, ModelWrapper]] = web.AppKey("deepaas_models")
DATABASE: web.AppKey[Database] = web.AppKey("deepaas_database")
TRAININGS: web.AppKey[Runner[Trainings]] = web.AppKey("deepaas_trainings")
JOBS: web.AppKey[Runner[Jobs]] = web.AppKey("deepaas_jobs")
EVENTS: web.AppKey[EventJournal] = web.AppKey("deepaas_events")
WEBHOOKS: web.AppKey[WebhookSender] = web.AppKey("deepaas_webhooks")
DEBUG_CAPTURE: web.AppKey[DebugCapture] = web.AppKey("deepaas_debug_capture")
STARTUP: web.AppKey[Startup] = web.AppKey("deepaas_startup")
OPENAPI3: web.AppKey[dict[str, typing.Any]] = web.AppKey("deepaas_openapi3")
CONNECTIONS: web.AppKey[Connections] = web.AppKey("deepaas_connections")
# The access each route needs (deepaas.api.auth)
ROUTE_ACCESS: web.AppKey[dict[AbstractRoute, str]] = web.AppKey("deepaas_access")
# The routes of the Open Inference Protocol, whose errors take its shape
PROTOCOL_ROUTES: web.AppKey[set[AbstractRoute]] = web.AppKey("deepaas_protocol")

# A request's
REQUEST_ID: web.RequestKey[str] = web.RequestKey("deepaas_request_id")
UPLOADS: web.RequestKey[Uploads] = web.RequestKey("deepaas_uploads")
# with tracing on, the id of the request's trace (for its access line)
TRACE_ID: web.RequestKey[str] = web.RequestKey("deepaas_trace_id")
IGNORED_ARGUMENTS: web.RequestKey[Sequence[str]] = web.RequestKey("deepaas_ignored")
