"""The batching benchmark model: a call costs 10 ms plus 0.1 ms per item, as a
kernel on an accelerator would, whether it runs one input or a batch of them.

``predict_batch`` is deepaas' optional addition to the model API; upstream
DEEPaaS (and deepaas with --max-batch-size 1) calls ``predict`` once per
request instead.
"""

import time

from webargs import fields

FIXED_SECONDS = 0.010
PER_ITEM_SECONDS = 0.0001


def get_metadata():
    return {"name": "bench-batch", "description": "Batching benchmark model"}


def warm():
    pass


def get_predict_args():
    return {"x": fields.Float(missing=1.0, description="An input")}


def _kernel(inputs):
    time.sleep(FIXED_SECONDS + PER_ITEM_SECONDS * len(inputs))
    return [2 * x for x in inputs]


def predict(x):
    return {"y": _kernel([x])[0]}


def predict_batch(calls):
    outputs = _kernel([call["x"] for call in calls])
    return [{"y": y} for y in outputs]


def get_train_args():
    return {}


def train(**kwargs):
    return {}
