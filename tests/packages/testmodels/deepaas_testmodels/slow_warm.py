"""A model whose warm-up takes a while (SLOW_WARM_SECONDS, default 2)."""

import os
import time


def get_metadata():
    return {"name": "slow-warm", "description": "Warms up slowly"}


def warm():
    print("warming up", flush=True)
    time.sleep(float(os.environ.get("SLOW_WARM_SECONDS", "2")))


def get_predict_args():
    return {}


def predict(**kwargs):
    return {"warmed": True}
