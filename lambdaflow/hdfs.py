"""WebHDFS access for the parts of lambdaflow that run outside Spark (lag monitor, sensors, CLI).

Spark jobs use the Hadoop FileSystem through the JVM instead; this module is for light
bookkeeping reads and writes (manifests, markers, history) from plain Python.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
from typing import Any, Iterator

import requests

from hdfs import InsecureClient
from hdfs.util import HdfsError

from lambdaflow.config import Settings
from lambdaflow.errors import UserError

__all__ = ["HdfsError", "HdfsUnavailable", "client", "read_json", "write_json", "list_names", "webhdfs_errors"]


class HdfsUnavailable(UserError):
    """WebHDFS cannot be reached; the message names the address."""


@contextlib.contextmanager
def webhdfs_errors(settings: Settings) -> Iterator[None]:
    """Turn connection failures of WebHDFS calls into one actionable :class:`HdfsUnavailable`."""
    try:
        yield
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise HdfsUnavailable(f"cannot reach WebHDFS at {settings.webhdfs_url} ({exc.__class__.__name__}); "
                              "is HDFS up? (`lambdaflow status`)") from exc


def hdfs_user() -> str:
    return os.environ.get("HADOOP_USER_NAME") or getpass.getuser()


def client(settings: Settings | None = None, timeout: float = 10.0) -> InsecureClient:
    settings = settings or Settings.from_env()
    return InsecureClient(settings.webhdfs_url, user=hdfs_user(), timeout=timeout)


def list_names(c: InsecureClient, path: str) -> list[str]:
    """Names in a directory, or [] when it does not exist."""
    if c.status(path, strict=False) is None:
        return []
    return c.list(path)


def read_json(c: InsecureClient, path: str, default: Any = None) -> Any:
    if c.status(path, strict=False) is None:
        return default
    with c.read(path, encoding="utf-8") as reader:
        return json.load(reader)


def write_json(c: InsecureClient, path: str, document: Any) -> None:
    """Replace a JSON document atomically (see :func:`lambdaflow.storage.fs.web_write_atomic`)."""
    from lambdaflow.storage.fs import web_write_json

    web_write_json(c, path, document)
