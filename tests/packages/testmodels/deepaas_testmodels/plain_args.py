"""A model using the deprecated plain-dict argument declarations."""


def get_metadata():
    return {"name": "plain-args", "description": "Plain dict arguments"}


def get_predict_args():
    return {
        "name": {"default": "world", "help": "Who to greet", "required": False},
        "times": {"default": 2, "help": "How many times", "required": False},
        "needed": {"help": "A required value", "required": True},
    }


def predict(**kwargs):
    times = max(0, min(kwargs["times"], 10))  # plain dicts cannot declare a range
    return " ".join(["hello " + kwargs["name"]] * times) + kwargs["needed"]
