"""POST /v2/models/<name>/predict/ against real models in real workers."""

from __future__ import annotations

import json
import os
import tempfile

import aiohttp
import pytest

from tests.conftest import EXECUTORS

PREDICT = "/v2/models/module-model/predict/"


@pytest.fixture
async def client(make_client):
    return await make_client("--model-name", "module-model")


async def test_defaults_come_from_missing(client):
    resp = await client.post(PREDICT)
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "OK"
    args = body["predictions"]["args"]
    assert args == {
        "text": "foo",
        "count": 1,
        "ratio": 0.5,
        "flag": False,
        "numbers": [1.0, 2.0],
        "link": None,
        "mode": "a",
    }


async def test_warm_ran_in_the_worker_that_predicts(client):
    body = await (await client.post(PREDICT)).json()
    assert body["predictions"]["warmed_in"] == body["predictions"]["pid"]
    assert body["predictions"]["pid"] != os.getpid()


async def test_arguments_from_query_string(client):
    resp = await client.post(
        PREDICT + "?text=bar&count=3&flag=true&numbers=1.5&numbers=2.5"
        "&link=http://example.org/x"
    )
    args = (await resp.json())["predictions"]["args"]
    assert args["text"] == "bar"
    assert args["count"] == 3
    assert args["flag"] is True
    assert args["numbers"] == [1.5, 2.5]
    assert args["link"] == "http://example.org/x"


async def test_arguments_from_urlencoded_form(client):
    resp = await client.post(PREDICT, data={"text": "baz", "ratio": "0.25"})
    args = (await resp.json())["predictions"]["args"]
    assert (args["text"], args["ratio"]) == ("baz", 0.25)


async def test_arguments_from_json_body(client):
    resp = await client.post(PREDICT, json={"count": 7, "numbers": [3, 4]})
    args = (await resp.json())["predictions"]["args"]
    assert (args["count"], args["numbers"]) == (7, [3.0, 4.0])


async def test_query_wins_over_a_json_body(client):
    resp = await client.post(PREDICT + "?count=2", json={"count": 5, "ratio": 0.7})
    args = (await resp.json())["predictions"]["args"]
    assert (args["count"], args["ratio"]) == (2, 0.7)


@EXECUTORS
async def test_file_reaches_model_as_uploaded_file_and_is_deleted(client):
    form = aiohttp.FormData()
    form.add_field("text", "bar")
    form.add_field(
        "data", b"hello file", filename="photo.jpg", content_type="image/jpeg"
    )
    resp = await client.post(PREDICT, data=form)
    assert resp.status == 200
    body = await resp.json()
    info = body["predictions"]["file"]
    assert info["name"] == "data"
    assert info["original_filename"] == "photo.jpg"
    assert info["content_type"] == "image/jpeg"
    assert info["size"] == 10
    assert info["head"] == "hello file"
    assert info["exists_during_call"] is True
    assert info["path"].endswith(".jpg")
    assert not os.path.exists(info["path"])
    assert body["predictions"]["args"]["text"] == "bar"


async def test_invalid_arguments_are_422_naming_each_field(client):
    resp = await client.post(PREDICT + "?count=0&text=nope&flag=maybe")
    assert resp.status == 422
    body = await resp.json()
    assert set(body["errors"]) == {"count", "text", "flag"}
    assert "count" in body["message"] and "text" in body["message"]


async def test_enum_is_enforced_as_a_choice(client):
    resp = await client.post(PREDICT + "?text=qux")
    assert resp.status == 422
    assert (await resp.json())["errors"]["text"] == ["Must be one of: foo, bar, baz."]


async def test_value_for_a_file_argument_is_ignored(client):
    resp = await client.post(PREDICT, data={"data": "not a file"})
    assert resp.status == 200
    assert resp.headers["Deepaas-Ignored-Arguments"] == "data"
    assert "file" not in (await resp.json())["predictions"]


async def test_file_for_a_value_argument_is_422(client):
    form = aiohttp.FormData()
    form.add_field("text", b"foo", filename="text.txt")
    resp = await client.post(PREDICT, data=form)
    assert resp.status == 422
    assert "not a file" in (await resp.json())["errors"]["text"][0]


