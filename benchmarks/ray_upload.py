"""A large upload to a worker on another Ray node, and the front end's memory.

Starts a Ray cluster of this machine's processes, on loopback: a head node
and a second node, the only one with the ``far`` resource, which the workers
ask for (``--worker-resources far:1``): every worker runs there, so each
upload is copied to that node in chunks by its actor, from the upload
source actor beside the front end. Then it uploads a file (1 GiB by default)
to the benchmark model, which stats it, and samples the RSS of the front end
(the deepaas-run process; the Ray cluster is not its child) all the while.

    python benchmarks/ray_upload.py               # 1 GiB
    python benchmarks/ray_upload.py --mib 64      # a quick run

It prints the peak RSS growth of the front end, the upload's time and rate,
and the size the model saw (which must be the file's). Nothing leaves
loopback; the cluster and the server stop when it ends.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import start_server, tree_rss_mib
from compare import install_model, sparse_file, upload


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="upload size")
    args = parser.parse_args()
    # Ray keeps every node, and every listener, on loopback.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    with tempfile.TemporaryDirectory(prefix="deepaas-bench-") as scratch:
        root = Path(scratch)
        os.environ["RAY_TMPDIR"] = str(root)
        install_model(root / "site")
        big = sparse_file(root / "upload.bin", args.mib)
        from ray.cluster_utils import Cluster

        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "include_dashboard": False},
        )
        try:
            cluster.add_node(num_cpus=2, resources={"far": 2})
            cluster.wait_for_nodes()
            env = {
                **os.environ,
                "PYTHONPATH": str(root / "site"),
                "TMPDIR": scratch,
                "XDG_DATA_HOME": str(root / "state"),
            }
            server, base = start_server(
                ["--model-name", "bench", "--executor", "ray", "--ray-address",
                 cluster.address, "--worker-resources", "far:1"],
                env=env,
            )  # fmt: skip
            try:
                measure(server.pid, f"{base}/v2/models/bench/predict/", big)
            finally:
                server.terminate()
                server.wait(timeout=60)
        finally:
            cluster.shutdown()
    return 0


def measure(pid: int, url: str, big: Path) -> None:
    time.sleep(1)
    base = tree_rss_mib(pid)
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_mib(pid))
            time.sleep(0.02)

    import asyncio

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    try:
        seen = asyncio.run(upload(url, big))
    finally:
        done.set()
        sampler.join()
    seconds = time.monotonic() - started
    size = big.stat().st_size
    if seen != size:
        raise SystemExit(f"the model saw {seen} bytes of {size}")
    print(f"upload of {size / 2**20:.0f} MiB to a worker on another Ray node")
    print(f"  front end RSS before: {base:.1f} MiB, peak growth: {peak - base:.2f} MiB")
    print(f"  time {seconds:.2f} s ({size / 2**20 / seconds:.0f} MiB/s end to end)")
    print(f"  size the model saw: {seen} bytes")


if __name__ == "__main__":
    sys.exit(main())
