"""HTTP API: a thin FastAPI layer over the Ledger.

`app` (the factory), `routes` (one Ledger call each), `auth` (tokens and scopes),
`models` (request and response bodies), `errors` (error answers and the exception
handlers), `middleware` (body limit, encoded slashes, request metrics), `metrics`.
Errors are JSON `{"error", "message", "details"}` and never a stack trace.
"""

from sessionledger.infrastructure.http.app import create_app

__all__ = ["create_app"]
