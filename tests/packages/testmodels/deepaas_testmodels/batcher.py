"""A model that takes batches: each answer says which batch it was part of.

``x`` picks what happens to one prediction: a number is doubled; ``fail``
fails that prediction alone; ``boom`` makes the whole ``predict_batch`` call
raise; ``short`` makes it return one result too few. ``seconds`` holds the
batch (the longest of its predictions' values), so that others queue behind it.
"""

import os
import time

from webargs import fields

_batches = 0


def get_predict_args():
    return {
        "x": fields.Str(missing="1"),
        "seconds": fields.Float(missing=0.0),
        "data": fields.Field(type="file", location="form", missing=None),
    }


def _one(kwargs, batch, size):
    if kwargs["x"] == "fail":
        return ValueError(f"cannot use {kwargs['x']!r}")
    x = kwargs["x"]
    y = 2 * float(x) if x not in ("boom", "short") else None
    result = {"y": y, "batch": batch, "size": size}
    if kwargs["data"] is not None:
        with open(kwargs["data"].filename, "rb") as f:
            result["data"] = f.read().decode(errors="replace")
    result["pid"] = os.getpid()
    return result


def predict(**kwargs):
    time.sleep(kwargs["seconds"])
    result = _one(kwargs, None, 1)
    if isinstance(result, Exception):
        raise result
    return result


def predict_batch(calls):
    global _batches
    _batches += 1
    time.sleep(max(call["seconds"] for call in calls))
    if any(call["x"] == "boom" for call in calls):
        raise RuntimeError("the whole batch failed")
    results = [_one(call, _batches, len(calls)) for call in calls]
    if any(call["x"] == "short" for call in calls):
        return results[:-1]
    return results
