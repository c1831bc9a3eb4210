"""Prometheus metrics of one app: requests by route and status, events by outcome,
fenced late events, and the read models' lag behind the log."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from sessionledger.infrastructure.ledger import Ledger, RecordResult


class Metrics:
    """One registry per app, so two apps in one process count apart."""

    def __init__(self, ledger: Ledger) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sessionledger_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "sessionledger_events",
            "Events submitted, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.fenced = Counter(
            "sessionledger_fenced_late_events",
            "Events recorded against a rotated or deleted generation",
            registry=self.registry,
        )
        self.lag = Gauge(
            "sessionledger_projection_lag_events",
            "Log entries not yet folded into the read models",
            registry=self.registry,
        )
        self.ledger = ledger
        # Each labelled child made once: `labels()` takes a lock and builds a key per call.
        self.answered: dict[tuple[str, str, int], Counter] = {}

    def answer(self, method: str, route: str, status: int) -> None:
        """Count one answered request."""
        counter = self.answered.get((method, route, status))
        if counter is None:
            counter = self.requests.labels(method, route, str(status))
            self.answered[(method, route, status)] = counter
        counter.inc()

    def count(self, results: list[RecordResult]) -> None:
        """Count recorded events by outcome, and the late ones a generation fence took."""
        for result in results:
            self.events.labels(result.outcome).inc()
            if result.outcome == "archived" and result.reason in ("rotated", "deleted"):
                self.fenced.inc()

    def render(self) -> bytes:
        self.lag.set(self.ledger.projection_lag())
        return generate_latest(self.registry)
