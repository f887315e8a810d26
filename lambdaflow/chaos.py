"""``make chaos`` / ``lambdaflow chaos``: scripted faults while events flow, each ending with a full
accounting of the landing zone and the quarantine against what the producer had acknowledged.

Runs against the cluster topology (``lambdaflow up --topology cluster``: 3 brokers, 2 DataNodes, a
Spark master with 2 workers, Airflow on PostgreSQL), which it starts when it is not up. Each fault
but ``restart-scheduler`` gets a topic (3 partitions, the topology's replication and
min.insync.replicas) and a landing root of its own, so its figures are its own; its streaming
ingest is the stack's ingest service (``spark-submit`` in a session of its own) for that root,
restarted by the harness when a fault stops it, as the ``weblogs_ingest`` DAG would.
``restart-scheduler`` runs on the deployment's own topic and landing zone with the ingest that
Airflow's ``weblogs_ingest`` DAG supervises, and checks it outlives the scheduler.

Faults (``--faults`` picks some; ``--smoke`` runs each once with small counts):

- ``kill-ingest``: kill -9 of the ingest's whole session at random moments (10 times over 1,000,000 events);
- ``kill-broker``: kill -9 of the broker leading most partitions while producing, restarted a minute later;
- ``kill-datanode``: kill -9 of a DataNode during ingest; replication restored after it returns;
- ``restart-namenode``: the NameNode stopped and started again during ingest;
- ``kill-spark-worker``: kill -9 of a Spark worker during a batch recompute, which must still succeed;
- ``restart-scheduler``: kill -9 of Airflow's scheduler during ingest and a ``weblogs_full_recompute`` run;
- ``lost-checkpoint``: the checkpoint deleted while the ingest is stopped (the upgrade case);
- ``malformed-flood``: a burst where 90 % of the records are malformed, every kind the producer injects.

Each fault's row: ``produced`` (acked by Kafka), ``landed``, ``quarantined``, ``duplicated`` (rows
beyond one per (partition, offset)), ``lost`` (offsets of the topic found nowhere, plus acked
records missing from the topic), ``recovery_s`` (the longest time from a fault until the landing
zone advanced again), and details. Written to ``bench/results/chaos-latest.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import random
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from lambdaflow import hdfs, kafka_admin, timeutil
from lambdaflow.config import REPO_ROOT, Settings
from lambdaflow.errors import UserError

FAULTS = ("kill-ingest", "kill-broker", "kill-datanode", "restart-namenode", "kill-spark-worker",
          "restart-scheduler", "lost-checkpoint", "malformed-flood")
OUTPUT = REPO_ROOT / "bench" / "results" / "chaos-latest.json"
CHAOS_ROOT = "/lambda-chaos"


def say(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How hard one fault is driven: its occurrences, the events produced meanwhile and their rate,
    the pause before each occurrence and how long a killed daemon stays down."""
    occurrences: int
    events: int
    rate: float
    gap_s: tuple[float, float] = (5.0, 20.0)
    down_s: float = 0.0
    bad_fraction: float = 0.01


FULL = {
    "kill-ingest": Plan(10, 1_000_000, 2000, gap_s=(5, 30)),  # 500 s of producing: every kill lands mid-stream
    "kill-broker": Plan(1, 200_000, 2000, gap_s=(20, 30), down_s=60),
    "kill-datanode": Plan(1, 150_000, 2000, gap_s=(15, 25), down_s=30),
    "restart-namenode": Plan(1, 150_000, 2000, gap_s=(15, 25), down_s=5),
    "kill-spark-worker": Plan(1, 100_000, 0, gap_s=(3, 6), down_s=10),
    "restart-scheduler": Plan(1, 100_000, 2000, gap_s=(10, 20), down_s=5),
    "lost-checkpoint": Plan(1, 100_000, 2000, gap_s=(15, 25)),
    "malformed-flood": Plan(1, 100_000, 5000, bad_fraction=0.9),
}
SMOKE = {
    "kill-ingest": Plan(1, 6000, 500, gap_s=(3, 6)),
    "kill-broker": Plan(1, 6000, 500, gap_s=(3, 5), down_s=5),
    "kill-datanode": Plan(1, 6000, 500, gap_s=(3, 5), down_s=5),
    "restart-namenode": Plan(1, 6000, 500, gap_s=(3, 5), down_s=2),
    "kill-spark-worker": Plan(1, 6000, 0, gap_s=(1, 2), down_s=2),
    "restart-scheduler": Plan(1, 6000, 500, gap_s=(3, 5), down_s=2),
    "lost-checkpoint": Plan(1, 6000, 500, gap_s=(3, 5)),
    "malformed-flood": Plan(1, 6000, 1000, bad_fraction=0.9),
}


