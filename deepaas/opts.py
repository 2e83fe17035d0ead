"""Entry point for ``oslo-config-generator``: every option deepaas has."""

from __future__ import annotations

from oslo_config import cfg

from deepaas import config


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """Return the options by group, as the sample generator expects."""
    return config.list_opts()
