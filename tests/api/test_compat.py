"""What clients and model packages written for upstream DEEPaaS 2.6 rely on.

One test (or class) per behaviour; each sends the input that upstream answers
with success.
"""

from __future__ import annotations

import json

import aiohttp
import pytest
from yarl import URL

PREDICT = "/v2/models/module-model/predict/"
FILES = "/v2/models/files/predict/"


@pytest.fixture
async def client(make_client):
    return await make_client("--model-name", "module-model")


async def predicted_args(resp: aiohttp.ClientResponse) -> dict:
    assert resp.status == 200, await resp.text()
    return (await resp.json())["predictions"]["args"]


class TestUnknownArgumentsAreIgnored:  # 1
    async def test_in_the_query_string(self, client):
        resp = await client.post(PREDICT + "?count=2&_=1700000000&accept=x/y")
        assert (await predicted_args(resp))["count"] == 2
        assert resp.headers["Deepaas-Ignored-Arguments"] == "_, accept"

    async def test_in_a_form(self, client):
        resp = await client.post(PREDICT, data={"count": "3", "colour": "red"})
        assert (await predicted_args(resp))["count"] == 3
        assert resp.headers["Deepaas-Ignored-Arguments"] == "colour"

    async def test_in_a_json_body(self, client):
        resp = await client.post(PREDICT, json={"count": 4, "old_option": True})
        assert (await predicted_args(resp))["count"] == 4
        assert resp.headers["Deepaas-Ignored-Arguments"] == "old_option"

    async def test_as_extra_multipart_parts(self, client):
        form = aiohttp.FormData()
        form.add_field("count", "5")
        form.add_field("label", "x")
        form.add_field("attachment", b"bytes", filename="a.bin")
        resp = await client.post(PREDICT, data=form)
        assert (await predicted_args(resp))["count"] == 5
        assert resp.headers["Deepaas-Ignored-Arguments"] == "label, attachment"

    async def test_odd_names_cannot_break_the_header(self, client):
        resp = await client.post(PREDICT + "?%1F=x&a,b=y&caf%C3%A9=z")
        assert resp.status == 200
        header = resp.headers["Deepaas-Ignored-Arguments"]
        assert header == "%1F, a%2Cb, caf%C3%A9"

    async def test_a_request_with_none_has_no_header(self, client):
        resp = await client.post(PREDICT + "?count=2")
        assert resp.status == 200
        assert "Deepaas-Ignored-Arguments" not in resp.headers

    async def test_a_value_for_a_file_argument(self, client):
        resp = await client.post(PREDICT + "?data=x&count=2")
        args = await predicted_args(resp)
        assert args["count"] == 2
        assert resp.headers["Deepaas-Ignored-Arguments"] == "data"
        resp = await client.post(PREDICT, data={"data": "x", "count": "3"})
        assert (await predicted_args(resp))["count"] == 3
        assert resp.headers["Deepaas-Ignored-Arguments"] == "data"

    async def test_a_value_for_a_file_argument_read_by_the_worker(
        self, make_client, tmp_path
    ):
        client = await make_client(
            "--model-name", "module-model", "--upload-memory-dir", str(tmp_path)
        )
        form = aiohttp.FormData()
        form.add_field("data", "x")
        form.add_field("attachment", b"bytes", filename="a.bin")
        resp = await client.post(PREDICT, data=form)
        assert (await predicted_args(resp))["count"] == 1
        assert resp.headers["Deepaas-Ignored-Arguments"] == "data, attachment"

    async def test_strict_arguments_refuses_a_value_for_a_file(self, make_client):
        client = await make_client("--model-name", "module-model", "--strict-arguments")
        resp = await client.post(PREDICT + "?data=x")
        assert resp.status == 422
        assert "as a file" in (await resp.json())["data"][0]

    async def test_strict_arguments_refuses_them(self, make_client):
        client = await make_client("--model-name", "module-model", "--strict-arguments")
        resp = await client.post(PREDICT + "?count=2&colour=red")
        assert resp.status == 422
        body = await resp.json()
        assert body["colour"] == ["Unknown field."]
        assert "colour" in body["message"]


class TestRepeatedSlashes:  # 2
    @pytest.mark.parametrize(
        "path",
        ["//v2/models/module-model/predict/", "/v2//models/module-model/predict"],
    )
    async def test_are_a_308_to_the_clean_path(self, client, path):
        url = URL(f"http://127.0.0.1:{client.port}{path}?count=2", encoded=True)
        resp = await client.session.post(url, allow_redirects=False)
        assert resp.status == 308
        assert resp.headers["Location"] in (
            "/v2/models/module-model/predict/?count=2",
            "/v2/models/module-model/predict?count=2",
        )

    async def test_a_client_that_follows_gets_the_same_answer_body_and_all(
        self, client
    ):
        url = URL(f"http://127.0.0.1:{client.port}//v2//models/", encoded=True)
        resp = await client.session.get(url)
        assert resp.status == 200
        assert (await resp.json())["models"][0]["id"] == "module-model"
        url = URL(
            f"http://127.0.0.1:{client.port}//v2/models/module-model/predict/",
            encoded=True,
        )
        resp = await client.session.post(url, json={"count": 7})
        assert (await predicted_args(resp))["count"] == 7