# ------------------------------------------------------------------------------------ helpers
def kill9(sid: int) -> int:
    """SIGKILL to every process of a daemon's session (a JVM and whatever it started); returns how many."""
    from lambdaflow.stack.daemon import session_members

    members = session_members(sid)
    for pid in members:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(members)


def landed_position(settings: Settings, client=None) -> int:
    """Records the landing zone's commit log has accounted for (landed or quarantined), all partitions."""
    from lambdaflow.storage import commit_log

    try:
        return sum(commit_log.totals(client or hdfs.client(settings), settings.landing_path)["positions"].values())
    except Exception:  # HDFS down or the log not there yet: nothing known to have landed
        return -1


def topic_end(settings: Settings) -> int:
    return sum(kafka_admin.end_offsets(settings).values())


class Producing:
    """The producer in a thread: ``produce()``'s summary once it is done."""

    def __init__(self, settings: Settings, plan: Plan, start: dt.datetime | None = None,
                 time_multiplier: float | None = None) -> None:
        from lambdaflow.producer import produce

        self.summary: dict = {}
        self.error: BaseException | None = None
        kwargs = {"count": plan.events, "rate": plan.rate, "bad_fraction": plan.bad_fraction, "progress": False}
        if start is not None:
            kwargs.update(start=start, time_multiplier=time_multiplier)

        def work() -> None:
            try:
                self.summary = produce(settings, **kwargs)
            except BaseException as exc:  # reported with the fault, never swallowed
                self.error = exc

        self.thread = threading.Thread(target=work, name="chaos-producer", daemon=True)
        self.thread.start()

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self) -> dict:
        self.thread.join()
        if self.error:
            raise self.error
        return self.summary


