"""A model that answers with ``size`` bytes of a known pattern, as bytes, a
bytearray, a memoryview or JSON text, to check what reaches the client; each
``seed`` gives other bytes, so that one answer overwritten by another shows."""

from webargs import fields, validate


def pattern(size, seed=0):
    """``size`` bytes that show where a piece went missing or came twice."""
    block = bytes((seed + i) % 256 for i in range(251))  # a prime length: no
    return (block * (size // len(block) + 1))[:size]  # alignment hides a slip


def get_predict_args():
    return {
        "kind": fields.Str(
            missing="bytes",
            validate=validate.OneOf(["bytes", "bytearray", "memoryview", "json"]),
        ),
        "size": fields.Int(
            missing=1000, validate=validate.Range(min=0, max=16_000_000)
        ),
        "seed": fields.Int(missing=0, validate=validate.Range(min=0, max=255)),
        "accept": fields.Str(
            missing="application/json",
            validate=validate.OneOf(["application/json", "image/png"]),
        ),
    }


def predict(kind, size, seed, accept):
    data = pattern(size, seed)
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(bytearray(data))
    if kind == "json":
        return {"text": data.hex()[:size], "size": size}
    return data
