"""The events and webhooks repositories, on every backend."""

from __future__ import annotations

from deepaas.state import Delivery, Event, StoredHook


async def test_events_are_kept_in_order_and_pruned(database):
    events = database.events
    for seq in range(1, 8):
        await events.add("job", "j1", Event(seq, "progress", f'{{"n": {seq}}}'))
    await events.add("job", "j2", Event(1, "status", "{}"))
    assert await events.last_seq("job", "j1") == 7
    assert await events.last_seq("job", "nothing") == 0
    assert [e.seq for e in await events.after("job", "j1", 2, 3)] == [3, 4, 5]
    await events.prune("job", "j1", 4)
    assert [e.seq for e in await events.after("job", "j1", 0)] == [5, 6, 7]
    await events.add("job", "j1", Event(8, "result", "x" * 100, final=True))
    await events.prune_to_bytes("job", "j1", 110)  # 100 + 8, not + 8 more
    kept = await events.after("job", "j1", 0)
    assert [e.seq for e in kept] == [7, 8] and kept[-1].final
    await events.remove("job", "j1")
    assert await events.after("job", "j1", 0) == []
    assert len(await events.after("job", "j2", 0)) == 1


async def test_events_of_several_records_are_kept_at_once(database):
    events = database.events
    await events.add_all(
        [
            ("job", "j1", Event(1, "status", "{}")),
            ("training", "t1", Event(1, "log", "line")),
            ("job", "j1", Event(2, "result", "{}", final=True)),
        ]
    )
    assert [(e.seq, e.final) for e in await events.after("job", "j1", 0)] == [
        (1, False),
        (2, True),
    ]
    assert (await events.after("training", "t1", 0))[0].data == "line"


async def test_many_events_are_kept_at_once_in_order(database):
    """More events than one statement takes: every one kept, in order."""
    many = [("job", "j1", Event(n, "log", f"line {n}")) for n in range(1, 401)]
    await database.events.add_all(many)
    kept = await database.events.after("job", "j1", 0)
    assert [(e.seq, e.data) for e in kept] == [(n, f"line {n}") for n in range(1, 401)]
    await database.events.add_all([])
    assert len(await database.events.after("job", "j1", 0)) == 400


def delivery(id_: str, due: float, type_: str = "prediction.completed", **kw):
    fields = {"url": "http://hooks.example.org/", "body": "{}", "attempts": 0}
    fields.update(kw)
    return Delivery(id_, fields["url"], type_, fields["body"], fields["attempts"],
                    due, "job", kw.get("record", "j1"))  # fmt: skip


async def test_hooks_and_deliveries_are_kept_until_removed(database):
    webhooks = database.webhooks
    hook = StoredHook("job", "j1", "m", "http://hooks.example.org/", ("completed",))
    await webhooks.add_hook(hook)
    assert await webhooks.hooks() == [hook]
    await webhooks.remove_hook("job", "j1")
    assert await webhooks.hooks() == []
    await webhooks.add_delivery(delivery("d2", 20.0))
    await webhooks.add_delivery(delivery("d1", 10.0))
    await webhooks.add_delivery(delivery("d3", 30.0))
    assert [d.id for d in await webhooks.due(25.0, 10)] == ["d1", "d2"]
    assert [d.id for d in await webhooks.due(25.0, 1)] == ["d1"]
    assert await webhooks.next_due() == 10.0
    retried = delivery("d1", 40.0, attempts=1)
    await webhooks.add_delivery(retried)  # in place of the first attempt
    assert await webhooks.count() == 3
    await webhooks.remove_delivery("d2")
    assert [d.id for d in await webhooks.due(100.0, 10)] == ["d3", "d1"]


