"""The Hadoop FileSystem API through Spark's JVM, for jobs that already run a SparkSession.

Renames and small bookkeeping files go through the NameNode's RPC here rather than WebHDFS:
faster, and atomic renames are what the landing zone's commit protocol relies on.
"""

from __future__ import annotations


class JvmFs:
    def __init__(self, spark, base_uri: str) -> None:
        jvm = spark.sparkContext._jvm
        self._jvm = jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()
        self._fs = jvm.org.apache.hadoop.fs.FileSystem.get(jvm.java.net.URI(base_uri), self._conf)

    def _path(self, path: str):
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._path(path)))

    def mkdirs(self, path: str) -> None:
        self._fs.mkdirs(self._path(path))

    def delete(self, path: str, recursive: bool = True) -> bool:
        return bool(self._fs.delete(self._path(path), recursive))

    def rename(self, src: str, dst: str, make_parent: bool = True) -> None:
        """Atomic rename (the destination's parent is created unless the caller did). Fails when
        the destination exists."""
        parent = dst.rsplit("/", 1)[0]
        if parent and make_parent:
            self.mkdirs(parent)
        if not self._fs.rename(self._path(src), self._path(dst)):
            raise OSError(f"HDFS rename {src} -> {dst} failed (missing source or existing destination?)")

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

    def write_text(self, path: str, text: str, overwrite: bool = True) -> None:
        stream = self._fs.create(self._path(path), overwrite)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def write_atomic(self, path: str, text: str) -> None:
        """Write to a ``_tmp`` file beside ``path`` and rename it into place (readers see all or nothing)."""
        parent, name = path.rsplit("/", 1)
        tmp = f"{parent}/_tmp.{name}"
        self.write_text(tmp, text)
        if self.exists(path):
            self.delete(path, recursive=False)
        self.rename(tmp, path)

    def read_text(self, path: str) -> str:
        stream = self._fs.open(self._path(path))
        try:
            data = self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
        finally:
            stream.close()
        return bytes(data).decode("utf-8")

    def modification_time_ms(self, path: str) -> int:
        return int(self._fs.getFileStatus(self._path(path)).getModificationTime())
