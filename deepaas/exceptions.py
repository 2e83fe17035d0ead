"""The project's error types.

The model layer raises these; the API layer turns each into one JSON answer.
None of them knows about HTTP beyond the status code it suggests.
"""

from __future__ import annotations

from typing import Any

# The most problems (arguments) one error answer or header names.
MAX_REPORTED = 20


class DeepaasError(Exception):
    """Base class of every deepaas error."""

    status = 500
    # Keys an error answer has besides "message" (as upstream's clients read
    # them), or None.
    details: dict[str, Any] | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(DeepaasError):
    """An option's value cannot be used (a log file that cannot be opened)."""


class ModelLoadError(DeepaasError):
    """A model entry point could not be found, imported or instantiated."""


class ModelNotFound(DeepaasError):
    """No loaded model answers to that name."""

    status = 404


class TrainingNotFound(DeepaasError):
    """No training with that id is known for that model."""

    status = 404


class JobNotFound(DeepaasError):
    """No asynchronous prediction with that id is known for that model."""

    status = 404


class InvalidWebhook(DeepaasError):
    """A Webhook-URL or Webhook-Events that cannot be used."""

    status = 422


class JobHasNoResult(DeepaasError):
    """The result of a job that is running, or ended without one."""

    status = 409

    def __init__(self, status: str, message: str | None) -> None:
        why = f": {message}" if message else ""
        super().__init__(f"This prediction has no result: it is {status}{why}.")


class IdempotencyKeyReused(DeepaasError):
    """An Idempotency-Key sent again with other arguments."""

    status = 422

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used for a prediction with other "
            "arguments; use a new key for a new prediction."
        )


class BadRequest(DeepaasError):
    """The request body cannot be read at all (malformed JSON or multipart)."""

    status = 400


class InvalidJSON(BadRequest):
    """A request body that is not valid JSON (the ``json`` key is where
    upstream's clients, through webargs, read why)."""

    details = {"json": ["Invalid JSON body."]}


class UnreadableRequest(DeepaasError):
    """A request body that a worker found it cannot read (malformed, too many
    parts), with the status the server would have answered."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class RequestTimeout(DeepaasError):
    """The request body stopped arriving."""

    status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"The request body took too long to arrive ({seconds:g} s; see "
            "--body-timeout)."
        )


class InsufficientStorage(DeepaasError):
    """There is no room left to store what the request sends."""

    status = 507


class TooManyParts(DeepaasError):
    """A multipart body has more parts than the server takes."""

    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The request body has more than {limit} multipart parts (see --max-parts)."
        )


class InvalidArguments(DeepaasError):
    """The arguments sent do not match the model's declaration."""

    status = 422

    def __init__(self, errors: dict[str, Any]) -> None:
        # A client can send any number of bad arguments: the answer names the
        # first few, and says how many more there were.
        names = sorted(errors)
        self.all_errors = errors  # all of them, for a worker to pass on
        self.errors = {name: errors[name] for name in names[:MAX_REPORTED]}
        self.omitted = len(names) - len(self.errors)
        details = "; ".join(
            f"{field}: {_flatten(msgs)}" for field, msgs in self.errors.items()
        )
        if self.omitted:
            details += f"; and {self.omitted} more"
        super().__init__(f"Invalid arguments: {details}")


class InvalidResponse(DeepaasError):
    """The model returned something its own response schema rejects."""

    def __init__(self, model: str, errors: Any) -> None:
        self.errors = errors
        super().__init__(
            f"The response of model {model!r} does not match its schema: "
            f"{_flatten(errors)}"
        )


class PredictionNotJSON(InvalidResponse):
    """The model returned something JSON cannot encode."""

    def __init__(self, model: str, error: Exception) -> None:
        self.errors = str(error)
        DeepaasError.__init__(
            self,
            f"The prediction of model {model!r} cannot be sent as JSON: {error}",
        )


class ModelCallError(DeepaasError):
    """The model raised an exception while running a call."""

    def __init__(
        self,
        message: str,
        *,
        exc_type: str = "Exception",
        status: int = 500,
        reason: str | None = None,
        traceback: str = "",
    ) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.status = status
        self.reason = reason
        self.traceback = traceback


