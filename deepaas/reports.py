"""``deepaas.progress``: how a model tells how far its call has got.

A model calls ``deepaas.progress(0.4, "epoch 2 of 5")`` from ``train()`` or
``predict()``; under a deepaas worker the report reaches the server, which
shows it on the training or job. Anywhere else (a notebook, a test, upstream
DEEPaaS's own worker) nothing happens. Upstream DEEPaaS has no such function,
so a model that must run on both imports it with a fall-back::

    try:
        from deepaas import progress
    except ImportError:
        def progress(fraction=None, message=None):
            pass
"""

from __future__ import annotations

from collections.abc import Callable

Reporter = Callable[[float | None, str | None], None]
MAX_MESSAGE = 1000  # characters of a message kept

_reporter: Reporter | None = None  # set by a worker while it runs a call


def progress(fraction: float | None = None, message: str | None = None) -> None:
    """Report how far the running call has got: ``fraction`` of the work
    done (0 to 1) and/or a short ``message``. Cheap to call often: a worker
    passes on a few reports a second, the last one always."""
    if fraction is not None:
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be from 0 to 1, not {fraction}")
    if message is not None:
        message = str(message)[:MAX_MESSAGE]
    reporter = _reporter
    if reporter is not None:
        reporter(fraction, message)


def install(reporter: Reporter | None) -> None:
    """Where reports go (None: nowhere); for the worker running calls."""
    global _reporter
    _reporter = reporter
