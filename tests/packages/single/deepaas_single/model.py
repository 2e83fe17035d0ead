"""The only model installed in its test environment."""

from deepaas.model.v2.base import BaseModel


class OnlyModel(BaseModel):
    def get_metadata(self):
        return {"name": "only-model", "description": "Alone"}

    def warm(self):
        pass

    def get_predict_args(self):
        return {}

    def predict(self, **kwargs):
        return "only"

    def get_train_args(self):
        return {}

    def train(self, **kwargs):
        return None
