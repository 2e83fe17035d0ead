"""A model that can only be trained."""


def train(**kwargs):
    return {"trained": True}