# ------------------------------------------------------------------------------------ harness
class Harness:
    def __init__(self, plans: dict[str, Plan], run_id: str | None = None, seed: int | None = None) -> None:
        from lambdaflow.stack import cluster

        self.cluster = cluster
        self.plans = plans
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.random = random.Random(seed)
        self.base = cluster.settings()
        self._spark = None

    # -- set-up ----------------------------------------------------------------------------------
    def isolated(self, fault: str) -> Settings:
        """A topic and landing root of the fault's own, the topic as the topology makes ``weblogs``."""
        topo = self.cluster.TOPOLOGY.topic
        settings = self.base.replace(topic=f"chaos-{fault}-{self.run_id}", root=f"{CHAOS_ROOT}/{self.run_id}/{fault}")
        kafka_admin.ensure_topic(settings, partitions=topo.partitions, replication_factor=topo.replication_factor,
                                 configs={"min.insync.replicas": str(topo.min_insync_replicas)})
        client = hdfs.client(settings)
        from lambdaflow.stack.services import hdfs_tree

        for path in hdfs_tree(settings):
            client.makedirs(path)
        return settings

    def ingest(self, settings: Settings):
        from lambdaflow.stack import ingest_service

        return ingest_service.daemon(settings, max_offsets_per_trigger=50_000)

    def spark(self):
        """The batch layer's Spark Connect session (accounting and recomputes): no application of
        its own competing for the workers' cores."""
        if self._spark is None:
            from lambdaflow.spark import connect_session

            self._spark = connect_session(self.base)
        return self._spark

    def supervise(self, ingest) -> bool:
        """Start the ingest when it is not running (as weblogs_ingest would); True when it had to."""
        from lambdaflow.stack.daemon import ServiceError

        if ingest.pid() is not None:
            return False
        for attempt in range(1, 6):
            try:
                ingest.start(quiet=True)
                return True
            except ServiceError as exc:  # e.g. HDFS still in safe mode right after a NameNode restart
                say(f"  ingest did not start (attempt {attempt}): {str(exc).splitlines()[0]}")
                time.sleep(10)
        raise UserError(f"the ingest does not start again; see {ingest.log_file}")

    def wait_landing_again(self, settings: Settings, ingest, before: int, producer: Producing | None,
                           timeout_s: float = 600) -> float:
        """Seconds from now until the landing zone's commit log moves past ``before`` (or has caught
        up with the topic once nothing more is produced), supervising the ingest meanwhile."""
        started = time.monotonic()
        client = hdfs.client(settings)
        while time.monotonic() - started < timeout_s:
            if ingest is not None:
                self.supervise(ingest)
            position = landed_position(settings, client)
            if position > before:
                return round(time.monotonic() - started, 1)
            if producer is not None and producer.done and position >= 0:
                try:
                    if position >= topic_end(settings):
                        return round(time.monotonic() - started, 1)
                except Exception:
                    pass
            time.sleep(0.5)
        raise UserError(f"the landing zone of {settings.topic} did not advance within {timeout_s:.0f}s")

    def drain(self, settings: Settings, ingest, timeout_s: float = 1200) -> None:
        """Until the commit log accounts for every record in the topic."""
        deadline = time.monotonic() + timeout_s
        client = hdfs.client(settings)
        last = None
        while time.monotonic() < deadline:
            if ingest is not None:
                self.supervise(ingest)
            position, end = landed_position(settings, client), topic_end(settings)
            if position >= end:
                return
            if last is None or time.monotonic() - last > 30:
                say(f"  draining {settings.topic}: {max(position, 0)}/{end}")
                last = time.monotonic()
            time.sleep(1)
        raise UserError(f"the ingest of {settings.topic} did not catch up within {timeout_s:.0f}s")

    def account(self, fault: str, settings: Settings, plan: Plan, produced: dict, recoveries: list[float],
                details: dict) -> dict:
        from lambdaflow.monitoring import accounting

        result = accounting.account(self.spark(), settings)
        acked = int(produced.get("acked", 0))
        lost = result["missing"] + max(0, acked - result["in_topic"])
        return {"fault": fault, "occurrences": len(recoveries), "produced": acked, "landed": result["landed"],
                "quarantined": result["quarantined"], "duplicated": result["duplicated"], "lost": lost,
                "recovery_s": max(recoveries) if recoveries else None,
                "details": {"recoveries_s": recoveries, "in_topic": result["in_topic"],
                            "outside_topic": result["outside"], "producer_failed": produced.get("failed"),
                            "bad_injected": produced.get("bad_injected"), "topic": settings.topic,
                            "root": settings.root, **details}}

    # -- one fault -------------------------------------------------------------------------------
    def run_fault(self, fault: str) -> dict:
        plan = self.plans[fault]
        say(f"{fault}: {plan.occurrences} occurrence(s) over {plan.events} events at "
            f"{'max' if not plan.rate else f'{plan.rate:.0f}/s'}")
        if fault == "restart-scheduler":
            return self.restart_scheduler(plan)
        settings = self.isolated(fault)
        ingest = self.ingest(settings)
        try:
            return self._run_isolated(fault, plan, settings, ingest)
        finally:
            ingest.stop()  # also when the fault failed: no stray stream keeps a cluster's cores

    def _run_isolated(self, fault: str, plan: Plan, settings: Settings, ingest) -> dict:
        started = time.monotonic()
        self.supervise(ingest)
        details: dict = {"ingest_start_s": round(time.monotonic() - started, 1)}
        if fault == "kill-spark-worker":
            return self.kill_spark_worker(settings, ingest, plan, details)
        before, t0 = landed_position(settings), time.monotonic()
        producer = Producing(settings, plan)
        recoveries = []
        inject = INJECTORS.get(fault)
        if not inject:  # the fault is the input itself (malformed-flood): until its records land
            recoveries.append(self.wait_landing_again(settings, ingest, before, producer))
        for i in range(plan.occurrences if inject else 0):
            time.sleep(self.random.uniform(*plan.gap_s))
            before = landed_position(settings)
            t0 = time.monotonic()
            note = inject(self, settings, ingest, plan)
            if note:
                details.setdefault("faults", []).append(note)
            recoveries.append(round(time.monotonic() - t0 + self.wait_landing_again(settings, ingest, before, producer), 1))
            say(f"  {fault} {i + 1}/{plan.occurrences}: landing again after {recoveries[-1]}s")
        produced = producer.join()
        self.drain(settings, ingest)
        if fault == "kill-datanode":
            details["replication_restored_s"] = self.wait_replicated()
        ingest.stop()
        row = self.account(fault, settings, plan, produced, recoveries, details)
        if fault == "malformed-flood":
            row["occurrences"] = 1
            bad = sum((produced.get("bad_injected") or {}).values())
            row["details"]["every_kind_injected"] = all(n > 0 for n in (produced.get("bad_injected") or {}).values())
            row["details"]["quarantined_equals_injected"] = row["quarantined"] == bad and not produced.get("failed")
        return row

    # -- the faults ------------------------------------------------------------------------------
    def kill_ingest(self, settings: Settings, ingest, plan: Plan) -> dict:
        pid = ingest.recorded_pid()
        return {"killed_processes": kill9(pid) if pid else 0}

    def kill_broker(self, settings: Settings, ingest, plan: Plan) -> dict:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=5000)
        try:
            (topic,) = admin.describe_topics([settings.topic])
        finally:
            admin.close()
        leaders = [p.get("leader_id", p.get("leader")) for p in topic["partitions"]]
        node = max(set(leaders), key=leaders.count)
        name = f"kafka-{node}"
        daemon = self.cluster.SERVICES[name]
        kill9(daemon.recorded_pid())
        say(f"  killed {name} (leader of {leaders.count(node)} of {len(leaders)} partitions); back in {plan.down_s:.0f}s")
        time.sleep(plan.down_s)
        daemon.launch(quiet=True)
        daemon.wait_ready()
        return {"broker": name, "partitions_led": leaders.count(node)}

    def kill_datanode(self, settings: Settings, ingest, plan: Plan) -> dict:
        name = self.random.choice([s.name for s in self.cluster.TOPOLOGY.by_role("hdfs-datanode")])
        daemon = self.cluster.SERVICES[name]
        kill9(daemon.recorded_pid())
        say(f"  killed {name}; back in {plan.down_s:.0f}s")
        time.sleep(plan.down_s)
        daemon.launch(quiet=True)
        daemon.wait_ready()
        return {"datanode": name}

    def restart_namenode(self, settings: Settings, ingest, plan: Plan) -> dict:
        daemon = self.cluster.SERVICES["namenode"]
        t0 = time.monotonic()
        daemon.stop()
        time.sleep(plan.down_s)
        daemon.launch(quiet=True)
        daemon.wait_ready()
        return {"namenode_down_s": round(time.monotonic() - t0, 1)}

    def lost_checkpoint(self, settings: Settings, ingest, plan: Plan) -> dict:
        ingest.stop()
        client = hdfs.client(settings)
        deleted = bool(client.delete(settings.checkpoint_path, recursive=True))
        return {"checkpoint_deleted": deleted}

    def wait_replicated(self, timeout_s: float = 600) -> float:
        """Seconds until the NameNode reports no under-replicated block."""
        started = time.monotonic()
        bean = "Hadoop:service=NameNode,name=FSNamesystem"
        while time.monotonic() - started < timeout_s:
            try:
                if int(self.cluster.namenode_jmx(self.base.webhdfs_url, bean).get("UnderReplicatedBlocks", 1)) == 0:
                    return round(time.monotonic() - started, 1)
            except Exception:
                pass
            time.sleep(2)
        raise UserError(f"blocks still under-replicated {timeout_s:.0f}s after the DataNode returned")

    def kill_spark_worker(self, settings: Settings, ingest, plan: Plan, details: dict) -> dict:
        """Events over closed hours, landed; then a full recompute on the Spark Connect server with
        a worker killed under it: it must still succeed and count every landed row."""
        from lambdaflow.batch.recompute import recompute_all

        hours = 24
        start = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=hours + 3)
        from lambdaflow.events import NOMINAL_RATE

        span_s = plan.events / (plan.rate or NOMINAL_RATE)  # wall-clock seconds of simulated time
        producer = Producing(settings, plan, start=start, time_multiplier=hours * 3600 / span_s)
        produced = producer.join()
        self.drain(settings, ingest)
        result: dict = {}

        def recompute() -> None:
            try:
                result["records"] = recompute_all(self.spark(), settings, log=lambda m: None)
            except BaseException as exc:
                result["error"] = exc

        worker = self.random.choice([s.name for s in self.cluster.TOPOLOGY.by_role("spark-worker")])
        daemon = self.cluster.SERVICES[worker]
        t0 = time.monotonic()
        thread = threading.Thread(target=recompute, name="chaos-recompute", daemon=True)
        thread.start()
        time.sleep(self.random.uniform(*plan.gap_s))
        killed_during = thread.is_alive()
        kill9(daemon.recorded_pid())
        say(f"  killed {worker} {'during' if killed_during else 'after'} the recompute")
        thread.join()
        recovery = round(time.monotonic() - t0, 1)
        time.sleep(plan.down_s)
        daemon.launch(quiet=True)
        daemon.wait_ready()
        ingest.stop()
        row = self.account("kill-spark-worker", settings, plan, produced, [recovery], details)
        records = result.get("records") or []
        row["details"].update({
            "worker": worker, "killed_during_recompute": killed_during,
            "recompute_succeeded": "error" not in result,
            "recompute_error": str(result["error"]).splitlines()[0] if "error" in result else None,
            "hours_recomputed": len(records), "batch_rows": sum(r["landed_rows"] for r in records),
            "batch_rows_equal_landed": sum(r["landed_rows"] for r in records) == row["landed"],
        })
        return row

    def restart_scheduler(self, plan: Plan) -> dict:
        """The deployment's own pipeline under Airflow: weblogs_ingest supervises the stream; a
        weblogs_full_recompute run is going when the scheduler is killed."""
        from lambdaflow import stack
        from lambdaflow.stack import ingest_service

        settings = self.base
        self.cluster.up(quiet=True)
        token = stack.api_token()
        for dag_id in ("weblogs_ingest", "weblogs_full_recompute"):
            stack.api("PATCH", f"/dags/{dag_id}", {"is_paused": False}, token=token)
        deadline = time.monotonic() + 600
        while ingest_service.state(settings)["state"] != "running":
            if time.monotonic() > deadline:
                raise UserError("weblogs_ingest did not start the streaming ingest within 10 minutes")
            time.sleep(2)
        ingest = ingest_service.daemon(settings)
        self.wait_landing_again(settings, None, landed_position(settings) - 1, None)  # started and landing
        ingest_pid = ingest.pid()
        producer = Producing(settings, plan)
        run_id = stack.api("POST", "/dags/weblogs_full_recompute/dagRuns", {"logical_date": None},
                           token=token)["dag_run_id"]
        deadline = time.monotonic() + 300
        while stack.api("GET", f"/dags/weblogs_full_recompute/dagRuns/{run_id}", token=token)["state"] != "running":
            if time.monotonic() > deadline:
                raise UserError("weblogs_full_recompute did not start running")
            time.sleep(1)
        time.sleep(self.random.uniform(*plan.gap_s))
        scheduler = self.cluster.SERVICES["airflow-scheduler"]
        before = landed_position(settings)
        t0 = time.monotonic()
        os.kill(scheduler.recorded_pid(), signal.SIGKILL)  # the scheduler process itself, as `kill -9 <pid>`
        say("  killed the Airflow scheduler (kill -9)")
        time.sleep(plan.down_s)
        self.cluster.up(services=["airflow-scheduler"], quiet=True)
        scheduler_back = round(time.monotonic() - t0, 1)
        recovery = round(time.monotonic() - t0 + self.wait_landing_again(settings, None, before, producer), 1)
        produced = producer.join()
        self.drain(settings, None)
        deadline = time.monotonic() + 900
        while (state := stack.api("GET", f"/dags/weblogs_full_recompute/dagRuns/{run_id}",
                                  token=stack.api_token())["state"]) not in ("success", "failed"):
            if time.monotonic() > deadline:
                break
            time.sleep(3)
        return self.account("restart-scheduler", settings, plan, produced, [recovery], {
            "scheduler_back_s": scheduler_back, "ingest_outlived_scheduler": ingest.pid() == ingest_pid,
            "full_recompute_run": run_id, "full_recompute_state": state})

    def close(self) -> None:
        if self._spark is not None:
            self._spark.stop()


