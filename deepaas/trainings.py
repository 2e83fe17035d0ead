"""Training records and the runner that keeps them current.

A training is started in the background on a model's executor; its record goes
through a ``TrainingStore`` so that where records live (memory, a database) is
not the runner's concern.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import datetime
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from deepaas import exceptions
from deepaas.model.v2.wrapper import jsonable

LOG = logging.getLogger(__name__)

RUNNING, DONE, ERROR, CANCELLED = "running", "done", "error", "cancelled"


def _now() -> datetime.datetime:
    return datetime.datetime.now()


@dataclasses.dataclass
class Training:
    """One training of one model."""

    model: str
    args: dict[str, Any]
    uuid: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    date: datetime.datetime = dataclasses.field(default_factory=_now)
    status: str = RUNNING
    output: Any = None
    finish_date: datetime.datetime | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The training object of the HTTP API."""
        body: dict[str, Any] = {
            "uuid": self.uuid,
            "date": str(self.date),
            "args": self.args,
            "status": self.status,
        }
        if self.status == DONE and self.finish_date is not None:
            body["result"] = {
                "output": self.output,
                "finish_date": str(self.finish_date),
                "duration": str(self.finish_date - self.date),
            }
        if self.message is not None:
            body["message"] = self.message
        return body


class TrainingStore(abc.ABC):
    """Where training records are kept."""

    @abc.abstractmethod
    def add(self, training: Training) -> None:
        """Keep a new record."""

    @abc.abstractmethod
    def update(self, training: Training) -> None:
        """Save the current state of a kept record."""

    @abc.abstractmethod
    def get(self, model: str, training_id: str) -> Training | None:
        """The record, or None if unknown."""

    @abc.abstractmethod
    def list(self, model: str) -> list[Training]:
        """Every record of a model, oldest first."""

    @abc.abstractmethod
    def remove(self, model: str, training_id: str) -> None:
        """Forget a record (no error if unknown)."""


class MemoryTrainingStore(TrainingStore):
    """Records in a dict: they last as long as the process."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], Training] = {}

    def add(self, training: Training) -> None:
        self._records[(training.model, training.uuid)] = training

    def update(self, training: Training) -> None:
        self._records[(training.model, training.uuid)] = training

    def get(self, model: str, training_id: str) -> Training | None:
        return self._records.get((model, training_id))

    def list(self, model: str) -> list[Training]:
        return sorted(
            (t for (m, _), t in self._records.items() if m == model),
            key=lambda t: t.date,
        )

    def remove(self, model: str, training_id: str) -> None:
        self._records.pop((model, training_id), None)


class TrainingRunner:
    """Starts trainings in the background and records how they end."""

    def __init__(self, store: TrainingStore) -> None:
        self.store = store
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(
        self,
        model: str,
        args: dict[str, Any],
        run: Callable[[], Awaitable[Any]],
        cleanup: Callable[[], None] = lambda: None,
    ) -> Training:
        """Record a new training and run ``run()`` for it in the background.

        ``cleanup`` runs once the training has ended, however it ended.
        """
        training = Training(model=model, args=jsonable(args))
        self.store.add(training)
        task = asyncio.get_running_loop().create_task(
            self._run(training, run, cleanup), name=f"training-{training.uuid}"
        )
        self._tasks[training.uuid] = task
        task.add_done_callback(lambda _: self._tasks.pop(training.uuid, None))
        return training

    async def _run(
        self,
        training: Training,
        run: Callable[[], Awaitable[Any]],
        cleanup: Callable[[], None],
    ) -> None:
        try:
            output = await run()
        except asyncio.CancelledError:
            training.status = CANCELLED
            training.finish_date = _now()
            self.store.update(training)
            raise
        except exceptions.DeepaasError as exc:
            self._fail(training, exc.message)
        except Exception as exc:  # never leave a training "running"
            LOG.exception("Training %s failed unexpectedly", training.uuid)
            self._fail(training, f"{type(exc).__name__}: {exc}")
        else:
            training.status = DONE
            training.output = jsonable(output)
            training.finish_date = _now()
            LOG.info("Training %s of %r done", training.uuid, training.model)
            self.store.update(training)
        finally:
            cleanup()

    def _fail(self, training: Training, message: str) -> None:
        LOG.error(
            "Training %s of %r failed: %s", training.uuid, training.model, message
        )
        training.status = ERROR
        training.message = message
        training.finish_date = _now()
        self.store.update(training)

    def get(self, model: str, training_id: str) -> Training:
        """The record; raises ``TrainingNotFound``."""
        training = self.store.get(model, training_id)
        if training is None:
            raise exceptions.TrainingNotFound(
                f"No training {training_id!r} for model {model!r}."
            )
        return training

    async def cancel(self, model: str, training_id: str) -> Training:
        """Stop the training if it runs, forget its record, return its last state."""
        training = self.get(model, training_id)
        task = self._tasks.get(training_id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.store.remove(model, training_id)
        return training

    async def stop(self) -> None:
        """Cancel every running training (used at shutdown)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
