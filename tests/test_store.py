"""The SQLite training store."""

from __future__ import annotations

import datetime
import os
import sqlite3
import subprocess
import sys

import pytest

from deepaas import store as store_mod
from deepaas.exceptions import StoreError
from deepaas.store import SQLiteTrainingStore
from deepaas.trainings import DONE, ERROR, RUNNING, Training


def make_training(model: str = "m", **kwargs) -> Training:
    return Training(model=model, args={"epochs": 3, "names": ["a"]}, **kwargs)


def test_records_survive_reopening(tmp_path):
    store = SQLiteTrainingStore(str(tmp_path))
    training = make_training()
    store.add(training)
    training.status = DONE
    training.output = {"loss": 0.5}
    training.finish_date = training.date + datetime.timedelta(seconds=90)
    store.update(training)
    store.close()
    again = SQLiteTrainingStore(str(tmp_path)).get("m", training.uuid)
    assert again is not None
    assert again.to_dict() == training.to_dict()
    assert again.to_dict()["result"]["duration"] == "0:01:30"


def test_models_share_the_file_without_mixing(tmp_path):
    store = SQLiteTrainingStore(str(tmp_path))
    a, b = make_training("a"), make_training("b")
    store.add(a)
    store.add(b)
    assert [t.uuid for t in store.list("a")] == [a.uuid]
    assert store.get("b", a.uuid) is None
    store.remove("a", a.uuid)
    assert store.list("a") == [] and len(store.list("b")) == 1


def test_uses_wal_mode(tmp_path):
    store = SQLiteTrainingStore(str(tmp_path))
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_running_training_of_a_dead_server_becomes_interrupted(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)  # fmt: skip
    store = SQLiteTrainingStore(str(tmp_path))
    orphan = make_training()
    store.owner = f"{os.uname().nodename}:{dead.stdout.strip()}:1"
    store.add(orphan)
    store.owner = store_mod.process_identity()
    ours = make_training()
    store.add(ours)
    assert store.mark_interrupted() == 1
    record = store.get("m", orphan.uuid)
    assert record.status == ERROR
    assert record.message == store_mod.INTERRUPTED_BY_RESTART
    assert store.get("m", ours.uuid).status == RUNNING


def test_reused_pid_is_not_taken_for_the_owner(tmp_path):
    store = SQLiteTrainingStore(str(tmp_path))
    pid = os.getpid()
    store.owner = f"{os.uname().nodename}:{pid}:0"  # our pid, another start time
    training = make_training()
    store.add(training)
    assert store.mark_interrupted() == 1


def test_corrupt_database_is_a_clear_error(tmp_path):
    (tmp_path / store_mod.FILENAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        SQLiteTrainingStore(str(tmp_path))
    assert store_mod.FILENAME in info.value.message
    assert "--state-dir" in info.value.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_directory_is_a_clear_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StoreError):
            SQLiteTrainingStore(str(tmp_path / "state"))
    finally:
        tmp_path.chmod(0o700)


def test_state_dir_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file, not a directory")
    with pytest.raises(StoreError) as info:
        SQLiteTrainingStore(str(blocker))
    assert "state directory" in info.value.message


def test_a_database_with_another_schema_is_a_clear_error(tmp_path):
    db = sqlite3.connect(tmp_path / store_mod.FILENAME)
    db.execute("CREATE TABLE trainings (id INTEGER PRIMARY KEY, name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(StoreError) as info:
        SQLiteTrainingStore(str(tmp_path))
    assert "other columns (id, name)" in info.value.message
    assert "--state-dir" in info.value.message


def test_one_unreadable_row_fails_alone(tmp_path):
    store = SQLiteTrainingStore(str(tmp_path))
    good, bad = make_training(), make_training()
    store.add(good)
    store.add(bad)
    store._db.execute(
        "UPDATE trainings SET args = 'not json', date = 'yesterday' WHERE uuid = ?",
        (bad.uuid,),
    )
    listed = {t.uuid: t for t in store.list(good.model)}
    assert listed[good.uuid].status == good.status
    damaged = store.get(bad.model, bad.uuid)
    assert damaged is not None and damaged.status == ERROR
    assert "cannot be read" in damaged.message
    assert listed[bad.uuid].status == ERROR
    assert damaged.to_dict()["uuid"] == bad.uuid


def test_finished_before_finds_only_trainings_that_ended_before(tmp_path):
    store = SQLiteTrainingStore(str(tmp_path))
    now = datetime.datetime.now()
    old, recent, running = make_training(), make_training(), make_training()
    for training, ended in ((old, now - datetime.timedelta(days=2)), (recent, now)):
        store.add(training)
        training.status, training.finish_date = DONE, ended
        store.update(training)
    store.add(running)
    cutoff = now - datetime.timedelta(days=1)
    assert list(store.finished_before(cutoff)) == [("m", old.uuid)]
    # one cut by a restart (its finish date is written in the other ISO form)
    cut = make_training()
    store.add(cut)
    gone = f"{os.uname().nodename}:{os.getpid()}:0"  # our pid, another start
    store._db.execute("UPDATE trainings SET owner = ? WHERE uuid = ?", (gone, cut.uuid))
    assert store.mark_interrupted() == 1
    later = now + datetime.timedelta(minutes=1)
    assert ("m", cut.uuid) in store.finished_before(later)
    assert ("m", running.uuid) not in store.finished_before(later)


def test_a_database_of_schema_1_gains_the_starter_column(tmp_path):
    db = sqlite3.connect(tmp_path / store_mod.FILENAME)
    db.execute(
        "CREATE TABLE trainings (model TEXT NOT NULL, uuid TEXT NOT NULL, "
        "date TEXT NOT NULL, args TEXT NOT NULL, status TEXT NOT NULL, output TEXT, "
        "finish_date TEXT, message TEXT, owner TEXT, PRIMARY KEY (model, uuid))"
    )
    db.execute(
        "INSERT INTO trainings VALUES ('m', 'u1', '2026-01-02T03:04:05', '{}', "
        "'done', '1', '2026-01-02T03:05:05', NULL, 'gone:1:1')"
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = SQLiteTrainingStore(str(tmp_path))
    old = store.get("m", "u1")
    assert old is not None and old.status == DONE and old.owner is None
    assert "owner" not in old.to_dict()
    new = make_training(owner="key:alice")
    store.add(new)
    store.close()
    again = SQLiteTrainingStore(str(tmp_path))
    kept = again.get("m", new.uuid)
    assert kept is not None and kept.to_dict()["owner"] == "key:alice"
    assert (
        again._db.execute("PRAGMA user_version").fetchone()[0]
        == store_mod.SCHEMA_VERSION
    )


def test_a_database_of_schema_5_gets_webhooks_that_name_their_model(tmp_path):
    db = sqlite3.connect(tmp_path / store_mod.FILENAME)
    db.execute(
        "CREATE TABLE webhooks (kind TEXT NOT NULL, record TEXT NOT NULL, "
        "url TEXT NOT NULL, events TEXT NOT NULL, PRIMARY KEY (kind, record))"
    )
    db.execute("PRAGMA user_version = 5")
    db.commit()
    db.close()
    store = SQLiteTrainingStore(str(tmp_path))  # would refuse other columns
    hooks = store_mod.SQLiteWebhookStore(store)
    hooks.add_hook("job", "j1", "m", "http://127.0.0.1/hook", ["completed"])
    assert hooks.hooks() == [("job", "j1", "m", "http://127.0.0.1/hook", ["completed"])]
