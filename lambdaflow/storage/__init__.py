"""The storage layer: HDFS write primitives (:mod:`.fs`) and the fenced single writer (:mod:`.lock`).

Every atomic HDFS operation lambdaflow relies on lives in :mod:`lambdaflow.storage.fs`, once, for
both ways lambdaflow reaches HDFS (the NameNode RPC through Spark's JVM, and WebHDFS from plain
Python): create-if-absent, atomic replace (rename with OVERWRITE), fail-if-exists rename.
"""
