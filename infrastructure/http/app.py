"""The app factory: the routes over one Ledger, behind the body limit, the encoded-slash
routing and the request metrics."""

from __future__ import annotations

from fastapi import FastAPI

from sessionledger.infrastructure.config import ServerSettings
from sessionledger.infrastructure.http.errors import add_error_handlers
from sessionledger.infrastructure.http.metrics import Metrics
from sessionledger.infrastructure.http.middleware import BodyLimit, EncodedSlashes, RequestMetrics
from sessionledger.infrastructure.http.models import ERRORS
from sessionledger.infrastructure.http.routes import api_routes
from sessionledger.infrastructure.ledger import Ledger


def create_app(ledger: Ledger, settings: ServerSettings | None = None) -> FastAPI:
    """The HTTP API over `ledger` (OpenAPI at /openapi.json); `app.state` holds the
    ledger and the app's metrics. Without settings, no token is asked for."""
    settings = settings or ServerSettings()
    app = FastAPI(
        title="sessionledger",
        version="0.1.0",
        summary="Event-sourced session store for AI-agent chat gateways",
        responses=ERRORS,
    )
    metrics = Metrics(ledger)
    app.state.ledger = ledger
    app.state.metrics = metrics
    add_error_handlers(app)
    app.include_router(api_routes(ledger, settings, metrics))
    # The last added runs first: the body limit, then the routing fix, then the metrics.
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(EncodedSlashes)
    app.add_middleware(BodyLimit)
    return app
