"""The bindings check: every current CLI resume binding's transcript probed on disk, the
dead ones dropped (a `binding.dropped` event, reason `missing-transcript`) when asked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sessionledger.domain.errors import InvalidEvent, LedgerError
from sessionledger.domain.events import BindingDroppedFact
from sessionledger.infrastructure.generation_facts import record_about_current
from sessionledger.infrastructure.maintenance.repairs import SAFE_NAME, SYSTEM
from sessionledger.infrastructure.store import Store
from sessionledger.projections.queries import Queries
from sessionledger.projections.rows import CAMEL
from sessionledger.projections.tables import TABLES


@dataclass(frozen=True, slots=True)
class BindingCheck:
    __pydantic_config__ = CAMEL

    session_key: str
    session_id: str
    provider: str
    cli_session_id: str
    transcript: str
    alive: bool
    dropped: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class BindingsReport:
    __pydantic_config__ = CAMEL

    directory: str
    bindings: list[BindingCheck]

    @property
    def dead(self) -> list[BindingCheck]:
        return [b for b in self.bindings if not b.alive]


def check_bindings(
    store: Store, directory: Path, *, fix: bool = False, at: datetime
) -> BindingsReport:
    """Probe `<directory>/<cliSessionId>.jsonl` for every current binding; with `fix`,
    drop the dead ones at `at` (reason `missing-transcript`, written by `system`)."""
    try:
        if not directory.is_dir():
            raise InvalidEvent("dir", f"{directory} is not a directory")
        root = directory.resolve()
    except (OSError, ValueError) as e:  # an embedded NUL, a path too long, …
        raise InvalidEvent("dir", f"cannot be used: {e}") from None
    queries = Queries(TABLES)
    checks: list[BindingCheck] = []
    cursor: str | None = None
    while True:
        with store.database.reading() as connection:
            page = queries.sessions(connection, limit=500, cursor=cursor)
        for view in page.items:
            for provider, cli_session_id in sorted(view.bindings.items()):
                path = root / f"{cli_session_id}.jsonl"
                # Only a plain file name inside the directory: a binding cannot probe elsewhere.
                alive = bool(SAFE_NAME.match(cli_session_id)) and path.is_file()
                dropped, reason = False, None
                if not alive and fix:
                    try:
                        record_about_current(
                            store,
                            view.session_key,
                            BindingDroppedFact,
                            at=at,
                            writer=SYSTEM,
                            provider=provider,
                            reason="missing-transcript",
                        )
                        dropped = True
                    except LedgerError as error:  # rotated, deleted or dropped meanwhile
                        reason = str(error)
                checks.append(
                    BindingCheck(
                        view.session_key,
                        view.session_id,
                        provider,
                        cli_session_id,
                        str(path),
                        alive,
                        dropped,
                        reason,
                    )
                )
        cursor = page.next_cursor
        if cursor is None:
            return BindingsReport(str(root), checks)
