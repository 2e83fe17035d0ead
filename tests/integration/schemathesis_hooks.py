"""Schemathesis checks of our own, loaded by the fuzz test (SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

import json

import schemathesis


@schemathesis.check
def error_body_is_json_message(ctx, response, case):
    """Every error answer is a JSON object with a message."""
    if response.status_code < 400:
        return None
    headers = {k.lower(): v for k, v in response.headers.items()}
    content_type = headers.get("content-type", "")
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    assert content_type.startswith("application/json"), (
        f"error {response.status_code} with Content-Type {content_type!r}"
    )
    body = json.loads(response.content)
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    return None


@schemathesis.check
def no_server_error_but_not_implemented(ctx, response, case):
    """No 5xx, but for 501: a model without predict() or train() says so."""
    assert response.status_code < 500 or response.status_code == 501, (
        f"server error {response.status_code}: {response.content[:300]!r}"
    )
    return None
