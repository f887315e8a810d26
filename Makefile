# lambdaflow: `make demo` sets everything up and runs the pipeline end to end; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LF := $(BIN)/lambdaflow
STAMP := $(VENV)/.installed

.PHONY: help venv jars up down status test unit demo bench chaos lock clean

help:
	@echo "make demo    set up everything and run the whole pipeline through Airflow"
	@echo "make test    run the whole test suite against real services (started as needed)"
	@echo "make up | down | status    the local deployment (Kafka, HDFS, PostgreSQL, Airflow)"
	@echo "make up TOPOLOGY=cluster   3 Kafka brokers, NameNode + 2 DataNodes, Spark master + 2 workers"
	@echo "make clean   stop everything and delete .run/ (data of Kafka, HDFS and Airflow's PostgreSQL, logs)"
	@echo "make bench   benchmarks -> bench/results/latest.json"
	@echo "make chaos   faults on the cluster topology while events flow -> bench/results/chaos-latest.json"

venv: $(STAMP)
$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps -e .
	@touch $(STAMP)

jars: venv
	$(BIN)/python -c "from lambdaflow.stack import jars; jars.resolve_all()"

# TOPOLOGY=cluster: 3 brokers, NameNode + 2 DataNodes, Spark master + 2 workers (lambdaflow.stack.cluster).
# `make down` without TOPOLOGY stops every topology's processes; with it, only that topology's.
TOPOLOGY ?=
TOPOLOGY_ARG = $(if $(TOPOLOGY),--topology $(TOPOLOGY))

up: jars
	$(LF) up $(TOPOLOGY_ARG)

down:
	@if [ -x $(LF) ]; then $(LF) down $(TOPOLOGY_ARG); else echo "nothing to stop (no virtualenv)"; fi

status: venv
	$(LF) status $(TOPOLOGY_ARG)

# Unit tests, DAG tests (including `airflow dags test` of every DAG) and integration tests
# against the real Kafka, HDFS and Spark; a skipped test fails the run (see tests/conftest.py).
test: jars
	$(LF) up --services kafka namenode datanode postgres spark-connect
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

# Unit tests start no service, but some run a local SparkSession, which the project always builds
# with Spark's Kafka connector on the classpath (lambdaflow.spark): resolve the jars first.
unit: jars
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# TOPOLOGY=cluster: the whole pipeline on the cluster topology (its own Airflow on PostgreSQL, port 28080)
demo: jars
	$(if $(TOPOLOGY),LAMBDAFLOW_TOPOLOGY=$(TOPOLOGY)) $(LF) demo

# Faults while events flow, on the cluster topology (started when not up): bench/results/chaos-latest.json.
# CHAOS_ARGS="--faults kill-ingest kill-broker" runs some; "--smoke" each once with small counts.
chaos: jars
	LAMBDAFLOW_TOPOLOGY=cluster $(LF) chaos $(CHAOS_ARGS)

bench: jars
	$(LF) up --services kafka namenode datanode postgres spark-connect
	$(BIN)/python -m bench

# Re-pin the whole dependency tree after changing requirements.txt.
lock:
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip freeze --exclude-editable > constraints.txt

clean: down
	rm -rf .run
