"""Every DAG's trigger form explains and validates itself, and every DAG notifies on failure through
the one lambdaflow notifier (parsed from dags/ with Airflow's DagBag, no daemon needed)."""

from __future__ import annotations

import pytest

from lambdaflow.config import REPO_ROOT

# Tasks whose failure is not news: the lag monitor's check_lag fails the run on every bad sample,
# the status change was already notified by track_status.
SILENT_TASKS = {("weblogs_lag_monitor", "check_lag")}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


def all_params(dagbag):
    for dag_id, dag in sorted(dagbag.dags.items()):
        for name, param in dag.params.items():
            yield dag_id, name, dag.params.get_param(name)


def test_every_param_has_a_title_a_description_and_a_type(dagbag) -> None:
    missing = []
    for dag_id, name, param in all_params(dagbag):
        schema = param.schema
        for key in ("title", "description", "type"):
            if not schema.get(key) and not (key == "description" and param.description):
                missing.append(f"{dag_id}.{name}: no {key}")
    assert not missing, missing
    assert sum(1 for _ in all_params(dagbag)) >= 10


def test_every_param_default_passes_its_own_validation(dagbag) -> None:
    for dag_id, name, param in all_params(dagbag):
        param.resolve(suppress_exception=False)  # raises ParamValidationError when the default is invalid


@pytest.mark.parametrize(("dag_id", "name", "bad"), [
    ("weblogs_lag_monitor", "window", 0), ("weblogs_lag_monitor", "restart_after_s", -1),
    ("weblogs_lag_monitor", "remediate", "yes please"), ("weblogs_batch", "allowed_lateness_seconds", -5),
    ("weblogs_batch", "late_data", "sure"),
    ("weblogs_producer", "format", "xml"), ("weblogs_producer", "bad_fraction", 2),
    ("weblogs_producer", "start", "yesterday"),
])
def test_params_refuse_bad_values(dagbag, dag_id, name, bad) -> None:
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError):
        dagbag.dags[dag_id].params.get_param(name).resolve(bad)


def test_every_task_notifies_on_failure_through_the_one_notifier(dagbag) -> None:
    from lambdaflow.monitoring.notifier import LambdaflowNotifier

    wrong = []
    for dag_id, dag in sorted(dagbag.dags.items()):
        for task in dag.tasks:
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks] if callbacks else []
            if (dag_id, task.task_id) in SILENT_TASKS:
                if callbacks:
                    wrong.append(f"{dag_id}.{task.task_id} should not notify")
            elif not any(isinstance(c, LambdaflowNotifier) for c in callbacks):
                wrong.append(f"{dag_id}.{task.task_id}: {callbacks}")
    assert not wrong, wrong
