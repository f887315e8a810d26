"""Atomic HDFS primitives, in one place, for the JVM (NameNode RPC, :class:`JvmFs`) and for WebHDFS
(:class:`WebFs`, the same operations for code without a JVM, e.g. a Spark Connect client).

Each primitive is one NameNode operation, so concurrent callers are serialised by the NameNode:

- **create-if-absent** (:meth:`JvmFs.create_new`, :func:`web_create_new`): ``create`` with
  ``overwrite=false``; exactly one of several racing callers wins, the others get ``False``.
  ``JvmFs.create_new(..., make_parents=False)`` is HDFS's ``createNonRecursive``: it also fails
  when the parent directory is gone, which the fenced writer (:mod:`lambdaflow.storage.lock`)
  relies on.
- **atomic replace** (:meth:`JvmFs.write_atomic`, :func:`web_write_atomic`): write a unique temp
  file beside the target, then ``rename`` with ``Options.Rename.OVERWRITE`` (WebHDFS:
  ``renameoptions=OVERWRITE``). Readers see the old or the new content, never none and never a
  part (delete-then-rename, which this replaces, left a window without the file).
- **rename** (:meth:`JvmFs.rename`): fails when the source is missing or the destination exists;
  a conditional step (a commit) can be built on it.

Names starting with ``_tmp.`` are in-flight temp files; readers of bookkeeping directories skip
names starting with ``_``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any


def temp_name(path: str) -> str:
    parent, name = path.rsplit("/", 1)
    return f"{parent}/_tmp.{name}.{uuid.uuid4().hex[:12]}"


def _java_class(exc: BaseException) -> str:
    java = getattr(exc, "java_exception", None)
    return java.getClass().getName() if java is not None else ""


def write_files(fs, files: Mapping[str, bytes], pool: Executor | None = None) -> None:
    """Create every ``path -> data`` of ``files`` with ``fs.write_bytes`` (new files, parents made),
    several at once on ``pool``: each create waits at close for its DataNode pipeline's
    acknowledgement (10-25 ms here), which the others overlap. The first failure is raised after
    every write has ended."""
    if pool is None or len(files) < 2:
        for path, data in files.items():
            fs.write_bytes(path, data)
        return
    futures = [pool.submit(fs.write_bytes, path, data) for path, data in files.items()]
    for future in futures:
        future.exception()  # wait for all before raising any
    for future in futures:
        future.result()


class _Renames:
    """Renames on top of a file system's one ``_rename_once`` (the NameNode's ``rename``: moves a
    source *into* an existing destination directory; False when it did nothing)."""

    def mkdirs(self, path: str) -> None:
        raise NotImplementedError

    def _rename_once(self, src: str, dst: str) -> bool:
        raise NotImplementedError

    def rename(self, src: str, dst: str, make_parent: bool = True) -> None:
        """Atomic rename; raises when the source is missing or the destination exists (the parent
        of the destination is created first unless ``make_parent`` is False)."""
        if not self.try_rename(src, dst, make_parent):
            raise OSError(f"HDFS rename {src} -> {dst} failed (missing source or existing destination?)")

    def try_rename(self, src: str, dst: str, make_parent: bool = False) -> bool:
        """Atomic rename; False when the source is missing, the destination exists or its parent is missing."""
        parent = dst.rsplit("/", 1)[0]
        if parent and make_parent:
            self.mkdirs(parent)
        return self._rename_once(src, dst)


class JvmFs(_Renames):
    """The Hadoop FileSystem API through a SparkSession's JVM (renames and small files over RPC)."""

    def __init__(self, spark, base_uri: str) -> None:
        jvm = spark.sparkContext._jvm
        self._jvm = jvm
        self._gateway = spark.sparkContext._gateway
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()
        self._fs = jvm.org.apache.hadoop.fs.FileSystem.get(jvm.java.net.URI(base_uri), self._conf)

    def _path(self, path: str):
        return self._jvm.org.apache.hadoop.fs.Path(path)

    # -- reads ------------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._path(path)))

    def list(self, path: str, files_only: bool = False) -> list[str]:
        """Full paths (without scheme) of a directory's entries; [] when it does not exist."""
        if not self.exists(path):
            return []
        out = []
        for status in self._fs.listStatus(self._path(path)):
            if files_only and not status.isFile():
                continue
            out.append(status.getPath().toUri().getPath())
        return sorted(out)

    def list_files_recursive(self, path: str) -> list[str]:
        if not self.exists(path):
            return []
        iterator = self._fs.listFiles(self._path(path), True)
        out = []
        while iterator.hasNext():
            out.append(iterator.next().getPath().toUri().getPath())
        return sorted(out)

    def read_text(self, path: str) -> str:
        stream = self._fs.open(self._path(path))
        try:
            data = self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
        finally:
            stream.close()
        return bytes(data).decode("utf-8")

    def read_json(self, path: str, default: Any = None) -> Any:
        try:
            return json.loads(self.read_text(path))
        except Exception as exc:
            if "FileNotFoundException" in _java_class(exc) or "FileNotFoundException" in str(exc):
                return default
            raise

    def modification_time_ms(self, path: str) -> int:
        return int(self._fs.getFileStatus(self._path(path)).getModificationTime())

    # -- writes -----------------------------------------------------------------------------------
    def mkdirs(self, path: str) -> None:
        self._fs.mkdirs(self._path(path))

    def delete(self, path: str, recursive: bool = True) -> bool:
        return bool(self._fs.delete(self._path(path), recursive))

    def _rename_once(self, src: str, dst: str) -> bool:
        return bool(self._fs.rename(self._path(src), self._path(dst)))

    def replace(self, src: str, dst: str) -> None:
        """Atomic rename over an existing file (``Options.Rename.OVERWRITE``)."""
        options = self._jvm.org.apache.hadoop.fs.Options.Rename
        overwrite = self._gateway.new_array(options, 1)
        overwrite[0] = options.OVERWRITE
        self._fs.rename(self._path(src), self._path(dst), overwrite)

    def write_text(self, path: str, text: str, overwrite: bool = True) -> None:
        stream = self._fs.create(self._path(path), overwrite)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def write_bytes(self, path: str, data: bytes) -> None:
        """A new file (parents made as needed) with ``data``; fails when ``path`` exists."""
        stream = self._fs.create(self._path(path), False)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def create_new(self, path: str, text: str = "", make_parents: bool = True) -> bool:
        """Create ``path`` with ``text`` unless it exists: True for the one caller that created it.

        With ``make_parents=False`` it also returns False when the parent directory does not exist.
        """
        try:
            builder = self._fs.createFile(self._path(path)).overwrite(False)
            if make_parents:
                builder = builder.recursive()
            stream = builder.build()
        except Exception as exc:
            name = _java_class(exc) + " " + str(exc)[:2000]
            if any(s in name for s in ("FileAlreadyExistsException", "FileNotFoundException",
                                       "ParentNotDirectoryException", "AlreadyBeingCreatedException")):
                return False
            raise
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()
        return True

    def write_atomic(self, path: str, text: str) -> None:
        """Replace ``path``'s content atomically: a unique temp file beside it, renamed over it."""
        tmp = temp_name(path)
        self.write_text(tmp, text, overwrite=False)
        try:
            self.replace(tmp, path)
        except Exception:
            self.delete(tmp, recursive=False)
            raise

    def write_json(self, path: str, document: Any) -> None:
        self.write_atomic(path, json.dumps(document, sort_keys=True))

    def touch(self, path: str, mtime_ms: int) -> None:
        """Set a file's modification time (a heartbeat that rewrites nothing)."""
        self._fs.setTimes(self._path(path), int(mtime_ms), -1)