async def test_progress_not_sent_yet_is_replaced_by_newer_progress(database):
    webhooks = database.webhooks
    await webhooks.add_progress(delivery("p1", 1.0, "prediction.progress", body="1"))
    await webhooks.add_progress(delivery("p2", 2.0, "prediction.progress", body="2"))
    due = await webhooks.due(10.0, 10)
    assert [(d.id, d.body) for d in due] == [("p1", "2")]  # one, the latest
    tried = delivery("p1", 3.0, "prediction.progress", body="2", attempts=1)
    await webhooks.add_delivery(tried)
    await webhooks.add_progress(delivery("p3", 4.0, "prediction.progress", body="3"))
    assert [d.id for d in await webhooks.due(10.0, 10)] == ["p1", "p3"]


async def test_a_webhook_is_fired_once_whoever_fires_it(database):
    """Firing forgets the hook and keeps its delivery in one step: a second
    firing (another server ending the same record) changes nothing."""
    webhooks = database.webhooks
    hook = StoredHook("job", "j1", "m", "http://hooks.example.org/", ("completed",))
    await webhooks.add_hook(hook)
    assert await webhooks.fire("job", "j1", delivery("d1", 1.0))
    assert not await webhooks.fire("job", "j1", delivery("d2", 1.0))
    assert await webhooks.hooks() == []
    assert [d.id for d in await webhooks.due(10.0, 10)] == ["d1"]
    await webhooks.add_hook(StoredHook("job", "j2", "m", hook.url, ("start",)))
    assert await webhooks.fire("job", "j2", None)  # nothing to tell at the end
    assert await webhooks.hooks() == [] and await webhooks.count() == 1


async def test_a_claimed_delivery_is_not_due_again_until_its_hold_ends(database):
    webhooks = database.webhooks
    for n, due in enumerate((3.0, 1.0, 2.0, 50.0)):
        await webhooks.add_delivery(delivery(f"d{n}", due))
    claimed = await webhooks.claim(10.0, 2, 30.0)
    assert [(d.id, d.due) for d in claimed] == [("d1", 1.0), ("d2", 2.0)]
    assert [d.id for d in await webhooks.claim(10.0, 10, 30.0)] == ["d0"]
    assert await webhooks.claim(10.0, 10, 30.0) == []
    # held until 40: then due again (the server that claimed them stopped)
    again = await webhooks.claim(45.0, 10, 30.0)
    assert sorted(d.id for d in again) == ["d0", "d1", "d2"]
    # without a hold (a server alone on its database), due as before
    assert len(await webhooks.claim(100.0, 10, 0.0)) == 4
    assert len(await webhooks.claim(100.0, 10, 0.0)) == 4


async def test_outputs_are_kept_in_chunks_read_in_order_and_trimmed(database):
    outputs = database.outputs
    for at in (0, 10, 20, 30):
        await outputs.add("training", "t1", at, bytes([65 + at // 10]) * 10)
    await outputs.add("job", "j1", 0, b"result")
    chunks = await outputs.read("training", "t1", 0, 10)
    assert [at for at, _ in chunks] == [0, 10, 20, 30]
    assert (
        b"".join(data for _, data in chunks)
        == b"A" * 10 + b"B" * 10 + b"C" * 10 + b"D" * 10
    )
    assert [at for at, _ in await outputs.read("training", "t1", 15, 1)] == [20]
    # the last chunks holding 15 bytes: the one they begin in, and after
    assert [at for at, _ in await outputs.last("training", "t1", 15)] == [20, 30]
    assert [at for at, _ in await outputs.last("training", "t1", 20)] == [20, 30]
    assert len(await outputs.last("training", "t1", 1000)) == 4  # all there is
    await outputs.trim("training", "t1", 25)  # 20 bytes left: whole chunks
    assert [at for at, _ in await outputs.read("training", "t1", 0, 10)] == [20, 30]
    await outputs.trim("training", "t1", 5)  # the newest stays, however large
    assert [at for at, _ in await outputs.read("training", "t1", 0, 10)] == [30]
    await outputs.remove("training", "t1")
    assert await outputs.read("training", "t1", 0, 10) == []
    assert await outputs.last("training", "t1", 10) == []
    assert await outputs.read("job", "j1", 0, 10) == [(0, b"result")]
