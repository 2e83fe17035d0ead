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
    return " ".join(["hello " + kwargs["name"]] * kwargs["times"]) + kwargs["needed"]