# ---------------------------------------------------------------------------------------- WebHDFS
def web_create_new(client, path: str, text: str = "") -> bool:
    """Create ``path`` with ``text`` unless it exists (WebHDFS ``CREATE`` with ``overwrite=false``)."""
    from hdfs.util import HdfsError

    try:
        client.write(path, data=text, encoding="utf-8", overwrite=False)
        return True
    except HdfsError as exc:
        text = str(exc)
        # a racing creator may still hold the new file's lease: it won, this caller lost
        if any(s in text for s in ("FileAlreadyExistsException", "already exists", "AlreadyBeingCreatedException",
                                   "lease is currently owned")):
            return False
        raise


def web_replace(client, src: str, dst: str) -> None:
    """Atomic rename over an existing file (WebHDFS ``RENAME`` with ``renameoptions=OVERWRITE``)."""
    client._rename(src, destination=client.resolve(dst), renameoptions="OVERWRITE")


def web_write_atomic(client, path: str, text: str) -> None:
    """Replace ``path``'s content atomically: a unique temp file beside it, renamed over it."""
    tmp = temp_name(path)
    client.write(tmp, data=text, encoding="utf-8", overwrite=False)
    try:
        web_replace(client, tmp, path)
    except Exception:
        client.delete(tmp)
        raise