class NotImplementedByModel(ModelCallError):
    """The model does not implement the method that was called."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("status", 501)
        super().__init__(message, **kwargs)


class WorkerDied(DeepaasError):
    """The worker process running a call ended before answering."""

    def __init__(
        self, exitcode: int | None, method: str, how: str | None = None
    ) -> None:
        """``how`` it ended, in words, when more is known than an exit code
        (a worker on another machine)."""
        self.exitcode = exitcode
        super().__init__(
            f"The worker running {method}() died ({how or describe_exit(exitcode)})."
        )


class CallTimedOut(DeepaasError):
    """The call ran longer than its time limit; its worker was stopped."""

    status = 504

    def __init__(self, method: str, seconds: float) -> None:
        super().__init__(
            f"{method}() did not finish within {seconds:g} seconds; its worker "
            "was stopped and is being replaced."
        )


class NoFreeWorker(DeepaasError):
    """Every worker stayed busy for longer than the caller would wait."""

    status = 503

    def __init__(self, seconds: float) -> None:
        self.retry_after = max(1, round(seconds))
        super().__init__(
            f"Every worker is busy and none became free within {seconds:g} "
            "seconds; try again later."
        )


class TooManyQueued(DeepaasError):
    """As many predictions as allowed already wait for a worker."""

    status = 503
    retry_after = 1

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"{limit} predictions already wait for a free worker "
            "(--max-queued-predictions); try again later."
        )


class TooManyTrainings(DeepaasError):
    """As many trainings as allowed already run."""

    status = 429
    retry_after = 30

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"{limit} trainings already run on this server (--max-trainings); "
            "try again when one has ended."
        )


class TooManyTrainingsOfUser(TooManyTrainings):
    """As many trainings as one user may have already run."""

    def __init__(self, limit: int) -> None:
        DeepaasError.__init__(
            self,
            f"You already have {limit} trainings running "
            "(--max-trainings-per-user); try again when one has ended.",
        )


class TooManyJobs(DeepaasError):
    """As many asynchronous predictions as allowed already wait or run."""

    status = 429
    retry_after = 5

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"{limit} asynchronous predictions already wait or run on this server "
            "(--max-jobs); try again when one has ended."
        )


class TooManyJobsOfUser(TooManyJobs):
    """As many asynchronous predictions as one user may have already run."""

    def __init__(self, limit: int) -> None:
        DeepaasError.__init__(
            self,
            f"You already have {limit} asynchronous predictions waiting or "
            "running (--max-jobs-per-user); try again when one has ended.",
        )


class JobArgumentsTooLarge(DeepaasError):
    """Arguments too large to be kept with an asynchronous prediction."""

    status = 413

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"The arguments of an asynchronous prediction are kept with it, and "
            f"these take {size} bytes, more than {limit} (--max-job-arguments); "
            "send large data as a file."
        )


class Unauthenticated(DeepaasError):
    """No credentials, or credentials that do not prove who sends them."""

    status = 401

    def __init__(self, message: str, *, invalid: bool = False) -> None:
        """``invalid``: credentials were sent but are not accepted (as
        opposed to none sent)."""
        super().__init__(message)
        self.invalid = invalid


class Forbidden(DeepaasError):
    """Who sends the request is known, and may not do this."""

    status = 403


class PoolClosed(DeepaasError):
    """The worker pool is shutting down and takes no more calls."""

    status = 503


class WorkersUnplaced(DeepaasError):
    """No worker of a model runs, and Ray has none to place for lack of
    resources: calls fail at once rather than wait in vain."""

    status = 503
    retry_after = 30

    def __init__(self, model: str, count: int, asks: str, free: str) -> None:
        super().__init__(
            f"No worker of model {model!r} runs: Ray cannot place {count} of them, "
            f"each asking for {asks}, on the cluster's free resources ({free}); "
            "add nodes or resources, or ask for less (--worker-num-cpus, "
            "--worker-num-gpus, --worker-resources)."
        )


class StoreError(DeepaasError):
    """The training database cannot be opened, read or written."""


def describe_exit(exitcode: int | None) -> str:
    """Say in words how a process ended, from its ``exitcode``."""
    import signal

    if exitcode is None:
        return "exit code unknown"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name}, exit code {exitcode}"
    return f"exit code {exitcode}"


def _flatten(messages: Any) -> str:
    if isinstance(messages, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in messages.items())
    if isinstance(messages, list | tuple):
        return " ".join(_flatten(m) for m in messages)
    return str(messages)
