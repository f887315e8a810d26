"""Parse DAG files with every kind of I/O a DAG file could do at parse time blocked and recorded.

Run as ``python -m tests.dags.parse_guard FILE...`` (a fresh interpreter, so that the modules a DAG
file imports are imported, and their module-level code runs, under the guard); prints one JSON
document: ``{file: {"io": [...], "queries": [...], "import_errors": {...}, "dag_ids": [...]}}``.

Blocked and recorded:
- network: ``socket.socket.connect`` / ``connect_ex`` at the class level (kafka-python, urllib3/requests
  under the WebHDFS client, http.client, ``socket.create_connection`` all end there) and
  ``socket.getaddrinfo`` (name resolution comes first);
- Airflow: ``BaseHook.get_connection``, ``Connection.get``, ``Variable.get``;
- the metadata DB: every statement SQLAlchemy sends on Airflow's engine.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
from unittest import mock


@contextlib.contextmanager
def guarded(io: list[str]):
    def refuse(what: str):
        def call(*args, **kwargs):
            shown = [a for a in args if not isinstance(a, socket.socket)]
            io.append(f"{what}{tuple(shown)!r}")
            raise OSError(f"I/O at DAG parse time: {what}{tuple(shown)!r}")
        return call

    patches = [mock.patch.object(socket.socket, "connect", refuse("socket.connect")),
               mock.patch.object(socket.socket, "connect_ex", refuse("socket.connect_ex")),
               mock.patch.object(socket, "getaddrinfo", refuse("socket.getaddrinfo")),
               mock.patch.object(socket, "create_connection", refuse("socket.create_connection"))]
    import airflow.sdk

    for owner, name in ((airflow.sdk.BaseHook, "get_connection"), (airflow.sdk.Connection, "get"),
                        (airflow.sdk.Variable, "get")):
        if hasattr(owner, name):
            patches.append(mock.patch.object(owner, name, side_effect=refuse(f"{owner.__name__}.{name}")))
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        yield


def parse(dag_file: str) -> dict:
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag
    from sqlalchemy import event

    io: list[str] = []
    queries: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        queries.append(statement)

    engine = settings.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        with guarded(io):
            bag = DagBag(dag_folder=dag_file)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return {"io": io, "queries": queries, "dag_ids": sorted(bag.dag_ids),
            "import_errors": {k: str(v)[-2000:] for k, v in bag.import_errors.items()}}


def main(files: list[str]) -> int:
    import airflow.dag_processing.dagbag  # noqa: F401 (Airflow itself is imported before the guard)

    print(json.dumps({f: parse(f) for f in files}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
