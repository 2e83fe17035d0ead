"""Reloading a model while it is served: a new release of its package
installed for real, its workers replaced one at a time, its routes and spec
built anew; a release that cannot load leaves the previous one serving."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys

import pytest
import stevedore

from deepaas import config
from deepaas.api import get_app, keys
from deepaas.api.reloading import RELOADER
from deepaas.runtime.wrapper import ModelWrapper
from tests import helpers
from tests.conftest import EXECUTORS

PREDICT = "/v2/models/reloadable/predict/"
TRAIN = "/v2/models/reloadable/train/"


@pytest.fixture
def site(tmp_path, monkeypatch):
    """The ``reloadable`` model, release 1, installed where this process
    (and so its workers) imports from."""
    # stevedore lists a group once per process; this test adds a model.
    monkeypatch.setattr(stevedore.ExtensionManager, "ENTRY_POINT_CACHE", {})
    site = tmp_path / "site"
    helpers.install_release(site, 1)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    yield site
    sys.path.remove(str(site))
    for name in [n for n in sys.modules if n.startswith("deepaas_reloadable")]:
        del sys.modules[name]


@pytest.fixture
def serve(aiohttp_client, site, state_dir, executor):
    async def serve(*argv: str):
        conf = config.build_config(
            [
                *executor,
                "--model-name",
                "reloadable",
                "--state-dir",
                str(state_dir),
                *argv,
            ]
        )
        client = await aiohttp_client(get_app(conf))
        await client.app[keys.STARTUP].wait()
        return client

    return serve


async def reload(client) -> None:
    """What SIGHUP does, then wait for it to be over."""
    reloader = client.app[RELOADER]
    reloader.request()
    await reloader.wait()


async def predict(client, **query) -> dict:
    """The model's answer (which has no response schema)."""
    resp = await client.post(PREDICT, params=query)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["predictions"]


async def readiness(client) -> tuple[int, dict]:
    resp = await client.get("/readyz")
    return resp.status, await resp.json()


def model(client) -> ModelWrapper:
    return client.app[keys.MODELS]["reloadable"]


@EXECUTORS
async def test_a_new_release_is_served_with_its_metadata_arguments_and_spec(
    serve, site
):
    client = await serve("--workers", "2")
    before = await predict(client, text="hi")
    assert before["release"] == "1"
    old_pids = set(model(client).executor.pids())
    swagger = await (await client.get("/swagger.json")).json()
    operation = swagger["paths"][PREDICT]["post"]
    assert "shout" not in {p["name"] for p in operation["parameters"]}

    helpers.install_release(site, 2)
    await reload(client)

    after = await predict(client, text="hi", shout="true")
    assert after == {
        "release": "2",
        "class": "ReloadableModel",
        "pid": after["pid"],
        "text": "HI",
    }
    assert after["pid"] not in old_pids
    meta = await (await client.get("/v2/models/reloadable/")).json()
    assert meta["version"] == "2"
    assert meta["description"] == "Release 2 of ReloadableModel"
    listed = await (await client.get("/v2/models/")).json()
    assert listed["models"][0]["version"] == "2"
    for document in ("/swagger.json", "/openapi.json"):
        described = await (await client.get(document)).json()
        parameters = described["paths"][PREDICT]["post"]["parameters"]
        assert "shout" in {p["name"] for p in parameters}, document
    # The protocol's view of the model changed too.
    v2meta = await (await client.get("/v2/models/reloadable/versions/2")).json()
    assert "shout" in {tensor["name"] for tensor in v2meta["inputs"]}
    gone = await client.get("/v2/models/reloadable/versions/1")
    assert gone.status == 404

    status, body = await readiness(client)
    assert (status, body["status"]) == (200, "ready")
    workers = body["models"]["reloadable"]
    assert workers["generation"] == 2
    assert workers["reload"]["status"] == "reloaded"
    assert [p["generation"] for p in workers["processes"]] == [2, 2]
    metrics = await (await client.get("/metrics")).text()
    assert 'deepaas_worker_generation{model="reloadable"} 2.0' in metrics
    assert (
        'deepaas_model_reloads_total{model="reloadable",outcome="reloaded"} 1.0'
        in metrics
    )
    assert 'outcome="failed"' not in metrics
    # The old workers left, and nothing else runs.
    assert await helpers.eventually(
        lambda: not any(helpers.pid_alive(pid) for pid in old_pids)
    )
    assert len(model(client).executor.pids()) == 2


