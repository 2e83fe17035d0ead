"""A model whose import takes a while (SLOW_LOAD_SECONDS, default 0), as one
that loads its weights at import time."""

import os
import time

if float(os.environ.get("SLOW_LOAD_SECONDS", "0")):
    print("loading the weights", flush=True)
    time.sleep(float(os.environ["SLOW_LOAD_SECONDS"]))


def predict(**kwargs):
    return {"loaded": True}
