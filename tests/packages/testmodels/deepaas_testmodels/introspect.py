"""A model that tells what its worker process has imported, and which GPUs
it was given."""

import os
import sys

SERVER_SIDE = ("aiohttp", "oslo_config", "deepaas.api", "deepaas.runtime.wrapper")


def predict(**kwargs):
    return {
        "server_modules": [name for name in SERVER_SIDE if name in sys.modules],
        "main_file": getattr(sys.modules["__main__"], "__file__", None),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "pid": os.getpid(),
    }