async def test_the_entry_point_is_read_again(serve, site):
    """A release may point its entry point elsewhere: the reload follows it,
    in the server and in the workers."""
    client = await serve()
    helpers.install_release(site, 2, entry_class="AnotherModel")
    await reload(client)
    assert (await predict(client))["class"] == "AnotherModel"
    meta = await (await client.get("/v2/models/reloadable/")).json()
    assert meta["description"] == "Release 2 of AnotherModel"


async def test_a_release_that_cannot_be_imported_leaves_the_old_one_serving(
    serve, site, caplog
):
    client = await serve()
    pid = (await predict(client))["pid"]
    helpers.install_release(site, 2, broken=True)
    with caplog.at_level(logging.ERROR, "deepaas.api.reloading"):
        await reload(client)
    answer = await predict(client)
    assert (answer["release"], answer["pid"]) == ("1", pid)
    meta = await (await client.get("/v2/models/reloadable/")).json()
    assert meta["version"] == "1"
    status, body = await readiness(client)
    assert (status, body["status"]) == (200, "degraded")
    assert "'reloadable' could not be reloaded" in body["reason"]
    assert "release 2 is broken" in body["reason"]
    assert body["models"]["reloadable"]["reload"]["status"] == "failed"
    assert body["models"]["reloadable"]["generation"] == 1
    assert "release 2 is broken" in caplog.text
    # The next good release clears it.
    helpers.install_release(site, 3)
    await reload(client)
    assert (await predict(client))["release"] == "3"
    status, body = await readiness(client)
    assert body["status"] == "ready"
    assert body["models"]["reloadable"]["generation"] == 2
    metrics = await (await client.get("/metrics")).text()
    for outcome in ("failed", "reloaded"):
        series = (
            f'deepaas_model_reloads_total{{model="reloadable",outcome="{outcome}"}}'
        )
        assert f"{series} 1.0" in metrics


@EXECUTORS
async def test_a_release_whose_workers_fail_leaves_the_old_one_serving(serve, site):
    client = await serve("--workers", "2")
    helpers.install_release(site, 2, warm_fails=True)
    await reload(client)
    assert (await predict(client))["release"] == "1"
    meta = await (await client.get("/v2/models/reloadable/")).json()
    assert meta["version"] == "1"  # the declarations did not switch
    swagger = await (await client.get("/swagger.json")).json()
    parameters = swagger["paths"][PREDICT]["post"]["parameters"]
    assert "shout" not in {p["name"] for p in parameters}
    status, body = await readiness(client)
    assert (status, body["status"]) == (200, "degraded")
    assert "release 2 cannot warm up" in body["reason"]
    workers = body["models"]["reloadable"]
    assert [p["generation"] for p in workers["processes"]] == [1, 1]
    assert workers["alive"] == 2


async def test_declarations_that_cannot_be_served_leave_the_old_ones(
    serve, site, monkeypatch
):
    """If the routes cannot be built from the new declarations, the previous
    ones stay, and so do the previous workers."""
    client = await serve("--workers", "2")
    reloader = client.app[RELOADER]
    rebuild = reloader.rebuild_routes

    def rebuild_but_not_release_2(app) -> None:
        if app[keys.MODELS]["reloadable"].declaration.metadata["version"] == "2":
            raise ValueError("a field of release 2 cannot be described")
        rebuild(app)

    monkeypatch.setattr(reloader, "rebuild_routes", rebuild_but_not_release_2)
    helpers.install_release(site, 2)
    await reload(client)
    assert (await predict(client))["release"] == "1"
    meta = await (await client.get("/v2/models/reloadable/")).json()
    assert meta["version"] == "1"
    status, body = await readiness(client)
    assert (status, body["status"]) == (200, "degraded")
    assert "its new declarations cannot be served" in body["reason"]
    assert "a field of release 2 cannot be described" in body["reason"]
    workers = body["models"]["reloadable"]
    assert workers["generation"] == 1
    assert await helpers.eventually(lambda: len(model(client).executor.pids()) == 2)
    _, body = await readiness(client)
    processes = body["models"]["reloadable"]["processes"]
    assert [p["generation"] for p in processes] == [1, 1]


