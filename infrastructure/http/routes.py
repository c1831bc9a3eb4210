"""The HTTP API's routes: each translates JSON to one Ledger call and back;
every decision stays in the domain. Blocking calls run in FastAPI's thread pool, so
concurrent requests reach the Ledger concurrently (and group commit batches their
writes)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from sessionledger.domain.errors import UnknownSession
from sessionledger.domain.values import Identifier, Instant, ShortText, Status
from sessionledger.infrastructure.config import ServerSettings
from sessionledger.infrastructure.http.auth import requires
from sessionledger.infrastructure.http.metrics import Metrics
from sessionledger.infrastructure.http.models import (
    MAX_WINDOW_MINUTES,
    BindingRequest,
    BindingsCheckRequest,
    DeleteResponse,
    EventsRequest,
    EventsResponse,
    Health,
    PruneRequest,
    RecoverRequest,
    ResetRequest,
    ResolveRequest,
    SessionsPage,
    TranscriptResponse,
)
from sessionledger.infrastructure.ledger import Ledger, RecordResult, ResetResult, ResolveResult
from sessionledger.infrastructure.maintenance.bindings import BindingsReport
from sessionledger.infrastructure.maintenance.prune import PruneReport
from sessionledger.infrastructure.maintenance.recover import RecoverReport
from sessionledger.infrastructure.maintenance.verify import VerifyReport
from sessionledger.projections.audit import AuditReport, to_markdown
from sessionledger.projections.queries import MAX_PAGE
from sessionledger.projections.reports import StatusReport
from sessionledger.projections.rows import GenerationRow, RunRow, SessionView

_RESULTS: TypeAdapter[list[RecordResult]] = TypeAdapter(list[RecordResult])


def api_routes(ledger: Ledger, settings: ServerSettings, metrics: Metrics) -> APIRouter:
    """Every route of the API, over `ledger`, allowed by `settings`' tokens."""
    router = APIRouter()
    read = requires(settings, "read")
    admin = requires(settings, "admin")

    @router.post("/v1/events", dependencies=read, response_model=EventsResponse, tags=["events"])
    async def record_events(body: EventsRequest) -> Response:
        """Record 1-1000 events; one result per event, in request order."""
        # The hot path: one thread hop for the blocking write, where a sync endpoint takes
        # two (FastAPI validates a sync endpoint's response in its thread pool as well).
        results = await run_in_threadpool(ledger.record, body.events)
        metrics.count(results)
        # The results are the ledger's validated models: serialised once, as the
        # response model would (FastAPI would validate them again first).
        content = b'{"results":' + _RESULTS.dump_json(results, by_alias=True) + b"}"
        return Response(content, media_type="application/json")

    @router.post(
        "/v1/sessions/{session_key:segment}/resolve",
        dependencies=read,
        response_model=ResolveResult,
        tags=["sessions"],
    )
    def resolve(session_key: str, body: ResolveRequest | None = None) -> ResolveResult:
        """On every inbound message: open the key if new, rotate it if its policy expired."""
        body = body or ResolveRequest()
        return ledger.resolve(
            session_key,
            at=body.at,
            interaction=body.interaction,
            policy=body.policy or settings.policies.for_key(session_key),
            session_id=body.session_id,
        )

    @router.post(
        "/v1/sessions/{session_key:segment}/reset",
        dependencies=admin,
        response_model=ResetResult,
        tags=["sessions"],
    )
    def reset(session_key: str, body: ResetRequest | None = None) -> ResetResult:
        """Rotate the key to a new generation; 409 session-changed on a CAS mismatch."""
        body = body or ResetRequest()
        return ledger.reset(
            session_key,
            reason=body.reason,
            expected_session_id=body.expected_session_id,
            session_id=body.session_id,
            at=body.at,
        )

    @router.put(
        "/v1/sessions/{session_key:segment}/bindings/{provider:segment}",
        dependencies=admin,
        response_model=RecordResult,
        tags=["bindings"],
    )
    def set_binding(session_key: str, provider: Identifier, body: BindingRequest) -> RecordResult:
        return ledger.set_binding(session_key, provider, body.cli_session_id, at=body.at)

    @router.delete(
        "/v1/sessions/{session_key:segment}/bindings/{provider:segment}",
        dependencies=admin,
        response_model=RecordResult,
        tags=["bindings"],
    )
    def drop_binding(
        session_key: str, provider: Identifier, reason: Annotated[ShortText, Query()] = "dropped"
    ) -> RecordResult:
        return ledger.drop_binding(session_key, provider, reason=reason)

    @router.get(
        "/v1/sessions/{session_key:segment}/transcript",
        dependencies=read,
        response_model=TranscriptResponse,
        tags=["sessions"],
    )
    def transcript(
        session_key: str,
        session_id: Annotated[str | None, Query(alias="sessionId")] = None,
        lineage: bool = False,
    ) -> TranscriptResponse:
        entries = ledger.transcript(session_key, session_id=session_id, lineage=lineage)
        ids = list(dict.fromkeys(e.session_id for e in entries))
        return TranscriptResponse(session_key=session_key, session_ids=ids, entries=entries)

    @router.get(
        "/v1/sessions/{session_key:segment}/audit",
        dependencies=read,
        response_model=AuditReport,
        responses={
            200: {
                "description": "The audit as JSON, or with format=markdown an incident "
                "report (text/markdown)",
                "content": {"text/markdown": {"schema": {"type": "string"}}},
            }
        },
        tags=["audit"],
    )
    def audit(
        session_key: str,
        run_id: Annotated[Identifier | None, Query(alias="runId")] = None,
        as_of: Annotated[Instant | None, Query(alias="asOf")] = None,
        position: Annotated[int | None, Query(ge=0)] = None,
        output: Annotated[Literal["json", "markdown"], Query(alias="format")] = "json",
    ) -> Any:
        report = ledger.audit(session_key, run_id=run_id, as_of=as_of, position=position)
        if output == "markdown":
            return PlainTextResponse(to_markdown(report), media_type="text/markdown")
        return report

    @router.get(
        "/v1/sessions/{session_key:segment}/generations",
        dependencies=read,
        response_model=list[GenerationRow],
        tags=["sessions"],
    )
    def generations(session_key: str) -> list[GenerationRow]:
        found = ledger.generations(session_key)
        if not found:
            raise UnknownSession(session_key)
        return found

    @router.get(
        "/v1/sessions/{session_key:segment}",
        dependencies=read,
        response_model=SessionView,
        tags=["sessions"],
    )
    def session(session_key: str) -> SessionView:
        return ledger.session(session_key)

    @router.delete(
        "/v1/sessions/{session_key:segment}",
        dependencies=admin,
        response_model=DeleteResponse,
        tags=["sessions"],
    )
    def delete(
        session_key: str,
        expected_session_id: Annotated[Identifier | None, Query(alias="expectedSessionId")] = None,
    ) -> DeleteResponse:
        deleted = ledger.delete(session_key, expected_session_id=expected_session_id)
        return DeleteResponse(session_key=session_key, deleted_session_id=deleted)

    @router.get("/v1/sessions", dependencies=read, response_model=SessionsPage, tags=["sessions"])
    def sessions(
        status: Status | None = None,
        agent: str | None = None,
        channel: str | None = None,
        active_within_minutes: Annotated[
            int | None, Query(alias="activeWithinMinutes", ge=1, le=MAX_WINDOW_MINUTES)
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        cursor: str | None = None,
    ) -> SessionsPage:
        page = ledger.sessions(
            status=status,
            agent=agent,
            channel=channel,
            active_within_minutes=active_within_minutes,
            limit=limit,
            cursor=cursor,
        )
        return SessionsPage(items=page.items, next_cursor=page.next_cursor)

    @router.get(
        "/v1/runs/{run_id:segment}", dependencies=read, response_model=RunRow, tags=["runs"]
    )
    def run(run_id: str) -> RunRow:
        found = ledger.run(run_id)
        if found is None:
            raise StarletteHTTPException(404, f"unknown run {run_id!r}")
        return found

    @router.get(
        "/v1/reports/status", dependencies=read, response_model=StatusReport, tags=["reports"]
    )
    def status_report(
        stuck_after_minutes: Annotated[
            int, Query(alias="stuckAfterMinutes", ge=1, le=MAX_WINDOW_MINUTES)
        ] = 15,
        window_minutes: Annotated[
            int, Query(alias="windowMinutes", ge=1, le=MAX_WINDOW_MINUTES)
        ] = 60,
    ) -> StatusReport:
        return ledger.status_report(
            stuck_after_minutes=stuck_after_minutes, window_minutes=window_minutes
        )

    # -- maintenance (admin): every repair is an event in the log ---------------------

    @router.get("/v1/admin/verify", dependencies=admin, response_model=VerifyReport, tags=["admin"])
    def verify() -> VerifyReport:
        """Hash chains and read models against a fresh fold of the log; `ok` says if clean."""
        return ledger.verify()

    @router.post(
        "/v1/admin/recover", dependencies=admin, response_model=RecoverReport, tags=["admin"]
    )
    def recover(body: RecoverRequest | None = None) -> RecoverReport:
        minutes = (body or RecoverRequest()).stale_after_minutes
        return ledger.recover(timedelta(minutes=minutes))

    @router.post("/v1/admin/prune", dependencies=admin, response_model=PruneReport, tags=["admin"])
    def prune(body: PruneRequest | None = None) -> PruneReport:
        minutes = (body or PruneRequest()).older_than_minutes
        return ledger.prune(timedelta(minutes=minutes))

    @router.post(
        "/v1/admin/bindings/check",
        dependencies=admin,
        response_model=BindingsReport,
        tags=["admin"],
    )
    def bindings_check(body: BindingsCheckRequest) -> BindingsReport:
        return ledger.check_bindings(body.dir, fix=body.fix)

    @router.get("/healthz", response_model=Health, tags=["operations"])
    def healthz() -> Health:
        position, head = ledger.positions()
        return Health(status="ok", position=position, log_head=head)

    @router.get(
        "/metrics", dependencies=read, response_class=PlainTextResponse, tags=["operations"]
    )
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
