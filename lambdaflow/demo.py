"""`make demo`: the whole lambda pipeline end to end, driven through Airflow's REST API.

1. starts the deployment (Kafka, HDFS, Airflow) and waits for the DAGs to be parsed;
2. unpauses `weblogs_ingest` (it starts the long-running streaming job, a service of the stack
   that outlives Airflow restarts) and `weblogs_lag_monitor`;
3. triggers `weblogs_producer` with Params that simulate several hours of traffic in under a
   minute (time multiplier), with a small fraction of malformed records;
4. follows progress (produced, landed, lag) until the ingest has caught up and the lag monitor
   has a green run;
5. backfills `weblogs_batch` over the closed simulated hours through Airflow's backfill API (the
   REST call the UI's Backfill button makes; the newest hour is left to the speed layer) and waits
   for the runs;
6. prints the accounting (produced = landed + quarantined, duplicates), the final lag, a serving
   query answer with its batch/speed split, and where to look. Exit 0 only if the accounting holds.

The deployment stays up afterwards; `make down` stops it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time

from lambdaflow import hdfs, kafka_admin, landing, stack, timeutil
from lambdaflow.config import Settings, topology_name
from lambdaflow.errors import UserError
from lambdaflow.storage import commit_log

DAGS = ["weblogs_producer", "weblogs_ingest", "weblogs_lag_monitor", "weblogs_batch"]
HOUR = dt.timedelta(hours=1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hours", type=int, default=4, help="simulated hours of traffic (default %(default)s)")
    parser.add_argument("--events", type=int, default=30_000, help="events to produce (default %(default)s)")
    parser.add_argument("--rate", type=float, default=1000, help="events/s (default %(default)s)")
    parser.add_argument("--bad-fraction", type=float, default=0.01, help="malformed records (default %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="producer seed (default: a new one each run)")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds (default %(default)s)")


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


iso = timeutil.iso


SUPERVISE_EVERY_S = 15


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings = stack.default_settings()
        self.topology = topology_name()
        self.deadline = time.monotonic() + args.timeout
        self.token = ""

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """Call the REST API; log in again when the token has expired (401); when the api-server is
        unreachable (a daemon died), bring the deployment's dead daemons back (``lambdaflow up``) and
        try again: the streaming ingest outlives Airflow, so the demo's accounting goes on."""
        for attempt in range(1, 5):
            try:
                return stack.api(method, path, body, token=self.token)
            except Exception as exc:
                if getattr(exc, "code", None) == 401 and attempt < 4:
                    self.token = stack.api_token()
                    continue
                if getattr(exc, "code", None) is None and isinstance(exc, OSError) and attempt < 4:
                    say(f"  Airflow API unreachable ({exc}); restarting what died (lambdaflow up)")
                    try:
                        self.up(quiet=True)
                        self.token = stack.api_token()
                    except (stack.ServiceError, OSError) as again:
                        say(f"  not yet: {str(again).splitlines()[0]}")
                    continue
                detail = exc.read().decode(errors="replace") if hasattr(exc, "read") else ""
                raise UserError(f"Airflow API {method} {path} failed: {exc} {detail}") from exc
        raise AssertionError("unreachable")

    def wait(self, what: str, check, every: float = 3.0, report=None):
        supervised = time.monotonic()
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > self.deadline:
                raise UserError(f"timed out waiting for {what}")
            if report:
                report()
            if time.monotonic() - supervised > SUPERVISE_EVERY_S:
                # a daemon that died (kill -9 of the scheduler...) is started again, as a process
                # supervisor would; a no-op taking well under a second while everything is up
                try:
                    restarted = [name for name, started in self.up(quiet=True).items() if started]
                except stack.ServiceError as exc:  # e.g. another daemon died while this one booted
                    say(f"  restarting what died did not finish ({str(exc).splitlines()[0]}); trying again")
                    restarted = []
                if restarted:
                    say(f"  restarted {', '.join(restarted)} (found dead)")
                supervised = time.monotonic()
            time.sleep(every)

    def up(self, quiet: bool = False) -> dict[str, bool]:
        """``lambdaflow up`` of the topology the demo runs on (the cluster's in its own environment,
        which `lambdaflow demo` enters: lambdaflow.cli)."""
        if self.topology == "cluster":
            from lambdaflow.stack import cluster

            return cluster.up(quiet=quiet)
        return stack.up(quiet=quiet)

    # ---------------------------------------------------------------------------------- steps
    def run(self) -> int:
        say(f"step 1/6: starting Kafka, HDFS, Spark, PostgreSQL and Airflow of the {self.topology} topology "
            "(a no-op for what is already up)")
        self.up()
        self.token = stack.api_token()
        stack.wait_for_dags(DAGS, timeout_s=240)
        client = hdfs.client(self.settings)
        before_ends = kafka_admin.end_offsets(self.settings)
        # What the commit log holds now: this run's records are what it gains (a cumulative roll-up
        # has no per-batch list to filter by offsets).
        self.before = commit_log.totals(client, self.settings.landing_path)

        say("step 2/6: unpausing weblogs_ingest (streaming job), weblogs_lag_monitor and weblogs_producer")
        stale = self.api("GET", "/dags/weblogs_producer/dagRuns?state=queued&state=running&limit=100")["dag_runs"]
        for run in stale:  # left by an interrupted demo: they would produce alongside this one
            self.api("PATCH", f"/dags/weblogs_producer/dagRuns/{run['dag_run_id']}", {"state": "failed"})
        for dag_id in ("weblogs_ingest", "weblogs_lag_monitor", "weblogs_producer"):
            self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

        # the simulated window ends a minute before now: its last, still open hour is the speed layer's
        end = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) - dt.timedelta(minutes=1)
        start = end - self.args.hours * HOUR
        duration_s = self.args.events / self.args.rate
        multiplier = self.args.hours * 3600 / duration_s
        conf = {"count": self.args.events, "rate": self.args.rate, "start": iso(start),
                "time_multiplier": round(multiplier, 3), "bad_fraction": self.args.bad_fraction}
        if self.args.seed is not None:
            conf["seed"] = self.args.seed
        say(f"step 3/6: triggering weblogs_producer: {self.args.events} events at {self.args.rate:.0f}/s, "
            f"simulated {iso(start)} .. {iso(end)} (x{multiplier:.0f})")
        producer_run = self.api("POST", "/dags/weblogs_producer/dagRuns",
                                {"logical_date": None, "conf": conf})["dag_run_id"]

        def progress() -> None:
            ends = kafka_admin.end_offsets(self.settings)
            positions = landing.positions(client, self.settings.landing_path)
            produced = sum(ends.values()) - sum(before_ends.values())
            lag = sum(max(0, e - positions.get(p, 0)) for p, e in ends.items())
            handled = sum(positions.values()) - sum(min(before_ends.get(p, 0), positions.get(p, 0)) for p in positions)
            say(f"  produced {produced}, landed or quarantined {handled}, lag {lag}")

        state = self.wait("weblogs_producer", lambda: self._finished("weblogs_producer", producer_run),
                          every=5, report=progress)
        if state != "success":
            raise UserError(f"weblogs_producer run {producer_run} ended {state}; see the Airflow UI")
        summary = self._xcom("weblogs_producer", producer_run, "produce_events")

        say("step 4/6: waiting for the ingest to land everything and the lag monitor to turn green")
        self.wait("the ingest to catch up", lambda: landing.positions(client, self.settings.landing_path)
                  == kafka_admin.end_offsets(self.settings), every=3, report=progress)
        lag_run = self.api("POST", "/dags/weblogs_lag_monitor/dagRuns", {"logical_date": None})["dag_run_id"]
        lag_state = self.wait("weblogs_lag_monitor", lambda: self._finished("weblogs_lag_monitor", lag_run), every=5)

        # the serving query before the batch layer has run: recent hours come from the speed layer
        from lambdaflow import serving
        from lambdaflow.events import Catalogue

        product = Catalogue.load().products[0]
        window = (int(start.replace(minute=0).timestamp() * 1000), int(time.time() * 1000) + 1)
        speed_rows = serving.query(None, self.settings, "activity", product, *window)
        first_hour = start.replace(minute=0)
        last_batch_hour = end.replace(minute=0) - HOUR  # the newest closed hour
        say(f"step 5/6: backfilling weblogs_batch over the closed hours {iso(first_hour)} .. "
            f"{iso(last_batch_hour + HOUR)} (the open hour from {iso(last_batch_hour + HOUR)} stays with "
            f"the speed layer)")
        backfill = self._backfill(first_hour, last_batch_hour)
        say(f"  backfill {backfill['id']} created (POST /api/v2/backfills): logical dates "
            f"{iso(first_hour)} .. {iso(last_batch_hour)} (hour starts), reprocessing hours that already ran")
        self.wait(f"backfill {backfill['id']}", lambda: self._backfill_done(backfill["id"], first_hour, last_batch_hour),
                  every=10, report=lambda: say(f"  batch runs: {self._hour_states(first_hour, last_batch_hour)}"))
        batch_states = self._hour_states(first_hour, last_batch_hour)

        say("step 6/6: accounting")
        return self.summarise(summary, before_ends, lag_state, batch_states, product, window, speed_rows)

    def _finished(self, dag_id: str, run_id: str) -> str | None:
        state = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    def _xcom(self, dag_id: str, run_id: str, task_id: str) -> dict:
        entry = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) else value

    def _backfill(self, first_hour: dt.datetime, last_hour: dt.datetime) -> dict:
        """A backfill of weblogs_batch over the hours starting first_hour .. last_hour, as the UI's
        Backfill button creates it (its dates are logical dates: a run's is the start of its hour;
        its run id shows the end). Hours that already ran (the scheduler's catch-up, an earlier
        demo) are recomputed, which gives the same numbers."""
        for old in self.api("GET", "/backfills?dag_id=weblogs_batch&limit=100").get("backfills", []):
            if not old.get("completed_at"):  # left by an interrupted demo: one backfill per DAG at a time
                self.api("PUT", f"/backfills/{old['id']}/cancel")
        # created while the DAG is still paused, so that the scheduler's catch-up does not race it
        # for the same hours; unpausing then lets the backfill's runs start
        backfill = self.api("POST", "/backfills", {
            "dag_id": "weblogs_batch", "from_date": iso(first_hour), "to_date": iso(last_hour),
            "reprocess_behavior": "completed", "max_active_runs": 2,
            "dag_run_conf": {"allowed_lateness_seconds": 0}})
        self.api("PATCH", "/dags/weblogs_batch", {"is_paused": False})
        return backfill

    def _hour_runs(self, first_hour: dt.datetime, last_hour: dt.datetime) -> list[dict]:
        query = f"logical_date_gte={iso(first_hour)}&logical_date_lte={iso(last_hour)}&limit=100"
        return self.api("GET", f"/dags/weblogs_batch/dagRuns?{query}")["dag_runs"]

    def _hour_states(self, first_hour: dt.datetime, last_hour: dt.datetime) -> dict[str, int]:
        counts: dict[str, int] = {}
        for run in self._hour_runs(first_hour, last_hour):
            counts[run["state"]] = counts.get(run["state"], 0) + 1
        return counts

    def _backfill_done(self, backfill_id: int, first_hour: dt.datetime, last_hour: dt.datetime) -> bool:
        """The backfill completed and every hour's run (its own, or one it found in flight) finished."""
        if not self.api("GET", f"/backfills/{backfill_id}").get("completed_at"):
            return False
        runs = self._hour_runs(first_hour, last_hour)
        expected = int((last_hour - first_hour) / HOUR) + 1
        return len(runs) >= expected and all(r["state"] in ("success", "failed") for r in runs)

    # ---------------------------------------------------------------------------------- summary
    def summarise(self, produced: dict, before_ends: dict[int, int], lag_state: str, batch_states: dict,
                  product: str, window: tuple[int, int], speed_rows: list[dict]) -> int:
        from lambdaflow import lag as lag_monitor
        from lambdaflow import serving

        client = hdfs.client(self.settings)
        now = commit_log.totals(client, self.settings.landing_path)
        before = self.before
        landed = now["landed_rows"] - before["landed_rows"]
        quarantined = now["quarantined_rows"] - before["quarantined_rows"]
        reasons = {r: n - before["quarantine_reasons"].get(r, 0) for r, n in now["quarantine_reasons"].items()
                   if n != before["quarantine_reasons"].get(r, 0)}
        # Records this run handled: from where the landing zone stood at the start to the log's end
        # (equal to what was produced when the ingest was caught up at the start).
        received = sum(kafka_admin.end_offsets(self.settings).values()) - sum(
            before["positions"].get(p, 0) for p in before_ends)
        everything = now["landed_rows"] + now["quarantined_rows"]
        kafka_total = sum(kafka_admin.end_offsets(self.settings).values()) - sum(
            kafka_admin.beginning_offsets(self.settings).values())
        duplicates = self._duplicates()
        report = lag_monitor.monitor(self.settings, record=False)
        rows = serving.query(None, self.settings, "activity", product, *window)
        acked = int(produced.get("acked", 0))
        ok = (received == landed + quarantined and acked <= received and everything == kafka_total and duplicates == 0 and report["total_lag"] == 0
              and lag_state == "success" and batch_states.get("success", 0) > 0 and set(batch_states) == {"success"})
        password = stack.services.admin_password()
        lines = [
            "",
            "=" * 78,
            "lambdaflow demo summary",
            "=" * 78,
            f"produced (acked by Kafka)      {acked}   (bad records injected: {produced.get('bad_injected')})",
            f"received by Kafka meanwhile    {received}   (this run's producer and anyone else's)",
            f"landed in the landing zone     {landed}",
            f"quarantined                    {quarantined}   by reason: {reasons}",
            f"landed + quarantined           {landed + quarantined}   {'=' if received == landed + quarantined else '!='} received",
            f"all time: landed + quarantined {everything}   {'=' if everything == kafka_total else '!='} "
            f"records in the topic ({kafka_total})",
            f"duplicate (partition, offset)  {duplicates}",
            f"final lag                      {report['total_lag']} records, status {report['status']}",
            f"lag monitor run                {lag_state}",
            f"batch hours recomputed         {batch_states}",
            f"serving query `lambdaflow query activity --product '{product}'` before the batch runs:",
            *map(_row, speed_rows),
            "  ... and after it (hours up to the batch watermark now come from the batch layer):",
            *map(_row, rows),
            f"Airflow UI                     {stack.services.airflow_url()}  (user admin, password {password})",
            f"dashboard                      {stack.services.airflow_url()}/lambdaflow/",
            f"the deployment stays up; stop it with `make down`",
            f"RESULT: {'OK, every record accounted for exactly once' if ok else 'FAILED: the accounting does not hold'}",
        ]
        print("\n".join(lines), flush=True)
        return 0 if ok else 1

    def _duplicates(self) -> int:
        """(partition, offset) pairs present more than once across landing zone and quarantine, at rest
        (through the batch layer's Spark Connect server: on a cluster no other application has cores)."""
        from lambdaflow.monitoring import accounting
        from lambdaflow.spark import batch_session

        spark = batch_session("lambdaflow-demo-check", self.settings, log=say)
        try:
            return accounting.account(spark, self.settings)["duplicated"]
        finally:
            spark.stop()


def _row(r: dict) -> str:
    hour = dt.datetime.fromtimestamp(r["timestamp_hour"] / 1000, dt.timezone.utc)
    return (f"    {iso(hour)}  {r['layer']:5}  page_view {r['page_view_count']:5}  "
            f"add_to_cart {r['add_to_cart_count']:4}  purchase {r['purchase_count']:4}")


def run(args: argparse.Namespace) -> int:
    return Demo(args).run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
