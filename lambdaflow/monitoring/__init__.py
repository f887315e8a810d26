"""Watching the pipeline: the dashboard, alerts and the lag monitor's remediation.

- :mod:`lambdaflow.monitoring.dashboard`: the page and JSON the Airflow plugin serves (sources,
  figures, Jinja2 templates under ``templates/``).
- :mod:`lambdaflow.monitoring.auth`: the dashboard behind Airflow's own login (its auth manager).
- :mod:`lambdaflow.monitoring.alerts`: alert payloads, the webhook POST, the bounded alert log in
  HDFS and the lag monitor's status-change rule (no Airflow needed).
- :mod:`lambdaflow.monitoring.notifier`: the one Airflow notifier every DAG's
  ``on_failure_callback`` uses (target from the Airflow Connection ``lambdaflow_alerts``).
- :mod:`lambdaflow.monitoring.remediation`: when the lag monitor restarts the ingest (a pure
  policy) and how (:func:`~lambdaflow.monitoring.remediation.restart_ingest`).

The lag measurement itself lives in :mod:`lambdaflow.lag`.
"""
