"""The Ray executor on its own: what the tests run on both executors do not
show. Workers on another node of a real (single-machine) Ray cluster, GPUs
assigned by Ray, shutdown, and Ray being optional."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import aiohttp
import pytest

from deepaas import exceptions
from deepaas.api import keys
from deepaas.model.loading import ModelSpec
from tests import helpers
from tests.api.test_train import wait_status

FAILING = ModelSpec("failing", "deepaas_testmodels.failing")


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


# -- Ray stays optional ------------------------------------------------------


def test_the_local_pool_never_imports_ray(testmodels_installed):
    """The default install serves without Ray: building and starting the
    local executor imports none of it."""
    code = textwrap.dedent(
        """
        import asyncio, sys
        from deepaas import config
        from deepaas.api import get_app, keys

        async def main():
            conf = config.build_config(["--model-name", "minimal"])
            app = get_app(conf)
            for model in app[keys.MODELS].values():
                await model.executor.start()
                await model.executor.stop()

        asyncio.run(main())
        print("ray" in sys.modules, "deepaas.runtime.ray_executor" in sys.modules)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(testmodels_installed)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_without_ray_the_ray_executor_names_the_extra(tmp_path):
    """deepaas-run --executor ray, where Ray cannot be imported, stops at
    once and says what to install."""
    blocked = tmp_path / "blocked" / "ray"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {**os.environ, "PYTHONPATH": str(blocked.parent)}
    done = subprocess.run(
        [
            str(helpers.BIN_DIR / "deepaas-run"),
            "--executor",
            "ray",
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode != 0
    assert "pip install 'deepaas[ray]'" in done.stderr


def test_bad_worker_resources_are_refused(tmp_path):
    done = subprocess.run(
        [str(helpers.BIN_DIR / "deepaas-run"), "--executor", "ray",
         "--worker-resources", "far:lots", "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--worker-resources takes NAME:AMOUNT pairs" in done.stderr


def test_an_unreachable_cluster_stops_the_start_at_once(tmp_path):
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    started = time.monotonic()
    done = subprocess.run(
        [str(helpers.BIN_DIR / "deepaas-run"), "--executor", "ray",
         "--ray-address", address, "--listen-port", str(helpers.free_port()),
         "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"Cannot reach the Ray cluster at {address}" in done.stderr
    assert time.monotonic() - started < 60


def test_the_upload_source_reads_only_under_its_roots(tmp_path):
    """The actor that serves uploads to other nodes reads nothing else."""
    from deepaas.runtime.ray_worker import UploadSource

    root = tmp_path / "uploads"
    root.mkdir()
    (root / "mine.bin").write_bytes(b"0123456789")
    (tmp_path / "uploads-not").mkdir()
    (tmp_path / "uploads-not" / "other.bin").write_bytes(b"secret")
    source = UploadSource([str(root)])
    assert source.read(str(root / "mine.bin"), 2, 4) == b"2345"
    for path in ("/etc/passwd", tmp_path / "uploads-not" / "other.bin",
                 root / ".." / "uploads-not" / "other.bin"):  # fmt: skip
        with pytest.raises(PermissionError):
            source.read(str(path), 0, 10)


# -- on a Ray runtime of this machine ------------------------------------------


@pytest.mark.ray
async def test_ray_gives_each_worker_its_gpu(make_client, ray_cluster):
    """The head node declares 2 GPUs (there are none): Ray gives each of two
    workers one, which its model process sees, and /readyz and /metrics
    show."""
    client = await make_client(
        "--executor", "ray", "--ray-address", ray_cluster.address,
        "--model-name", "introspect", "-p", "2", "--worker-num-gpus", "1",
    )  # fmt: skip
    ready = await (await client.get("/readyz")).json()
    processes = ready["models"]["introspect"]["processes"]
    assert sorted(p["devices"] for p in processes) == ["0", "1"]
    assert all(p["node"] == "127.0.0.1" for p in processes)
    body = await (await client.post("/v2/models/introspect/predict/")).json()
    seen = body["predictions"]
    assert seen["cuda_visible_devices"] in ("0", "1")
    assert seen["pid"] in [p["pid"] for p in processes]
    assert seen["server_modules"] == []
    metrics = await (await client.get("/metrics")).text()
    assert 'deepaas_worker_devices{devices="0",model="introspect",slot=' in metrics


@pytest.mark.ray
async def test_stop_ends_every_worker_and_fails_what_waits(
    testmodels_installed, ray_cluster
):
    from deepaas.runtime.ray_executor import RayExecutor

    pool = RayExecutor(FAILING, size=1, address=ray_cluster.address)
    await pool.start()
    (pid,) = pool.pids()
    args = {"mode": "sleep", "seconds": 60.0, "data": None}
    busy = asyncio.ensure_future(pool.call("predict", args))
    waiting = asyncio.ensure_future(pool.call("predict", {**args, "seconds": 0}))
    assert await helpers.eventually(lambda: pool.health().busy == 1)
    await pool.stop()
    with pytest.raises(exceptions.PoolClosed):
        await waiting
    with pytest.raises((exceptions.PoolClosed, exceptions.WorkerDied)):
        await busy
    with pytest.raises(exceptions.PoolClosed):
        await pool.call("predict", {**args, "seconds": 0})
    assert await helpers.eventually(lambda: not helpers.pid_alive(pid))


@pytest.mark.ray
async def test_ray_address_in_the_environment_is_joined(
    testmodels_installed, ray_cluster, monkeypatch
):
    """Without --ray-address, RAY_ADDRESS names the cluster to join (no Ray
    runtime of the server's own)."""
    import ray

    from deepaas.runtime.ray_executor import RayExecutor

    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    pool = RayExecutor(FAILING, size=1)
    await pool.start()
    try:
        assert ray.get_runtime_context().gcs_address == ray_cluster.address
        assert pool.node_id == ray_cluster.head_node.node_id
        args = {"mode": "ok", "seconds": 0.0, "data": None}
        assert (await pool.call("predict", args))["mode"] == "ok"
    finally:
        await pool.stop()
    assert not ray.is_initialized()  # the last executor to stop disconnects


@pytest.mark.ray
async def test_a_connection_without_a_workers_token_is_dropped(
    testmodels_installed, ray_cluster
):
    """Only the worker processes the front end started may connect to it."""
    from deepaas.runtime.ray_executor import TOKEN_SIZE, RayExecutor

    pool = RayExecutor(FAILING, size=1, address=ray_cluster.address)
    await pool.start()
    try:
        assert pool.listening is not None
        reader, writer = await asyncio.open_connection(*pool.listening)
        writer.write(os.urandom(TOKEN_SIZE) + b"and a pickle to run")
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed on us
        writer.close()
        args = {"mode": "ok", "seconds": 0.0, "data": None}
        assert (await pool.call("predict", args))["mode"] == "ok"
    finally:
        await pool.stop()


@pytest.mark.ray
async def test_a_worker_ray_cannot_place_fails_its_calls_at_once(
    testmodels_installed, ray_cluster
):
    from deepaas.runtime.ray_executor import RayExecutor

    pool = RayExecutor(
        FAILING, size=1, address=ray_cluster.address, resources={"tpu": 1.0}
    )
    starting = asyncio.ensure_future(pool.start())
    args = {"mode": "ok", "seconds": 0.0, "data": None}
    try:
        assert await helpers.eventually(lambda: pool._connected, timeout=60)
        # A call sent before Ray has given up placing it for now waits...
        waiting = asyncio.ensure_future(pool.call("predict", args, queue_timeout=120))
        assert await helpers.eventually(
            lambda: pool.unplaced or starting.done(), timeout=60
        )
        assert not starting.done(), starting.exception()
        # ...and fails as soon as the worker counts as unplaced, as do new ones.
        with pytest.raises(exceptions.WorkersUnplaced, match="tpu=1"):
            await asyncio.wait_for(waiting, 5)
        started = time.monotonic()
        with pytest.raises(exceptions.WorkersUnplaced) as refused:
            await pool.call("predict", args, queue_timeout=120)
        assert time.monotonic() - started < 1
        assert refused.value.status == 503
        assert "CPU=" in refused.value.message
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await pool.stop()


@pytest.mark.ray
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("deepaas_broken.bad:BadWarm", "weights file missing"),
        ("deepaas_broken.bad:DiesWarming", "died while loading it (exit code 7)"),
    ],
)
async def test_a_model_that_cannot_load_stops_the_start(
    model_sites, ray_cluster, target, message
):
    from deepaas.runtime.ray_executor import RayExecutor

    sys.path.insert(0, str(model_sites["broken"]))
    try:
        pool = RayExecutor(
            ModelSpec("bad", target), size=1, address=ray_cluster.address
        )
        with pytest.raises(exceptions.ModelLoadError) as info:
            await pool.start()
    finally:
        sys.path.remove(str(model_sites["broken"]))
    assert message in info.value.message
    assert pool.pids() == []
    assert pool.health().alive == 0


# -- workers on another node ---------------------------------------------------


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head node, and a second node, "far", which alone has the "far"
    resource the workers ask for: every worker runs there."""
    far = {"num_cpus": 4, "resources": {"far": 8}}
    root = tmp_path_factory.mktemp("ray-two-nodes")
    with helpers.ray_cluster(root, far=far) as cluster:
        yield cluster


@pytest.fixture
def far_client(make_client, two_nodes):
    async def make(*argv: str):
        return await make_client(
            "--executor", "ray", "--ray-address", two_nodes.address,
            "--worker-resources", "far:1", *argv,
        )  # fmt: skip

    return make


def raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


async def worker_pids(client, model: str) -> list[int]:
    ready = await (await client.get("/readyz")).json()
    return [p["pid"] for p in ready["models"][model]["processes"]]


@pytest.mark.ray
async def test_a_file_reaches_a_worker_on_another_node_and_comes_back(
    far_client, two_nodes
):
    client = await far_client("--model-name", "files")
    (pid,) = await worker_pids(client, "files")
    # the model's process is the child of an actor of the far node's raylet
    assert parent_of(parent_of(pid)) == raylet_pid(two_nodes.extra_nodes["far"])
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks, and a piece
    form = aiohttp.FormData()
    form.add_field("image", data, filename="big.png", content_type="image/png")
    resp = await client.post("/v2/models/files/predict/?accept=image/*", data=form)
    assert resp.status == 200
    assert hashlib.sha256(await resp.read()).digest() == hashlib.sha256(data).digest()


@pytest.mark.ray
async def test_an_upload_is_a_local_file_there_removed_after_the_call(
    far_client, tmp_path
):
    client = await far_client("--model-name", "module-model")
    form = aiohttp.FormData()
    form.add_field("data", b"far away" * 40_000, filename="photo.jpg")
    body = await (
        await client.post("/v2/models/module-model/predict/", data=form)
    ).json()
    info = body["predictions"]["file"]
    assert (info["size"], info["head"]) == (320_000, "far away" * 4)
    assert info["exists_during_call"] is True
    assert "deepaas-ray-" in info["path"]  # the far worker's own copy
    assert info["path"].endswith(".jpg")
    assert not os.path.exists(info["path"])


@pytest.mark.ray
async def test_large_results_come_back_from_another_node(far_client):
    client = await far_client("--model-name", "outputs")
    size = 2_500_000
    resp = await client.post(f"/v2/models/outputs/predict/?kind=bytes&size={size}")
    assert resp.status == 200
    data = await resp.read()
    block = bytes(range(251))
    assert data == (block * (size // 251 + 1))[:size]


@pytest.mark.ray
async def test_a_training_log_on_another_node_is_live_here(far_client, state_dir):
    client = await far_client("--model-name", "failing")
    train = "/v2/models/failing/train/"
    body = await (await client.post(train + "?mode=chatty&seconds=30")).json()
    log = train + body["uuid"] + "/log"

    deadline = time.monotonic() + 30
    while "line 3" not in await (await client.get(log)).text():
        assert time.monotonic() < deadline, "the log did not show line 3"
        await asyncio.sleep(0.1)
    status = await (await client.get(train + body["uuid"])).json()
    assert status["status"] == "running"
    await client.delete(train + body["uuid"])
    # a training that ends: its whole log is here, the request id in it
    body = await (await client.post(train + "?mode=chatty")).json()
    done = await wait_status(client, train + body["uuid"])
    assert done["status"] == "done"
    text = (state_dir / "logs" / f"{body['uuid']}.log").read_text()
    assert "line 1" in text and "raw stderr bytes" in text
    assert text.endswith("last line\n")


@pytest.mark.ray
async def test_a_worker_killed_on_another_node_fails_one_call_and_recovers(
    far_client,
):
    client = await far_client("--model-name", "failing")
    predict = "/v2/models/failing/predict/"
    (pid,) = await worker_pids(client, "failing")
    running = asyncio.ensure_future(client.post(predict + "?mode=sleep&seconds=60"))
    executor = client.app[keys.MODELS]["failing"].executor
    assert await helpers.eventually(lambda: executor.health().busy == 1)
    queued = asyncio.ensure_future(client.post(predict + "?mode=ok"))
    assert await helpers.eventually(lambda: executor.health().queued == 1)
    os.kill(pid, signal.SIGKILL)
    failed = await running
    assert failed.status == 500
    message = (await failed.json())["message"]
    assert "died (killed by SIGKILL" in message and "on 127.0.0.1" in message
    answered = await queued  # waited for the replacement, and ran there
    assert answered.status == 200
    new_pid = (await answered.json())["predictions"]["pid"]
    assert new_pid != pid
    assert executor.health().restarts == 1


@pytest.mark.ray
async def test_a_lost_node_fails_its_call_and_a_new_node_takes_over(
    far_client, two_nodes
):
    client = await far_client("--model-name", "failing", "--queue-timeout", "0")
    predict = "/v2/models/failing/predict/"
    running = asyncio.ensure_future(client.post(predict + "?mode=sleep&seconds=60"))
    executor = client.app[keys.MODELS]["failing"].executor
    assert await helpers.eventually(lambda: executor.health().busy == 1)
    two_nodes.remove_node(two_nodes.extra_nodes.pop("far"))
    failed = await running
    assert failed.status == 500
    assert "its node was lost" in (await failed.json())["message"]
    # no node has the resource now: the replacement waits until one comes
    two_nodes.extra_nodes["far"] = two_nodes.add_node(num_cpus=4, resources={"far": 8})
    deadline = time.monotonic() + 60
    while executor.health().alive < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    resp = await client.post(predict + "?mode=ok")
    assert resp.status == 200


# -- a Ray runtime of the server's own ---------------------------------------


@pytest.mark.ray
def test_a_runtime_started_here_has_room_for_every_worker(testmodels_installed):
    """Three models of two workers each on this 2-CPU machine: a Ray runtime
    the server starts gets the six CPUs they ask for, and every worker runs
    (in a process of its own, away from the clusters of the other tests)."""
    code = textwrap.dedent(
        """
        import asyncio
        import ray
        from deepaas.model.loading import ModelSpec
        from deepaas.runtime.ray_executor import RayExecutor

        async def main():
            spec = ModelSpec("failing", "deepaas_testmodels.failing")
            pools = [RayExecutor(spec, size=2, runtime_cpus=6) for _ in range(3)]
            try:
                for pool in pools:
                    await pool.start()
                print("cpus", ray.cluster_resources()["CPU"])
                args = {"mode": "ok", "seconds": 0.0, "data": None}
                for pool in pools:
                    answer = await pool.call("predict", args)
                    print("alive", pool.health().alive, answer["mode"])
            finally:
                for pool in pools:
                    await pool.stop()
            print("initialized", ray.is_initialized())

        asyncio.run(main())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(testmodels_installed)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.split("\n")
    cpus = next(line for line in lines if line.startswith("cpus"))
    assert float(cpus.split()[1]) >= 6
    assert [line for line in lines if line.startswith("alive")] == ["alive 2 ok"] * 3
    assert "initialized False" in lines