async def test_a_single_worker_serves_throughout(serve, site):
    """With one worker, the new one warms up before the old one goes: every
    prediction sent during the reload is answered."""
    client = await serve("--workers", "1")
    helpers.install_release(site, 2)
    answers: list[tuple[bool, str]] = []  # (sent after the reload, release)
    reloaded = asyncio.Event()

    async def load() -> None:
        while len(answers) < 2000:
            sent_after = reloaded.is_set()
            answers.append((sent_after, (await predict(client))["release"]))
            if sent_after and len([a for a in answers if a[0]]) >= 40:
                return

    loaders = [asyncio.create_task(load()) for _ in range(4)]
    assert await helpers.eventually(lambda: len(answers) >= 10)
    await reload(client)
    reloaded.set()
    await asyncio.gather(*loaders)  # (predict() asserts each answer is a 200)
    assert "1" in {release for after, release in answers if not after}
    assert {release for after, release in answers if after} == {"2"}


async def test_a_running_training_keeps_its_worker_until_it_ends(serve, site, tmp_path):
    client = await serve("--workers", "1")
    flag = tmp_path / "finish"
    started = await (await client.post(TRAIN, params={"until": str(flag)})).json()
    training = TRAIN + started["uuid"]
    trainer = model(client).executor.pids()[0]

    helpers.install_release(site, 2)
    await reload(client)
    # Predictions go to the new worker while the old one trains.
    answer = await predict(client)
    assert answer["release"] == "2" and answer["pid"] != trainer
    _, body = await readiness(client)
    processes = body["models"]["reloadable"]["processes"]
    assert {(p["pid"], p["state"], p["generation"]) for p in processes} == {
        (trainer, "leaving", 1),
        (answer["pid"], "idle", 2),
    }
    assert (await (await client.get(training)).json())["status"] == "running"

    flag.touch()

    async def ended() -> bool:
        return (await (await client.get(training)).json())["status"] == "done"

    assert await helpers.eventually(ended)
    result = (await (await client.get(training)).json())["result"]["output"]
    assert result == {"release": "1", "pid": trainer}
    assert await helpers.eventually(lambda: not helpers.pid_alive(trainer))
    assert model(client).executor.pids() == [answer["pid"]]


async def test_an_old_worker_that_dies_while_leaving_is_not_replaced(
    serve, site, tmp_path
):
    """Its slot has a worker of the new release already."""
    client = await serve("--workers", "1")
    flag = tmp_path / "finish"
    started = await (await client.post(TRAIN, params={"until": str(flag)})).json()
    training = TRAIN + started["uuid"]
    trainer = model(client).executor.pids()[0]
    helpers.install_release(site, 2)
    await reload(client)
    successor = (await predict(client))["pid"]

    flag.write_text("crash")

    async def failed() -> bool:
        return (await (await client.get(training)).json())["status"] == "error"

    assert await helpers.eventually(failed)
    assert await helpers.eventually(lambda: not helpers.pid_alive(trainer))
    _, body = await readiness(client)
    workers = body["models"]["reloadable"]
    assert workers["restarts"] == 1  # (it died)
    assert [(p["pid"], p["generation"]) for p in workers["processes"]] == [
        (successor, 2)
    ]
    assert (await predict(client))["pid"] == successor


async def test_a_reload_asked_for_during_one_follows_it(serve, site):
    client = await serve()
    helpers.install_release(site, 2)
    reloader = client.app[RELOADER]
    reloader.request()
    assert await helpers.eventually(lambda: "reloadable" in reloader.models)
    reloader.request()  # (a second SIGHUP while the first is handled)
    await reloader.wait()
    assert (await predict(client))["release"] == "2"
    _, body = await readiness(client)
    assert body["models"]["reloadable"]["generation"] == 3
