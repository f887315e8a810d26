"""The Hadoop FileSystem API through Spark's JVM: now :class:`lambdaflow.storage.fs.JvmFs`.

Kept so that existing imports (``from lambdaflow.jvm_fs import JvmFs``) keep working; the atomic
primitives live in :mod:`lambdaflow.storage.fs`, once.
"""

from __future__ import annotations

from lambdaflow.storage.fs import JvmFs

__all__ = ["JvmFs"]
