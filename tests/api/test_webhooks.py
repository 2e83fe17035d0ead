"""Signed webhooks to a real receiver on loopback, verified with the
standardwebhooks library; retries, and deliveries kept across a restart."""

from __future__ import annotations

import base64

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from tests import helpers
from tests.api.test_jobs import ASYNC

PREDICT = "/v2/models/failing/predict/"
TRAIN = "/v2/models/failing/train/"
SECRET = "whsec_" + base64.b64encode(b"a test key of thirty-two bytes!!").decode()


class Receiver:
    """A webhook receiver: verifies each delivery's signature, and fails
    every other one when asked to."""

    def __init__(self, fail_every_other: bool = False) -> None:
        self.fail_every_other = fail_every_other
        self.calls = 0
        self.received: list[dict] = []  # verified payloads, in order
        self.ids: list[str] = []  # webhook-id of every attempt
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls += 1
        self.ids.append(request.headers["webhook-id"])
        if self.fail_every_other and self.calls % 2 == 1:
            return web.Response(status=500)
        # raises if the signature, id or timestamp do not hold
        payload = Webhook(SECRET).verify(body, dict(request.headers))
        self.received.append(payload)
        return web.Response(status=204)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        return app

    def types(self) -> list[str]:
        return [p["type"] for p in self.received]


@pytest.fixture
async def receiver(aiohttp_server) -> Receiver:
    receiver = Receiver()
    server = await aiohttp_server(receiver.app())
    receiver.url = str(server.make_url("/hook"))
    return receiver


def serving(*extra: str) -> tuple[str, ...]:
    return (
        "--model-name", "failing",
        "--webhook-secret", SECRET,
        "--webhook-allow", "127.0.0.1:*",
        *extra,
    )  # fmt: skip


async def test_a_job_calls_back_signed_when_it_completes(make_client, receiver):
    client = await make_client(*serving())
    resp = await client.post(PREDICT, headers={**ASYNC, "Webhook-URL": receiver.url})
    assert resp.status == 202
    job = await resp.json()
    assert await helpers.eventually(lambda: receiver.received)
    (payload,) = receiver.received
    assert payload["type"] == "prediction.completed"
    assert payload["data"]["id"] == job["id"]
    assert payload["data"]["status"] == "done"
    assert payload["timestamp"]


async def test_a_training_tells_its_start_progress_and_end(make_client, receiver):
    client = await make_client(*serving())
    resp = await client.post(
        TRAIN + "?mode=progress&seconds=0.5",
        headers={
            "Webhook-URL": receiver.url,
            "Webhook-Events": "start, progress, completed",
        },
    )
    training = await resp.json()
    assert await helpers.eventually(
        lambda: "training.completed" in receiver.types(), timeout=30
    )
    types = receiver.types()
    assert types[0] == "training.start" and types[-1] == "training.completed"
    assert "training.progress" in types
    progress = [p["data"] for p in receiver.received if p["type"].endswith("progress")]
    assert progress[-1]["id"] == training["uuid"]
    assert receiver.received[-1]["data"]["status"] == "done"


async def test_a_failing_receiver_gets_every_delivery_in_the_end(
    make_client, aiohttp_server
):
    receiver = Receiver(fail_every_other=True)
    server = await aiohttp_server(receiver.app())
    receiver.url = str(server.make_url("/hook"))
    client = await make_client(*serving())
    sent = []
    for _ in range(4):
        resp = await client.post(
            PREDICT, headers={**ASYNC, "Webhook-URL": receiver.url}
        )
        sent.append((await resp.json())["id"])
    assert await helpers.eventually(lambda: len(receiver.received) == 4, timeout=60)
    assert sorted(p["data"]["id"] for p in receiver.received) == sorted(sent)
    # a retry carries the webhook-id of the attempt it repeats
    assert len(set(receiver.ids)) == 4 < len(receiver.ids)


async def test_pending_deliveries_survive_a_restart(make_client, aiohttp_server):
    receiver = Receiver()
    port = helpers.free_port()
    url = f"http://127.0.0.1:{port}/hook"  # nobody listens yet
    client = await make_client(*serving())
    resp = await client.post(PREDICT, headers={**ASYNC, "Webhook-URL": url})
    job = await resp.json()
    sender = client.app[keys_webhooks()]
    assert await helpers.eventually(lambda: sender.store.count(), timeout=30)
    assert await sender.store.count() == 1

    async def tried() -> bool:
        return (await sender.store.due(float("inf"), 1))[0].attempts >= 1

    assert await helpers.eventually(tried)
    await client.close()  # the server stops with the delivery pending
    await aiohttp_server(receiver.app(), port=port)
    client = await make_client(*serving())
    assert await helpers.eventually(lambda: receiver.received, timeout=30)
    assert receiver.received[0]["data"]["id"] == job["id"]


