"""The file types of the model API, where model packages written for DEEPaaS
import them from (``from deepaas.model.v2.wrapper import UploadedFile``)."""

from deepaas.model.v2.types import ReturnedFile, UploadedFile

__all__ = ["ReturnedFile", "UploadedFile"]
