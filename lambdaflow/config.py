"""Settings shared by every part of lambdaflow, read from the environment.

One place for addresses, names and paths (see ARCHITECTURE.md's contracts). Tests isolate
themselves by building a ``Settings`` with another topic, root or group instead of wiping
shared state: ``Settings.from_env().replace(topic="t-123", root="/lambda-test/abc")``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


# The topology commands address (lambdaflow.stack.topology): env LAMBDAFLOW_TOPOLOGY, else the one the
# last `lambdaflow up --topology` chose, remembered in this file, else "local".
TOPOLOGY_FILE = Path(os.environ.get("LAMBDAFLOW_RUN_DIR", REPO_ROOT / ".run")) / "topology"


def topology_name() -> str:
    name = _env("LAMBDAFLOW_TOPOLOGY", "")
    if not name:
        try:
            name = TOPOLOGY_FILE.read_text().strip()
        except OSError:
            name = ""
    return name or "local"


def _topology_addresses() -> tuple[str, str, str, str] | None:
    """(Kafka bootstrap, HDFS URL, WebHDFS URL, Spark Connect URL) of a topology other than the
    local one, else None (the local deployment's ports, which `KAFKA_PORT` etc. can move)."""
    if topology_name() in ("local", "single"):
        return None
    from lambdaflow.stack.topology import topology

    topo = topology(topology_name())
    return topo.kafka_bootstrap(), topo.hdfs_url(), topo.webhdfs_url(), topo.spark_connect_url()


@dataclasses.dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "localhost:9092"
    topic: str = "weblogs"
    partitions: int = 3
    hdfs_url: str = "hdfs://localhost:8020"
    webhdfs_url: str = "http://localhost:9870"
    root: str = "/lambda"
    ingest_group: str = "lambdaflow-ingest"
    # Commits of the landing zone's log folded into a roll-up at a time (0: never; lambdaflow.storage.commit_log)
    rollup_every: int = 100
    # The batch layer's Spark: a Spark Connect server (the deployment's, lambdaflow.stack.services)
    spark_connect: str = "sc://localhost:15002"

    @classmethod
    def from_env(cls) -> "Settings":
        """Addresses default to the chosen topology's (``topology_name()``): for the local one its
        ports, which `KAFKA_PORT` etc. can move. KAFKA_BOOTSTRAP, HDFS_URL, WEBHDFS_URL and
        LAMBDAFLOW_SPARK_CONNECT win over both."""
        cluster = _topology_addresses()
        if cluster:
            return cls._from_env(*cluster)
        return cls._from_env(f"localhost:{_env('KAFKA_PORT', '9092')}",
                             f"hdfs://localhost:{_env('HDFS_NAMENODE_PORT', '8020')}",
                             f"http://localhost:{_env('HDFS_HTTP_PORT', '9870')}",
                             f"sc://localhost:{_env('SPARK_CONNECT_PORT', '15002')}")

    @classmethod
    def _from_env(cls, kafka_bootstrap: str, hdfs_url: str, webhdfs_url: str, spark_connect: str) -> "Settings":
        return cls(
            kafka_bootstrap=_env("KAFKA_BOOTSTRAP", kafka_bootstrap),
            topic=_env("LAMBDAFLOW_TOPIC", cls.topic),
            partitions=int(_env("LAMBDAFLOW_PARTITIONS", str(cls.partitions))),
            hdfs_url=_env("HDFS_URL", hdfs_url).rstrip("/"),
            webhdfs_url=_env("WEBHDFS_URL", webhdfs_url).rstrip("/"),
            root=_env("LAMBDAFLOW_ROOT", cls.root).rstrip("/"),
            ingest_group=_env("LAMBDAFLOW_INGEST_GROUP", cls.ingest_group),
            rollup_every=int(_env("LAMBDAFLOW_ROLLUP_EVERY", str(cls.rollup_every))),
            spark_connect=_env("LAMBDAFLOW_SPARK_CONNECT", spark_connect),
        )

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in a child process."""
        return {
            "KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "LAMBDAFLOW_TOPIC": self.topic,
            "LAMBDAFLOW_PARTITIONS": str(self.partitions),
            "HDFS_URL": self.hdfs_url,
            "WEBHDFS_URL": self.webhdfs_url,
            "LAMBDAFLOW_ROOT": self.root,
            "LAMBDAFLOW_INGEST_GROUP": self.ingest_group,
            "LAMBDAFLOW_ROLLUP_EVERY": str(self.rollup_every),
            "LAMBDAFLOW_SPARK_CONNECT": self.spark_connect,
        }

    # -- HDFS paths (absolute paths inside HDFS, without the hdfs:// prefix) --------------------
    @property
    def landing_path(self) -> str:
        return f"{self.root}/landing/{self.topic}"

    @property
    def quarantine_path(self) -> str:
        return f"{self.root}/quarantine/{self.topic}"

    @property
    def checkpoint_path(self) -> str:
        return f"{self.root}/checkpoints/ingest"

    @property
    def batch_root(self) -> str:
        return f"{self.root}/batch"

    @property
    def speed_root(self) -> str:
        return f"{self.root}/speed"

    @property
    def lag_history_path(self) -> str:
        return f"{self.root}/monitoring/lag"

    def uri(self, path: str) -> str:
        """A full ``hdfs://`` URI for an HDFS path, for Spark."""
        return f"{self.hdfs_url}{path}"
