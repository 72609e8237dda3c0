"""The daemon's /metrics (prometheus-client) and /healthz, served on `rotator.metrics_address`.

Two kinds of figures:
- counted in this process as runs end: runs by outcome and trigger, step durations, notification attempts;
- read from the journal at scrape time (cached for a few seconds, one query each, so 10,000 plans cost one
  scrape-time read, not 10,000): credential age, next due time, stuck runs, runs in progress, failed
  notifications, revokes waiting. With several daemons on one journal, every daemon reports the same journal
  figures; sum the counters across daemons, take any one for the gauges.

Labels are plan ids, steps and outcomes: never a secret value (a test scrapes after a rotation and checks).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rotator.engine.runner import RunOutcome
from rotator.interfaces import Journal
from rotator.logs import get_logger
from rotator.model import NotifyStatus, RunState

log = get_logger("rotator.metrics")
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class JournalCollector(Collector):
    """Gauges read from the journal when Prometheus scrapes. `journal()` lends the journal for one scrape (the
    daemon's reload closes a journal only once nobody holds it)."""

    def __init__(
        self,
        journal: Callable[[], AbstractContextManager[Journal]],
        plan_ids: Callable[[], list[str]],
        next_due: Callable[[], Mapping[str, datetime | None]],
        cache_seconds: float = 5.0,
    ):
        self._journal = journal
        self._plan_ids = plan_ids
        self._next_due = next_due
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self._cache_seconds:
                self._cached = (time.monotonic(), self._read())
            return iter(self._cached[1])

    def _read(self) -> list[Metric]:
        with self._journal() as journal:
            return self._read_from(journal)

    def _read_from(self, journal: Journal) -> list[Metric]:
        now = datetime.now(UTC)
        plans = self._plan_ids()
        successes = journal.last_successes()
        latest = journal.latest_runs()
        age = GaugeMetricFamily(
            "rotator_credential_age_seconds", "Seconds since the plan's credential was last rotated.", labels=["plan"]
        )
        due = GaugeMetricFamily(
            "rotator_next_due_timestamp_seconds", "When the plan is next due (Unix time).", labels=["plan"]
        )
        last_ok = GaugeMetricFamily(
            "rotator_last_run_ok", "1 if the plan's newest run succeeded or awaits revoke, else 0.", labels=["plan"]
        )
        due_times = self._next_due()
        for plan_id in plans:
            success = successes.get(plan_id)
            if success is not None:
                age.add_metric([plan_id], (now - success.started_at).total_seconds())
            when = due_times.get(plan_id)
            if when is not None:
                due.add_metric([plan_id], when.timestamp())
            newest = latest.get(plan_id)
            if newest is not None:
                ok = newest.state in (RunState.SUCCEEDED, RunState.AWAITING_REVOKE)
                last_ok.add_metric([plan_id], 1.0 if ok else 0.0)
        waiting = 0
        stuck = len(journal.runs_in_state(RunState.STUCK))
        in_progress = len(journal.runs_in_state(RunState.RUNNING, RunState.ROLLING_BACK))
        for record in journal.runs_in_state(RunState.AWAITING_REVOKE):
            if record.details.get("revoke_waiting_for"):
                waiting += 1
        failed = journal.notifications(statuses=(NotifyStatus.FAILED,))
        failed_family = GaugeMetricFamily(
            "rotator_failed_notifications",
            "Notifications whose last attempt failed and that are retried on later ticks.",
            labels=["required"],
        )
        failed_family.add_metric(["true"], sum(1 for r in failed if r.required))
        failed_family.add_metric(["false"], sum(1 for r in failed if not r.required))
        return [
            age,
            due,
            last_ok,
            GaugeMetricFamily("rotator_stuck_runs", "Runs stuck: an operator must look (`rotator resume`).", stuck),
            GaugeMetricFamily("rotator_runs_in_progress", "Runs in progress or interrupted.", in_progress),
            GaugeMetricFamily(
                "rotator_revokes_waiting",
                "Promoted runs whose revoke waits for consumers or a required notifier.",
                waiting,
            ),
            failed_family,
            GaugeMetricFamily("rotator_plans", "Plans in the configuration.", len(plans)),
        ]


class Metrics:
    """The daemon's registry: counters it updates as runs end, and the journal collector."""

    def __init__(self, collector: Collector | None = None):
        self.registry = CollectorRegistry()
        self.runs = Counter(
            "rotator_runs", "Runs ended, by outcome and trigger.", ["outcome", "trigger"], registry=self.registry
        )
        self.steps = Histogram(
            "rotator_step_duration_seconds",
            "How long each step took (rollback-* for compensations).",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.notifications = Counter(
            "rotator_notification_attempts", "Notification deliveries, by result.", ["result"], registry=self.registry
        )
        if collector is not None:
            self.registry.register(collector)

    def observe(self, outcome: RunOutcome, trigger: str) -> None:
        if outcome.outcome in ("not-due", "nothing-to-do"):
            return
        if outcome.outcome in ("notified", "notify-failed"):
            self.notifications.labels("succeeded" if outcome.outcome == "notified" else "failed").inc()
            return
        self.runs.labels(outcome.outcome, trigger).inc()
        for step, seconds in outcome.step_seconds.items():
            self.steps.labels(step).observe(seconds)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the log; errors still reach the daemon's log via the app."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def health_app(
    metrics: Metrics, health: Callable[[], tuple[bool, dict[str, Any]]]
) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """/healthz (JSON; 200 when healthy, 503 otherwise) and /metrics (Prometheus text format)."""
    prometheus = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            result: Iterable[bytes] = prometheus(environ, start_response)
            return result
        if path in ("/healthz", "/health", "/"):
            try:
                ok, body = health()
            except Exception as exc:  # the health check itself failing is unhealthy, not a crash
                ok, body = False, {"status": "error", "error": type(exc).__name__}
            data = json.dumps(body, default=str).encode()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
            )
            return [data]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: use /healthz or /metrics\n"]

    return app


class HealthServer:
    """Serves the app on a background thread; `port` is the bound port (0 in the config picks a free one)."""

    def __init__(self, host: str, port: int, app: Callable[..., Iterable[bytes]]):
        self._server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="rotator-http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("serving /healthz and /metrics", address=f"{self.host}:{self.port}")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
