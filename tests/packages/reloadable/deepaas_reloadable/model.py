"""A model the tests install again, in another release, while it is served.

Each release answers with its number and the worker's pid; from release 2 on
it takes one more argument, ``shout``.
"""

import os
import time
from pathlib import Path

from marshmallow import fields

from deepaas_reloadable.release import RELEASE, WARM_FAILS


class ReloadableModel:
    def get_metadata(self):
        return {
            "name": "reloadable",
            "version": RELEASE,
            "description": f"Release {RELEASE} of {type(self).__name__}",
        }

    def warm(self):
        if WARM_FAILS:
            raise RuntimeError(f"release {RELEASE} cannot warm up")

    def get_predict_args(self):
        arguments = {"text": fields.Str(load_default="")}
        if RELEASE != "1":
            arguments["shout"] = fields.Bool(load_default=False)
        return arguments

    def predict(self, text="", shout=False):
        return {
            "release": RELEASE,
            "class": type(self).__name__,
            "pid": os.getpid(),
            "text": text.upper() if shout else text,
        }

    def get_train_args(self):
        return {"until": fields.Str(required=True)}

    def train(self, until):
        """Run until the file ``until`` exists (a minute at most); if it
        says "crash", the worker dies."""
        deadline = time.monotonic() + 60
        while not Path(until).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if Path(until).exists() and Path(until).read_text() == "crash":
            os._exit(3)
        return {"release": RELEASE, "pid": os.getpid()}


class AnotherModel(ReloadableModel):
    """What a release may name as the entry point instead."""
