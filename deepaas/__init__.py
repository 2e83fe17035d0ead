"""deepaas: serve a trained model as a REST API (DEEPaaS API V2)."""

# The one place the version is written: setup.cfg reads it from here, and
# deepaas-run --version, deepaas-cli --version and the spec's info.version say it.
__version__ = "0.9.0"

from deepaas.reports import progress  # noqa: E402 - after the version, for setup.cfg

__all__ = ["__version__", "progress"]