class TestTheQueryStringWins:  # 3
    async def test_over_a_json_body(self, client):
        resp = await client.post(PREDICT + "?count=2", json={"count": 5})
        assert (await predicted_args(resp))["count"] == 2

    async def test_over_a_multipart_form(self, client):
        form = aiohttp.FormData()
        form.add_field("count", "5")
        form.add_field("ratio", "0.9")
        resp = await client.post(PREDICT + "?count=2", data=form)
        args = await predicted_args(resp)
        assert (args["count"], args["ratio"]) == (2, 0.9)


class TestAcceptAnything:  # 4
    async def test_accept_wildcard_reaches_the_model(self, make_client):
        """As upstream passes it; the bytes the model answers are sent as
        they are (upstream fails on them)."""
        client = await make_client("--model-name", "accept-model")
        resp = await client.post("/v2/models/accept-model/predict/?accept=*/*")
        assert resp.status == 200
        assert resp.content_type == "application/octet-stream"
        assert (await resp.read()).startswith(b"PK")
        resp = await client.post(
            "/v2/models/accept-model/predict/", params={"accept": "*/*"}, json={}
        )
        assert resp.status == 200

    async def test_the_spec_lists_the_wildcard(self, make_client):
        client = await make_client("--model-name", "accept-model", ready=False)
        spec = await (await client.get("/swagger.json")).json()
        parameters = spec["paths"]["/v2/models/accept-model/predict/"]["post"][
            "parameters"
        ]
        (accept,) = [p for p in parameters if p["name"] == "accept"]
        assert accept["enum"][-1] == "*/*"


class TestAcceptHeader:  # 5
    @pytest.fixture
    async def client(self, make_client):
        return await make_client("--model-name", "accept-model")

    async def test_that_matches_no_choice_gets_the_default(self, client):
        resp = await client.post(
            "/v2/models/accept-model/predict/", headers={"Accept": "text/csv"}
        )
        assert resp.status == 200
        assert resp.content_type == "application/zip"

    async def test_that_matches_a_choice_selects_it(self, client):
        resp = await client.post(
            "/v2/models/accept-model/predict/", headers={"Accept": "image/png"}
        )
        assert resp.content_type == "image/png"

    async def test_an_accept_argument_outside_the_choices_stays_422(self, client):
        resp = await client.post("/v2/models/accept-model/predict/?accept=text/csv")
        assert resp.status == 422
        assert "accept" in await resp.json()

    async def test_a_model_without_accept_answers_json_whatever_the_header(
        self, make_client
    ):
        client = await make_client("--model-name", "module-model")
        resp = await client.post(PREDICT, headers={"Accept": "image/png"})
        assert resp.status == 200
        assert resp.content_type == "application/json"


class TestNotImplemented:  # 6
    async def test_train_is_501_at_post_time_and_records_nothing(self, make_client):
        client = await make_client("--model-name", "minimal")
        resp = await client.post("/v2/models/minimal/train/")
        assert resp.status == 501
        assert "train()" in (await resp.json())["message"]
        assert await (await client.get("/v2/models/minimal/train/")).json() == []

    async def test_predict_is_501(self, make_client):
        client = await make_client("--model-name", "train-only")
        resp = await client.post("/v2/models/train-only/predict/")
        assert resp.status == 501
        assert "predict()" in (await resp.json())["message"]


class TestLenientValues:  # 7
    async def test_a_json_scalar_for_a_list_is_a_list_of_one(self, client):
        resp = await client.post(PREDICT, json={"numbers": 1.5})
        assert (await predicted_args(resp))["numbers"] == [1.5]

    async def test_an_empty_form_value_for_a_file_means_no_file(self, client):
        resp = await client.post(PREDICT, data={"data": "", "count": "2"})
        body = (await resp.json())["predictions"]
        assert resp.status == 200
        assert body["args"]["count"] == 2 and "file" not in body


class TestSeveralFiles:  # 8
    @pytest.fixture
    async def client(self, make_client):
        return await make_client("--model-name", "files")

    def form(self, name: str, count: int) -> aiohttp.FormData:
        form = aiohttp.FormData()
        for n in range(count):
            form.add_field(name, b"x", filename=f"{n}.png")
        return form

    async def test_two_files_for_a_one_file_field_is_422(self, client):
        resp = await client.post(FILES, data=self.form("image", 2))
        assert resp.status == 422
        body = await resp.json()
        assert body["image"] == ["One file is expected; 2 were sent."]

    @pytest.mark.parametrize("count", [1, 3])
    async def test_a_several_files_field_gets_a_list(self, client, count):
        resp = await client.post(FILES, data=self.form("images", count))
        assert resp.status == 200
        images = (await resp.json())["predictions"]["images"]
        assert images == [f"{n}.png" for n in range(count)]


