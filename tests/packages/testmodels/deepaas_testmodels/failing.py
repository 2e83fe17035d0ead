"""A model that fails in every way a model can, on request."""

import ctypes
import logging
import os
import time

from aiohttp import web
from webargs import fields


def get_metadata():
    return {"name": "failing", "description": "Fails on demand"}


def _fail(mode, seconds=0.0):
    if mode == "raise":
        raise ValueError("the model is unhappy")
    if mode == "http":
        raise web.HTTPTooManyRequests(
            reason="Slow down please", text="Too many requests"
        )
    if mode == "http-bad-request":
        raise web.HTTPBadRequest(reason="Bad image")
    if mode == "not-implemented":
        raise NotImplementedError("not in this version")
    if mode == "exit":
        os._exit(3)
    if mode == "segfault":
        ctypes.string_at(0)
    if mode == "sleep":
        print(f"sleeping {seconds}")
        time.sleep(seconds)
    if mode == "big":
        return {"mode": mode, "blob": "x" * 200_000}
    if mode == "unencodable":
        return {"value": object()}
    if mode == "progress":  # many reports at once, then the last one holds
        from deepaas import progress

        for step in range(10_000):
            progress(step / 20_000)
        progress(0.5, "half way")
        time.sleep(seconds)
        progress(1.0, "all done")
    if mode == "flood":  # 4,000 numbered lines of 50 bytes over `seconds`
        for burst in range(40):
            for line in range(burst * 100 + 1, burst * 100 + 101):
                print(f"line {line:06d} " + "x" * 37, flush=True)
            time.sleep(seconds / 40)
    if mode == "chatty":
        for line in range(1, 4):
            print(f"line {line}")
        logging.getLogger("chatty").warning("a logged warning")
        os.write(2, b"raw stderr bytes\n")
        time.sleep(seconds)
        print("last line")
    return {"mode": mode, "pid": os.getpid()}


def get_predict_args():
    return {
        "mode": fields.Str(missing="ok"),
        "seconds": fields.Float(missing=0.0),
        "data": fields.Field(type="file", location="form", missing=None),
    }


def _items(mode, count):
    """Items one by one (a streamed prediction)."""
    for n in range(count):
        if mode == "stream-fail" and n == 2:
            raise ValueError("broke mid-stream")
        if mode in ("stream", "stream-forever"):
            time.sleep(0.05)
        yield {"n": n, "pid": os.getpid()}


def predict(**kwargs):
    mode = kwargs["mode"]
    if mode.startswith("stream"):
        count = {"stream": 5, "stream-fail": 5, "stream-forever": 10**9}.get(
            mode, int(kwargs["seconds"])
        )
        return _items(mode, count)
    result = _fail(kwargs["mode"], kwargs["seconds"])
    if kwargs["data"] is not None:
        result["path"] = kwargs["data"].filename
    return result


def get_train_args():
    return {"mode": fields.Str(missing="ok"), "seconds": fields.Float(missing=0.0)}


def train(**kwargs):
    return _fail(kwargs["mode"], kwargs["seconds"])
