"""nginx (Debian's) in front of real servers, round robin, as a load
balancer of a replicated deployment would be: for the tests and benchmarks
of replicas. Everything it writes stays in a temporary directory; ``.ci/run``
installs the package."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

NGINX = "/usr/sbin/nginx"

CONFIG = """\
{user}worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream deepaas {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://deepaas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            # event streams pass as they are written
            proxy_buffering off;
            proxy_read_timeout 300s;
            # which replica answered
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Balancer:
    """nginx on a free loopback port, spreading requests over ``ports``."""

    def __init__(self, ports: Sequence[int]) -> None:
        if not os.path.exists(NGINX):
            raise RuntimeError("nginx is needed: apt-get install nginx (.ci/run does)")
        self.root = Path(tempfile.mkdtemp(prefix="deepaas-nginx-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(f"        server 127.0.0.1:{port};" for port in ports)
        user = "user root;\n" if os.geteuid() == 0 else ""
        config = self.root / "nginx.conf"
        config.write_text(
            CONFIG.format(user=user, root=self.root, servers=servers, port=self.port)
        )
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.root), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "stderr", "w"),  # noqa: SIM115 - nginx keeps it
        )
        deadline = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {self.errors()}")
            time.sleep(0.05)

    def errors(self) -> str:
        text = ""
        for name in ("stderr", "error.log"):
            with contextlib.suppress(OSError):
                text += (self.root / name).read_text()
        return text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def balancing(ports: Sequence[int]) -> Iterator[Balancer]:
    balancer = Balancer(ports)
    try:
        yield balancer
    finally:
        balancer.stop()
