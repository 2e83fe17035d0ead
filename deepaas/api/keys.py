"""Keys of what the Application holds (no module-level state anywhere else)."""

from __future__ import annotations

from aiohttp import web
from oslo_config import cfg

from deepaas.api.metrics import Metrics
from deepaas.api.parser import ArgumentParser
from deepaas.api.startup import Startup
from deepaas.debug import DebugCapture
from deepaas.model.v2.wrapper import ModelWrapper
from deepaas.trainings import TrainingRunner

CONFIG = web.AppKey("deepaas_config", cfg.ConfigOpts)
BASE_PATH = web.AppKey("deepaas_base_path", str)
MODELS = web.AppKey("deepaas_models", dict[str, ModelWrapper])
PARSER = web.AppKey("deepaas_parser", ArgumentParser)
TRAININGS = web.AppKey("deepaas_trainings", TrainingRunner)
DEBUG_CAPTURE = web.AppKey("deepaas_debug_capture", DebugCapture)
STARTUP = web.AppKey("deepaas_startup", Startup)
METRICS = web.AppKey("deepaas_metrics", Metrics)
