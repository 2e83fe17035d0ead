"""deepaas: serve a trained model as a REST API (DEEPaaS API V2)."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("deepaas")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