def keys_webhooks():
    from deepaas.api import keys

    return keys.WEBHOOKS


@pytest.mark.parametrize(
    ("extra", "headers", "expected"),
    [
        ((), {"Webhook-URL": "http://127.0.0.1:9/hook"}, "--webhook-allow names none"),
        (
            ("--webhook-allow", "hooks.example.org"),
            {"Webhook-URL": "http://127.0.0.1:9/hook"},
            "not allowed",
        ),
        (
            ("--webhook-allow", "*"),
            {"Webhook-URL": "ftp://127.0.0.1/hook"},
            "http or https",
        ),
        (
            ("--webhook-allow", "127.0.0.1:*"),
            {"Webhook-URL": "http://127.0.0.1:9/", "Webhook-Events": "start,finish"},
            "not finish",
        ),
        (("--webhook-allow", "*"), {"Webhook-Events": "start"}, "needs a Webhook-URL"),
    ],
)
async def test_unusable_webhooks_are_422_and_nothing_runs(
    make_client, extra, headers, expected
):
    client = await make_client("--model-name", "failing", *extra)
    for path, more in ((PREDICT, ASYNC), (TRAIN, {})):
        resp = await client.post(path, headers={**more, **headers})
        assert resp.status == 422, path
        assert expected in (await resp.json())["message"]
    assert await (await client.get(PREDICT)).json() == []
    assert await (await client.get(TRAIN)).json() == []


async def test_a_webhook_on_a_synchronous_prediction_is_refused(make_client):
    client = await make_client(*serving())
    resp = await client.post(PREDICT, headers={"Webhook-URL": "http://127.0.0.1:9/"})
    assert resp.status == 422
    assert "Prefer: respond-async" in (await resp.json())["message"]


def test_a_secret_that_is_no_key_stops_start_up(testmodels_installed, tmp_path):
    from deepaas import config, exceptions
    from deepaas.api import get_app

    conf = config.build_config(
        ["--model-name", "failing", "--state-dir", str(tmp_path),
         "--webhook-secret", "whsec_!!!not base64"]
    )  # fmt: skip
    with pytest.raises(exceptions.ConfigurationError, match="--webhook-secret"):
        get_app(conf)


def test_deliveries_are_signed_only_with_a_secret():
    from deepaas.state import Delivery
    from deepaas.work.webhooks import WebhookSender

    sender = WebhookSender(store=None, secret="")  # type: ignore[arg-type]
    headers = sender.headers(Delivery("msg_1", "u", "t", "{}", 0, 0.0, "job", "r"))
    assert headers["webhook-id"] == "msg_1" and "webhook-signature" not in headers
    signed = WebhookSender(store=None, secret=SECRET)  # type: ignore[arg-type]
    headers = signed.headers(Delivery("msg_1", "u", "t", "{}", 0, 0.0, "job", "r"))
    assert Webhook(SECRET).verify("{}", headers) == {}


@pytest.mark.parametrize("named,delivered", [(False, False), (True, True)])
async def test_a_name_resolving_to_loopback_is_refused_at_delivery_unless_named(
    make_client, receiver, named, delivered
):
    """``localhost`` passes the URL check (an entry names it) but resolves
    to a loopback address, which the delivery refuses unless an entry
    names its network."""
    allow = ("--webhook-allow", "localhost:*,127.0.0.0/8" if named else "localhost:*")
    client = await make_client(
        "--model-name", "failing", "--webhook-secret", SECRET,
        "--webhook-attempts", "1", *allow,
    )  # fmt: skip
    url = receiver.url.replace("127.0.0.1", "localhost")
    resp = await client.post(PREDICT, headers={**ASYNC, "Webhook-URL": url})
    assert resp.status == 202, await resp.text()
    sender = client.app[keys_webhooks()]
    assert await helpers.eventually(lambda: sender.delivered + sender.failed == 1)
    assert (sender.delivered == 1) is delivered
    assert bool(receiver.received) is delivered