async def test_malformed_json_is_400(client):
    resp = await client.post(
        PREDICT, data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert "not valid JSON" in (await resp.json())["message"]


async def test_json_body_that_is_not_an_object_is_422(client):
    resp = await client.post(PREDICT, json=[1, 2])
    assert resp.status == 422
    assert "object" in (await resp.json())["message"]


async def test_unknown_model_is_404_listing_models(client):
    resp = await client.post("/v2/models/nope/predict/")
    assert resp.status == 404
    message = (await resp.json())["message"]
    assert "nope" in message and "module-model" in message


async def test_get_on_predict_lists_the_asynchronous_ones(client):
    resp = await client.get(PREDICT)
    assert resp.status == 200
    assert await resp.json() == []
    resp = await client.put(PREDICT)
    assert resp.status == 405
    assert "message" in await resp.json()


async def test_works_without_trailing_slash(client):
    resp = await client.post(PREDICT.rstrip("/") + "?count=2")
    assert resp.status == 200
    assert (await resp.json())["predictions"]["args"]["count"] == 2


async def test_plain_dict_arguments(make_client):
    client = await make_client("--model-name", "plain-args")
    resp = await client.post("/v2/models/plain-args/predict/?needed=!&times=1")
    assert resp.status == 200
    assert (await resp.json())["predictions"] == "hello world!"
    resp = await client.post("/v2/models/plain-args/predict/")
    assert resp.status == 422
    assert "needed" in (await resp.json())["errors"]


class TestResponseSchema:
    async def test_valid_result_is_sent_as_is(self, make_client):
        client = await make_client("--model-name", "class-model")
        resp = await client.post("/v2/models/class-model/predict/?label=dog")
        assert resp.status == 200
        assert await resp.json() == {
            "status": "OK",
            "predictions": [{"label": "dog", "probability": 0.9}],
        }

    async def test_invalid_result_is_500_with_clear_message(self, make_client):
        client = await make_client("--model-name", "class-model")
        resp = await client.post("/v2/models/class-model/predict/?valid=false")
        assert resp.status == 500
        message = (await resp.json())["message"]
        assert "does not match its schema" in message
        assert "class-model" in message

    async def test_schema_subclass_validates_too(self, make_client):
        client = await make_client("--model-name", "schema-class")
        resp = await client.post("/v2/models/schema-class/predict/?valid=false")
        assert resp.status == 500
        resp = await client.post("/v2/models/schema-class/predict/")
        assert resp.status == 200


@EXECUTORS
class TestAccept:
    @pytest.fixture
    async def client(self, make_client):
        return await make_client("--model-name", "accept-model")

    async def test_default_accept_sends_raw_bytes(self, client):
        resp = await client.post("/v2/models/accept-model/predict/")
        assert resp.status == 200
        assert resp.content_type == "application/zip"
        assert (await resp.read()).startswith(b"PK\x05\x06")

    async def test_accept_argument_returns_open_file_streamed(self, client):
        resp = await client.post("/v2/models/accept-model/predict/?accept=image/png")
        assert resp.status == 200
        assert resp.content_type == "image/png"
        assert await resp.read() == b"\x89PNG\r\n\x1a\n-fake-png-"

    async def test_accept_header_selects_the_type(self, client):
        resp = await client.post(
            "/v2/models/accept-model/predict/",
            headers={"Accept": "text/html;q=0.9, application/json"},
        )
        assert resp.status == 200
        assert await resp.json() == {"status": "OK", "predictions": {"some": "json"}}

    async def test_wildcard_accept_header_keeps_the_default(self, client):
        resp = await client.post(
            "/v2/models/accept-model/predict/", headers={"Accept": "*/*"}
        )
        assert resp.content_type == "application/zip"

    async def test_unproducible_accept_header_falls_back_to_the_default(self, client):
        resp = await client.post(
            "/v2/models/accept-model/predict/", headers={"Accept": "text/csv"}
        )
        assert resp.status == 200
        assert resp.content_type == "application/zip"

    async def test_unknown_accept_argument_is_422(self, client):
        resp = await client.post("/v2/models/accept-model/predict/?accept=text/csv")
        assert resp.status == 422


@EXECUTORS
class TestModelFailures:
    @pytest.fixture
    async def client(self, make_client):
        return await make_client("--model-name", "failing")

    async def predict(self, client, mode, **extra):
        resp = await client.post(f"/v2/models/failing/predict/?mode={mode}", **extra)
        return resp, await resp.json()

    async def test_exception_is_500_with_its_message(self, client):
        resp, body = await self.predict(client, "raise")
        assert resp.status == 500
        assert body["message"] == "ValueError: the model is unhappy"

    async def test_http_exception_keeps_status_and_reason(self, client):
        resp, body = await self.predict(client, "http")
        assert resp.status == 429
        assert resp.reason == "Slow down please"
        assert body["message"] == "Too many requests"

    async def test_http_bad_request_from_model_is_400(self, client):
        resp, body = await self.predict(client, "http-bad-request")
        assert resp.status == 400
        assert resp.reason == "Bad image"

    async def test_not_implemented_is_501(self, client):
        resp, body = await self.predict(client, "not-implemented")
        assert resp.status == 501
        assert "not in this version" in body["message"]

    @pytest.mark.parametrize(
        ("mode", "exit_text"),
        [("exit", "exit code 3"), ("segfault", "SIGSEGV")],
    )
    async def test_worker_death_is_500_and_next_call_works(
        self, client, mode, exit_text
    ):
        resp, body = await self.predict(client, mode)
        assert resp.status == 500
        assert exit_text in body["message"]
        assert "died" in body["message"]
        resp, body = await self.predict(client, "ok")
        assert resp.status == 200
        assert body["predictions"]["mode"] == "ok"

    async def test_uploaded_file_deleted_when_worker_dies(
        self, client, monkeypatch, tmp_path
    ):
        # a temporary directory of this test's own: others may be uploading
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        form = aiohttp.FormData()
        form.add_field("data", b"x" * 1000, filename="a.bin")
        resp = await client.post("/v2/models/failing/predict/?mode=ok", data=form)
        path = (await resp.json())["predictions"]["path"]
        assert not os.path.exists(path)
        upload_dir = os.path.dirname(path)
        form = aiohttp.FormData()
        form.add_field("data", b"x" * 1000, filename="a.bin")
        resp = await client.post("/v2/models/failing/predict/?mode=exit", data=form)
        assert resp.status == 500
        leftovers = [
            d
            for d in os.listdir(os.path.dirname(upload_dir))
            if d.startswith("deepaas-upload-")
        ]
        assert leftovers == []


async def test_model_without_predict_args_and_metadata(make_client):
    client = await make_client("--model-name", "minimal")
    resp = await client.post("/v2/models/minimal/predict/")
    assert resp.status == 200
    assert (await resp.json())["predictions"] == {"ok": True}
    resp = await client.get("/v2/models/minimal/")
    body = await resp.json()
    assert body["id"] == "minimal"
    assert "get_metadata" in body["description"]


class TestClientMaxSize:
    @pytest.fixture
    async def client(self, make_client):
        return await make_client(
            "--model-name", "module-model", "--client-max-size", "1000"
        )

    async def test_multipart_over_limit_is_413(self, client):
        form = aiohttp.FormData()
        form.add_field("data", b"x" * 5000, filename="big.bin")
        resp = await client.post(PREDICT, data=form)
        assert resp.status == 413
        assert "message" in await resp.json()

    async def test_json_over_limit_is_413(self, client):
        resp = await client.post(
            PREDICT,
            data=json.dumps({"text": "x" * 5000}),
            headers={"Content-Type": "application/json"},
        )
        assert resp.status == 413

    async def test_small_upload_passes(self, client):
        form = aiohttp.FormData()
        form.add_field("data", b"x" * 100, filename="small.bin")
        resp = await client.post(PREDICT, data=form)
        assert resp.status == 200


class TestMalformedBodies:
    async def test_multipart_without_boundary_is_400(self, client):
        resp = await client.post(
            PREDICT, data=b"x", headers={"Content-Type": "multipart/form-data"}
        )
        assert resp.status == 400
        assert "multipart" in (await resp.json())["message"]

    async def test_multipart_with_broken_part_header_is_400(self, client):
        body = b"--b\r\n[[], {'': 1}]--b--\r\n"
        resp = await client.post(
            PREDICT,
            data=body,
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert resp.status == 400
        assert "multipart" in (await resp.json())["message"]

    async def test_nested_multipart_is_400(self, client):
        inner = b"--i\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--i--\r\n"
        body = (
            b"--b\r\nContent-Disposition: form-data; name=files\r\n"
            b"Content-Type: multipart/mixed; boundary=i\r\n\r\n"
            + inner
            + b"\r\n--b--\r\n"
        )
        resp = await client.post(
            PREDICT,
            data=body,
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert resp.status == 400
        assert "Nested" in (await resp.json())["message"]
