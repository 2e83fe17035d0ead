"""Fixtures: the test model packages, installed for real, and app clients."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from deepaas import config
from deepaas.api import get_app, keys
from tests import helpers
from tests.pgcluster import Cluster

ClientFactory = Callable[..., Awaitable[TestClient]]

# Tiers left out of a plain ``pytest`` run (see the markers in pyproject.toml).
SLOW_TIERS = ("slow", "browser", "fuzz", "compat", "ray", "postgres")

# Ray (imported by the Ray tests only) keeps every node it starts, and every
# listener, on loopback, in this process and the servers it starts.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# Tests that exercise the executor run against each: ``@EXECUTORS`` on a test,
# a class, or as a module's ``pytestmark``.
EXECUTORS = pytest.mark.parametrize(
    "executor",
    ["local", pytest.param("ray", marks=pytest.mark.ray)],
    indirect=True,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all-tiers",
        action="store_true",
        help=f"also run the slow tiers ({', '.join(SLOW_TIERS)}), as CI does",
    )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """A plain run is the fast tier; ``--all-tiers`` or any ``-m`` chooses.

    The slow tiers' tests are one ``xdist_group``: with ``--dist loadgroup``
    (as CI runs) they run one at a time, in order, on one worker, while the
    other worker takes the fast tier. The Ray tests run last: a Ray driver
    leaves threads and descriptors in its process after it disconnects,
    which the tests that count descriptors must not see."""
    items.sort(key=lambda item: item.get_closest_marker("ray") is not None)
    slow = [i for i in items if any(i.get_closest_marker(t) for t in SLOW_TIERS)]
    if config.getoption("--all-tiers") or config.getoption("markexpr"):
        for item in slow:
            item.add_marker(pytest.mark.xdist_group("slow-tiers"))
        return
    if slow:
        config.hook.pytest_deselected(items=slow)
        chosen = set(map(id, slow))
        items[:] = [i for i in items if id(i) not in chosen]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server of this test process's own (the postgres tier)."""
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


# The state backends the repository and runner tests run on
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Any]:
    """A fresh state database of each backend (PostgreSQL's in the postgres
    tier, on a throwaway cluster)."""
    if request.param == "sqlite":
        from deepaas.state.sqlite import SQLiteDatabase

        opened: Any = SQLiteDatabase(str(tmp_path / "state"))
    else:
        from deepaas.state.postgres import PostgresDatabase

        cluster = request.getfixturevalue("postgres_cluster")
        opened = PostgresDatabase(await cluster.new_database())
        await opened.open()
    yield opened
    await opened.close()


@pytest.fixture(scope="session")
def model_sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Directories each holding one installed test model distribution."""
    root = tmp_path_factory.mktemp("model-sites")
    return helpers.install_model_packages(["testmodels", "single", "broken"], root)


@pytest.fixture(scope="session")
def testmodels_installed(model_sites: dict[str, Path]) -> Iterator[Path]:
    """Make the main test models visible to this process (and its workers)."""
    site = str(model_sites["testmodels"])
    sys.path.insert(0, site)
    importlib.invalidate_caches()
    yield model_sites["testmodels"]
    sys.path.remove(site)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Ray runtime on this machine for the tests of one module: a head
    node on loopback, its temporary directory under the tests' own."""
    with helpers.ray_cluster(tmp_path_factory.mktemp("ray")) as cluster:
        yield cluster


@pytest.fixture
def executor(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The options choosing the executor: the local pool unless a test is
    parametrized with ``EXECUTORS``."""
    kind = getattr(request, "param", "local")
    if kind == "local":
        return ()
    cluster = request.getfixturevalue("ray_cluster")
    return ("--executor", "ray", "--ray-address", cluster.address)


@pytest.fixture
def make_client(
    aiohttp_client, testmodels_installed, state_dir, executor
) -> ClientFactory:
    """Build the real app from command-line style options and serve it, on
    the executor of the ``executor`` fixture."""

    async def make(*argv: str, ready: bool = True) -> TestClient:
        """With ``ready``, return once every worker has warmed up."""
        argv = (*executor, *argv)
        if "--state-dir" not in argv:
            argv = ("--state-dir", str(state_dir), *argv)
        conf = config.build_config(list(argv))
        client = await aiohttp_client(get_app(conf))
        if ready:
            await client.app[keys.STARTUP].wait()
        return client

    return make


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs (needs root and a kernel that lets us mount one)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