def web_write_json(client, path: str, document: Any) -> None:
    web_write_atomic(client, path, json.dumps(document, sort_keys=True))


class WebFs(_Renames):
    """The same operations as :class:`JvmFs` over WebHDFS, for code that has no JVM of its own: the
    batch layer runs its DataFrames on a Spark Connect server and its bookkeeping (locks, renames,
    hour records) from plain Python. A :class:`~lambdaflow.storage.commit_log.LogStore` too.

    Renames are WebHDFS ``RENAME``, the NameNode's ``rename``: like ``FileSystem.rename`` it moves a
    source *into* an existing destination directory, and :meth:`replace` (``renameoptions=OVERWRITE``)
    is the one that never nests.
    """

    def __init__(self, client) -> None:
        self.client = client

    # -- reads ------------------------------------------------------------------------------------
    def status(self, path: str) -> dict | None:
        return self.client.status(path, strict=False)

    def exists(self, path: str) -> bool:
        return self.status(path) is not None

    def _listing(self, path: str) -> list[tuple[str, dict]]:
        from hdfs.util import HdfsError

        try:
            return self.client.list(path, status=True)
        except HdfsError as exc:  # absent, or deleted between a caller's check and this listing
            if _not_found(exc):
                return []
            raise

    def list(self, path: str, files_only: bool = False) -> list[str]:
        """Full paths of a directory's entries; [] when it does not exist."""
        base = path.rstrip("/")
        return sorted(f"{base}/{name}" for name, status in self._listing(path)
                      if not files_only or status["type"] == "FILE")

    def list_names(self, path: str) -> list[str]:
        return [name for name, _ in self._listing(path)]

    def list_mtimes(self, path: str) -> dict[str, int]:
        return {name: int(status["modificationTime"]) for name, status in self._listing(path)}

    def list_files_recursive(self, path: str) -> list[str]:
        if not self.exists(path):
            return []
        return sorted(f"{root.rstrip('/')}/{name}" for root, _, files in self.client.walk(path) for name in files)

    def read_text(self, path: str) -> str:
        with self.client.read(path, encoding="utf-8") as reader:
            return reader.read()

    def read_json(self, path: str, default: Any = None) -> Any:
        """The document, or ``default`` when absent (also when deleted between a look-up and the read)."""
        from hdfs.util import HdfsError

        try:
            return json.loads(self.read_text(path))
        except HdfsError as exc:
            if _not_found(exc):
                return default
            raise

    def modification_time_ms(self, path: str) -> int:
        return int(self.client.status(path)["modificationTime"])

    # -- writes -----------------------------------------------------------------------------------
    def mkdirs(self, path: str) -> None:
        self.client.makedirs(path)

    def delete(self, path: str, recursive: bool = True) -> bool:
        return bool(self.client.delete(path, recursive=recursive))

    def _rename_once(self, src: str, dst: str) -> bool:
        response = self.client._rename(src, destination=self.client.resolve(dst))
        return bool(response.json()["boolean"])

    def replace(self, src: str, dst: str) -> None:
        web_replace(self.client, src, dst)

    def write_text(self, path: str, text: str, overwrite: bool = True) -> None:
        self.client.write(path, data=text, encoding="utf-8", overwrite=overwrite)

    def create_new(self, path: str, text: str = "", make_parents: bool = True) -> bool:
        """Create-if-absent (WebHDFS always creates the parents: ``make_parents=False`` is the JVM's)."""
        if not make_parents:
            raise ValueError("WebHDFS has no createNonRecursive; use JvmFs for a fenced create")
        return web_create_new(self.client, path, text)

    def write_atomic(self, path: str, text: str) -> None:
        web_write_atomic(self.client, path, text)

    def write_json(self, path: str, document: Any) -> None:
        web_write_json(self.client, path, document)

    def touch(self, path: str, mtime_ms: int) -> None:
        self.client.set_times(path, modification_time=int(mtime_ms))


def _not_found(exc: BaseException) -> bool:
    text = str(exc)
    return "FileNotFoundException" in text or "does not exist" in text or "not found" in text.lower()
