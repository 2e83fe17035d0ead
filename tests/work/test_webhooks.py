"""Where webhooks may go: ``--webhook-allow`` entries matched label by
label, ports 80 and 443 unless an entry names one, and no loopback,
private, link-local or multicast address unless an entry names it or its
network, checked on the URL, on stored hooks at start, and on the
addresses a name resolves to at every delivery."""

from __future__ import annotations

import time

import pytest

from deepaas import exceptions
from deepaas.state import Delivery, StoredHook
from deepaas.state.sqlite import SQLiteDatabase
from deepaas.work.webhooks import Hook, WebhookPolicy, WebhookSender, hook_from


@pytest.mark.parametrize(
    "allowed,url,refused",
    [
        ("127.0.0.*", "http://127.0.0.evil.example/", "not allowed"),
        ("*.example.org", "https://a.b.example.org/", "not allowed"),
        ("*.example.org", "https://example.org/", "not allowed"),
        ("*.example.org", "https://hooks.example.org/", None),
        ("*.example.org", "https://hooks.example.org:8443/", "not allowed"),
        ("hooks.example.org", "http://hooks.example.org:80/x", None),
        ("hooks.example.org:8443", "https://hooks.example.org:8443/", None),
        ("hooks.example.org:8443", "https://hooks.example.org/", "not allowed"),
        ("hooks.example.org:*", "https://hooks.example.org:1234/", None),
        ("93.184.215.14", "https://93.184.215.14/", None),
        ("127.0.0.1", "http://127.0.0.1/", None),
        ("*", "http://127.0.0.1/", "loopback"),
        ("*", "http://10.1.2.3/", "private"),
        ("*", "http://169.254.169.254/latest/meta-data", "link-local"),
        ("*", "http://[::1]/", "loopback"),
        ("*", "http://224.0.0.1/", "multicast"),
        ("*", "http://0.0.0.0/", "unspecified"),
        ("10.0.0.0/8", "http://10.1.2.3/", None),
        ("10.0.0.0/8", "http://10.1.2.3:8080/", "not allowed"),
        ("10.0.0.0/8:8080", "http://10.1.2.3:8080/", None),
        ("10.0.0.0/8", "http://11.1.2.3/", "not allowed"),
        ("*", "http://hooks.example.org:99999/", "port"),
    ],
)
def test_webhook_targets_are_matched_by_name_and_address(allowed, url, refused):
    refusal = WebhookPolicy([allowed]).why_refused(url)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal


def test_a_bad_entry_stops_start_up():
    with pytest.raises(exceptions.ConfigurationError, match="--webhook-allow"):
        WebhookPolicy(["hooks.example.org:http"])


def test_an_address_named_by_an_entry_may_be_connected_to():
    import ipaddress

    policy = WebhookPolicy(["hooks.example.org", "10.0.0.0/24"])
    assert policy.may_connect(ipaddress.ip_address("93.184.215.14"))
    assert policy.may_connect(ipaddress.ip_address("10.0.0.9"))
    assert not policy.may_connect(ipaddress.ip_address("10.0.1.9"))
    assert not policy.may_connect(ipaddress.ip_address("127.0.0.1"))
    assert not policy.may_connect(ipaddress.ip_address("::ffff:127.0.0.1"))


async def test_stored_hooks_are_checked_again_at_start(tmp_path):
    database = SQLiteDatabase(str(tmp_path))
    store = database.webhooks
    for record, url in (
        ("j1", "http://127.0.0.1:8080/hook"),
        ("j2", "https://hooks.example.org/"),
    ):
        await store.add_hook(StoredHook("job", record, "m", url, ("completed",)))
    sender = WebhookSender(store, policy=WebhookPolicy(["hooks.example.org"]))
    running = {"j1": (False, {}), "j2": (False, {})}

    async def state_of(kind, model, record):
        return running[record]

    assert await sender.resume(state_of) == 0
    assert [hook.record for hook in await store.hooks()] == ["j2"]
    await database.close()


async def test_an_ended_record_gets_its_completed_delivery_at_start(tmp_path):
    database = SQLiteDatabase(str(tmp_path))
    store = database.webhooks
    url = "https://hooks.example.org/"
    await store.add_hook(StoredHook("job", "j1", "m", url, ("completed",)))
    await store.add_hook(StoredHook("job", "gone", "m", url, ("completed",)))
    sender = WebhookSender(store, policy=WebhookPolicy(["hooks.example.org"]))
    ended = {"j1": (True, {"id": "j1", "status": "interrupted"}), "gone": None}

    async def state_of(kind, model, record):
        return ended[record]

    assert await sender.resume(state_of) == 1
    assert await store.hooks() == []
    (due,) = await store.due(time.time() + 1, 10)
    assert (due.type, due.record) == ("prediction.completed", "j1")
    assert '"status": "interrupted"' in due.body
    await database.close()


async def test_a_stored_delivery_no_longer_allowed_is_dropped(tmp_path):
    database = SQLiteDatabase(str(tmp_path))
    store = database.webhooks
    sender = WebhookSender(store, policy=WebhookPolicy(["hooks.example.org"]))
    delivery = Delivery(
        "msg_1", "http://127.0.0.1:9/", "prediction.completed", "{}", 0,
        time.time(), "job", "j1",
    )  # fmt: skip
    await store.add_delivery(delivery)
    await sender._deliver(delivery)
    assert sender.failed == 1
    assert await store.due(time.time() + 3600, 10) == []
    await database.close()


def test_hook_from_checks_the_url():
    policy = WebhookPolicy(["hooks.example.org"])
    assert hook_from({"Webhook-URL": "https://hooks.example.org/x"}, policy) == Hook(
        "https://hooks.example.org/x", ("completed",)
    )
    with pytest.raises(exceptions.InvalidWebhook, match="not allowed"):
        hook_from({"Webhook-URL": "https://hooks.example.org.evil/x"}, policy)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.org/\udcff",
        "https://hooks.example.org/é",
        "https://hooks.example.org/\x01",
    ],
)
def test_a_url_that_is_not_printable_ascii_is_refused(url):
    with pytest.raises(exceptions.InvalidWebhook, match="printable ASCII"):
        hook_from({"Webhook-URL": url}, WebhookPolicy(["*"]))