async def test_a_returned_upload_reaches_the_client(make_client):  # 9
    client = await make_client("--model-name", "files")
    form = aiohttp.FormData()
    form.add_field("image", b"\x89PNG-the-upload", filename="cat.png")
    resp = await client.post(FILES + "?accept=image/*", data=form)
    assert resp.status == 200
    assert await resp.read() == b"\x89PNG-the-upload"


async def test_version_links_end_with_a_slash(client):  # 10
    root = await (await client.get("/")).json()
    v2 = await (await client.get("/v2/")).json()
    assert root["versions"][0]["links"][0]["href"] == "/v2/"
    assert v2["links"] == [{"rel": "self", "type": "application/json", "href": "/v2/"}]
    # a client that urljoins on the href lands on the models
    models = await client.get(URL(v2["links"][0]["href"]).join(URL("models/")))
    assert (await models.json())["models"][0]["id"] == "module-model"


async def test_422_keeps_field_messages_at_the_top_level(client):  # 11
    resp = await client.post(PREDICT + "?count=many&ratio=x")
    assert resp.status == 422
    body = await resp.json()
    assert body["count"] == ["Not a valid integer."]
    assert body["ratio"] == ["Not a valid number."]
    assert body["errors"] == {"count": body["count"], "ratio": body["ratio"]}
    assert body["message"].startswith("Invalid arguments: count: ")


async def test_swagger_keeps_upstreams_names_and_formats(make_client):  # 12
    client = await make_client("--model-name", "module-model", ready=False)
    spec = await (await client.get("/swagger.json")).json()
    upstream_names = {
        "Failure", "Location", "Version", "Versions", "ModelMeta",
        "Training", "TrainingList", "Prediction",
    }  # fmt: skip
    assert upstream_names <= set(spec["definitions"])
    assert spec["externalDocs"]["url"]
    post = spec["paths"][PREDICT]["post"]
    formats = {p["name"]: p.get("format") for p in post["parameters"]}
    assert (formats["count"], formats["ratio"], formats["link"]) == (
        "int32",
        "float",
        "url",
    )
    assert post["responses"]["200"]["schema"] == {"$ref": "#/definitions/Prediction"}
    assert post["responses"]["422"]["schema"] == {"$ref": "#/definitions/Failure"}


class TestAlsoFixed:
    async def test_an_unencodable_prediction_is_500_naming_its_type(self, make_client):
        client = await make_client("--model-name", "failing")
        resp = await client.post("/v2/models/failing/predict/?mode=unencodable")
        assert resp.status == 500
        assert "object is not JSON serializable" in (await resp.json())["message"]

    async def test_a_request_line_over_the_limit_is_a_json_414(self, client):
        resp = await client.get("/v2/models/?q=" + "x" * 9000)
        assert resp.status == 414
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert "xxxxxxxx" not in body["message"]

    @pytest.mark.parametrize(
        "path", ["/", "/v2/", "/v2/models/", "/v2/models/module-model", "/swagger.json"]
    )
    async def test_head_works_wherever_get_does(self, client, path):
        get = await client.get(path)
        head = await client.head(path)
        assert head.status == get.status == 200
        assert head.headers["Content-Type"] == get.headers["Content-Type"]

    @pytest.mark.parametrize("body", [b"{not json", b'{"count": 1', b"\xff\xfe"])
    async def test_a_body_that_is_not_json_says_so_where_upstream_did(
        self, client, body
    ):
        resp = await client.post(
            PREDICT, data=body, headers={"Content-Type": "application/json"}
        )
        assert resp.status == 400
        answer = await resp.json()
        assert answer["json"] == ["Invalid JSON body."]
        assert "not valid JSON" in answer["message"]

    async def test_debug_endpoint_when_off_is_404(self, client):
        assert (await client.get("/v2/debug/")).status == 404


class TestManyBadArguments:
    BODY = {f"k{n}": n for n in range(50_000)}

    async def test_ignored_ones_are_named_in_a_bounded_header(self, client):
        resp = await client.post(PREDICT, json=self.BODY)
        assert resp.status == 200
        header = resp.headers["Deepaas-Ignored-Arguments"]
        assert header.endswith("(and 49980 more)")
        assert len(header) < 400

    async def test_refused_ones_make_a_bounded_422(self, make_client):
        client = await make_client("--model-name", "module-model", "--strict-arguments")
        resp = await client.post(PREDICT, json=self.BODY)
        assert resp.status == 422
        raw = await resp.read()
        assert len(raw) < 4096
        body = json.loads(raw)
        assert len(body["errors"]) == 20
        assert body["message"].endswith("and 49980 more")
