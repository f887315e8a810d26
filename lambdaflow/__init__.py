"""lambdaflow: an Airflow-orchestrated lambda architecture for clickstream (weblog) events."""

__version__ = "0.1.0"
