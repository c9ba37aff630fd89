"""Monitoring: the metrics aggregator (Prometheus text), alert rules, alerts and sinks.

Below the host: it only knows plain data (tree nodes, events, timings); the
dashboard in ``supervisors/frontends`` feeds it and serves it.
"""

from supervisors.monitoring.alerts import Alert, AlertRule, Alerts, AlertSink, parse_alerts
from supervisors.monitoring.metrics import KNOWN_METRICS, Metrics

__all__ = ["Alert", "AlertRule", "AlertSink", "Alerts", "KNOWN_METRICS", "Metrics", "parse_alerts"]
