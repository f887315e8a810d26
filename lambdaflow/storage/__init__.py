"""The storage layer of the landing zone.

- :mod:`.fs` — every atomic HDFS operation lambdaflow relies on, once, for both ways it reaches
  HDFS (the NameNode RPC through Spark's JVM, ``JvmFs``, and WebHDFS from plain Python, ``WebFs``, with
  the same operations): create-if-absent, atomic replace (rename with OVERWRITE), fail-if-exists rename;
- :mod:`.lock` — the fenced single writer: epochs, the conditional commit point, the heartbeat;
- :mod:`.offset_log` — a micro-batch's Kafka offset range, read from the query's offset log.

The landing-zone layout and commit log are still in :mod:`lambdaflow.landing`.
"""