INJECTORS: dict[str, Callable] = {
    "kill-ingest": Harness.kill_ingest,
    "kill-broker": Harness.kill_broker,
    "kill-datanode": Harness.kill_datanode,
    "restart-namenode": Harness.restart_namenode,
    "lost-checkpoint": Harness.lost_checkpoint,
}


# ------------------------------------------------------------------------------------ report
def table(document: dict) -> str:
    columns = ("fault", "occurrences", "produced", "landed", "quarantined", "duplicated", "lost", "recovery_s")
    rows = [[str(f.get(c)) for c in columns] for f in document["faults"]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def ok(document: dict) -> bool:
    return all(f["lost"] == 0 and f["duplicated"] == 0 and not f.get("error") for f in document["faults"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS), help="faults to run (default: all)")
    parser.add_argument("--smoke", action="store_true", help="each fault once with small counts (the test suite's)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random moments")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where the JSON goes (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from lambdaflow.config import topology_name

    if topology_name() != "cluster":
        raise UserError("chaos runs on the cluster topology: `make chaos` (or LAMBDAFLOW_TOPOLOGY=cluster "
                        "lambdaflow chaos); faults such as a broker or a DataNode lost need its redundancy")
    from lambdaflow.stack import cluster

    say("bringing the cluster up (a no-op for what is already up)")
    cluster.up(quiet=True)
    harness = Harness(SMOKE if args.smoke else FULL, seed=args.seed)
    document = {"faults": [], "events_total": 0, "started_at": timeutil.iso(dt.datetime.now(dt.timezone.utc)),
                "topology": "cluster", "smoke": bool(args.smoke), "run_id": harness.run_id}
    try:
        for fault in args.faults:
            t0 = time.monotonic()
            try:
                row = harness.run_fault(fault)
            except Exception as exc:  # the fault's row says what broke; the others still run
                say(f"{fault} FAILED: {exc}")
                row = {"fault": fault, "occurrences": 0, "produced": 0, "landed": 0, "quarantined": 0,
                       "duplicated": None, "lost": None, "recovery_s": None, "error": f"{type(exc).__name__}: {exc}"}
            row["elapsed_s"] = round(time.monotonic() - t0, 1)
            document["faults"].append(row)
            document["events_total"] += row["produced"] or 0
            say(f"{fault}: produced {row['produced']}, landed {row['landed']}, quarantined {row['quarantined']}, "
                f"duplicated {row['duplicated']}, lost {row['lost']}, recovery {row['recovery_s']}s")
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(document, indent=2) + "\n")  # after each fault: progress survives
    finally:
        harness.close()
    document["finished_at"] = timeutil.iso(dt.datetime.now(dt.timezone.utc))
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(table(document))
    print(f"written to {args.output}")
    good = ok(document)
    print("RESULT: " + ("OK: nothing lost, nothing twice, under every fault" if good
                        else "FAILED: a fault lost or duplicated records, or did not complete"))
    return 0 if good else 1
