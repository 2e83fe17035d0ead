"""Models whose declarations deepaas must refuse at start-up."""


class Base:
    def get_metadata(self):
        return {"name": "bad", "description": "bad"}

    def get_predict_args(self):
        return {}

    def predict(self, **kwargs):
        return {}


class BadSchema(Base):
    schema = 42


class BadArgs(Base):
    def get_predict_args(self):
        return {"x": 42}


class BadWarm(Base):
    def warm(self):
        raise RuntimeError("weights file missing")


class DiesWarming(Base):
    def warm(self):
        import os

        os._exit(7)  # as a crash in a native library would end it
