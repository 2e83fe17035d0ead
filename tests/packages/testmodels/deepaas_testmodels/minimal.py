"""A model implementing only predict: everything else falls back."""


def predict(**kwargs):
    return {"ok": True}
