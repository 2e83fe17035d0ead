"""Helpers shared by the tests: model installs, ports, processes, servers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).parent / "packages"
TEST_DATA_HOME = os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"deepaas-tests-{os.getuid()}"
)
BIN_DIR = Path(sys.executable).parent


def install_model_packages(names: list[str], root: Path) -> dict[str, Path]:
    """pip-install each test model package into its own target directory.

    Each directory then holds a real distribution with real entry points; a
    test puts it on sys.path (or PYTHONPATH) to "have it installed".
    """
    procs = {}
    for name in names:
        source = root / "src" / name
        shutil.copytree(MODELS_DIR / name, source)
        target = root / name
        procs[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--target",
                str(target),
                str(source),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=300)
        if proc.returncode:
            raise RuntimeError(f"installing {name} failed:\n{output.decode()}")
    return {name: root / name for name in names}


def install_release(
    site: Path,
    release: int,
    *,
    broken: bool = False,
    warm_fails: bool = False,
    entry_class: str = "ReloadableModel",
) -> None:
    """Install (again) the ``reloadable`` test model into ``site`` as
    ``release`` (which answers with its number), as an upgrade does: the
    previous release's files replaced. A ``broken`` release fails to import;
    one that ``warm_fails`` imports, but its workers fail to warm up. Its
    entry point names ``entry_class``."""
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "reloadable"
        shutil.copytree(MODELS_DIR / "reloadable", source)
        setup = source / "setup.cfg"
        declared = setup.read_text().replace("version = 1", f"version = {release}")
        setup.write_text(declared.replace("ReloadableModel", entry_class))
        lines = [f'RELEASE = "{release}"', f"WARM_FAILS = {warm_fails}"]
        if broken:
            lines.append(f'raise ImportError("release {release} is broken")')
        (source / "deepaas_reloadable" / "release.py").write_text(
            "\n".join(lines) + "\n"
        )
        for old in site.glob("deepaas_reloadable-*.dist-info") if site.exists() else ():
            shutil.rmtree(old)  # (pip --target keeps another version's)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--upgrade",
                "--target",
                str(site),
                str(source),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Process ids of every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


async def eventually(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    """``wait_until`` for async tests: polls without blocking the event loop
    (``predicate`` may be a coroutine function)."""
    import asyncio
    import inspect

    async def holds() -> bool:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        return bool(value)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await holds():
            return True
        await asyncio.sleep(interval)
    return await holds()


def env_with(site: Path | None, **extra: str) -> dict[str, str]:
    """The environment for a subprocess that has ``site``'s models installed."""
    env = {k: v for k, v in os.environ.items() if k != "DEEPAAS_V2_MODEL"}
    env["PYTHONPATH"] = str(site) if site else ""
    # Servers started by tests keep their state away from the user's own.
    env.setdefault("XDG_DATA_HOME", TEST_DATA_HOME)
    env.update(extra)
    return env


class Server:
    """A real ``deepaas-run`` process on a free loopback port (this one's, or
    the one in ``bin_dir``)."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        bin_dir: Path = BIN_DIR,
        preexec_fn: Callable[[], None] | None = None,
        cwd: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Files, not pipes: a server logging a line per request must never
        # block on a pipe nobody reads until the test ends.
        self._out = tempfile.TemporaryFile("w+")
        self._err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [str(bin_dir / "deepaas-run"), "--listen-port", str(self.port), *args],
            env=env,
            stdout=self._out,
            stderr=self._err,
            text=True,
            preexec_fn=preexec_fn,  # e.g. resource limits of the server's own
            cwd=cwd,
        )
        self.stdout = ""
        self.stderr = ""

    def wait_ready(self, path: str = "/readyz", timeout: float = 60) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.communicate()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2):
                    return True
            except (urllib.error.URLError, ConnectionError):
                return False

        assert wait_until(ready, timeout), "server did not become ready"

    def communicate(self, timeout: float = 30) -> tuple[str, str]:
        """Wait for the process to end; its whole output."""
        self.proc.wait(timeout=timeout)
        return self.output()

    def output(self) -> tuple[str, str]:
        """What the process has written so far."""
        for stream in (self._out, self._err):
            stream.flush()
            stream.seek(0)
        self.stdout, self.stderr = self._out.read(), self._err.read()
        return self.stdout, self.stderr

    def close(self) -> None:
        self._out.close()
        self._err.close()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.communicate()
        return self.proc.returncode


@contextlib.contextmanager
def running_server(
    args: list[str],
    env: dict[str, str],
    ready_path: str = "/readyz",
    bin_dir: Path = BIN_DIR,
    preexec_fn: Callable[[], None] | None = None,
    cwd: Path | None = None,
) -> Iterator[Server]:
    """A server answering 200 on ``ready_path`` (by default: workers warmed)."""
    server = Server(args, env, bin_dir, preexec_fn, cwd)
    try:
        server.wait_ready(ready_path)
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.communicate()
        server.close()


@contextlib.contextmanager
def ray_cluster(root: Path, **nodes: dict[str, Any]) -> Iterator[Any]:
    """A Ray cluster of this machine's processes: a head node (4 CPUs and 2
    GPUs declared, whatever the machine has), then one more node per entry
    of ``nodes`` (its ``ray.cluster_utils.Cluster.add_node`` arguments),
    all on loopback, with Ray's temporary files under ``root``. The
    ``nodes`` are the cluster's ``extra_nodes`` attribute, by name."""
    saved = os.environ.get("RAY_TMPDIR")
    # Ray's socket paths under it must fit in 107 bytes: a short link to it.
    link = Path(tempfile.mkdtemp(prefix="ray-")) / "t"
    link.symlink_to(root)
    os.environ["RAY_TMPDIR"] = str(link)
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 4, "num_gpus": 2, "include_dashboard": False},
    )
    try:
        cluster.extra_nodes = {
            name: cluster.add_node(**options) for name, options in nodes.items()
        }
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(link.parent)
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved


def is_worker_spare(path: str) -> bool:
    """A file a worker keeps in its memory-backed directory to write its next
    small uploads over."""
    from deepaas.runtime.worker_uploads import SPARE_PREFIX

    directory, name = os.path.split(path)
    owner = os.path.basename(directory)  # a local worker's or a Ray actor's
    return name.startswith(SPARE_PREFIX) and owner.startswith(
        ("deepaas-worker-", "deepaas-ray-")
    )


async def send_raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is (it should say ``Connection: close``) to a
    server on loopback: the status, headers and body of its answer. For
    requests no HTTP client library would send (bytes that are not UTF-8
    in a header, a Host it would correct)."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunked(body)
    return int(lines[0].split()[1]), headers, body


def _unchunked(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


async def wait_job(client, url: str, timeout: float = 60) -> dict:
    """The job at ``url`` (an app client's path) once it has ended."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await (await client.get(url)).json()
        if job["status"] != "running":
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.05)
