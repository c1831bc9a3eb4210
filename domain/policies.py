"""The rules an event's effect follows, each in one place: the aggregate
(domain/conversation.py `evolve`, its decisions) and the read models' fold
(projections/fold.py) both call these, so the two cannot disagree.

- the outcome of a recorded event: applied to the key's current generation, or archived;
- freshness: when an inbound user interaction rotates a session (`FreshnessPolicy`,
  docs/invariants.md) and which events count as one (`last_interaction`);
- a generation becomes resumable with its first assistant entry (`resumable`);
- overrides change by merging, a null value removing one (`merged_overrides`);
- an ended run takes its reported outcome, an errored one `failed` (`ended_status`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, JsonValue, field_validator

from sessionledger.domain.events import (
    GenerationPruned,
    InteractionRecorded,
    LedgerEvent,
    RunEnded,
    RunErrored,
    RunStarted,
    TranscriptAppended,
)
from sessionledger.domain.values import Model, Role, Status

ExpiryReason = Literal["idle", "daily"]
Placement = Literal["applied", "archived"]
ArchiveReason = Literal["rotated", "deleted"]


def placement(event: LedgerEvent, current_session_id: str | None) -> Placement:
    """The outcome of recording `event` while the key's current generation is
    `current_session_id` (None once the key is deleted): applied to the current
    generation, else archived to its own (the generation fence, docs/invariants.md).
    Maintenance pruning an old generation is applied: it is about that generation."""
    if event.session_id == current_session_id or type(event) is GenerationPruned:
        return "applied"
    return "archived"


def archive_reason(current_session_id: str | None) -> ArchiveReason:
    """Why an archived event's generation is no longer current: the key rotated to
    another generation, or was deleted (it has none)."""
    return "deleted" if current_session_id is None else "rotated"


def last_interaction(known: datetime | None, event: LedgerEvent) -> datetime | None:
    """A generation's last user interaction (UTC) once `event` applies to it; `known`
    is the one before. What idle expiry counts from: an inbound message
    (`interaction.recorded`), a run a user triggered, a transcript entry the ingress
    wrote; heartbeat, cron and system traffic never count. A clock that went back
    leaves it where it was."""
    if type(event) is TranscriptAppended:
        counts = event.writer == "ingress"
    elif type(event) is RunStarted:
        counts = event.trigger == "user"
    else:
        counts = type(event) is InteractionRecorded
    if not counts:
        return known
    moment = event.occurred_at.astimezone(UTC)
    return moment if known is None or moment > known else known


def resumable(was: bool, role: Role) -> bool:
    """Whether a generation is resumable after an entry of `role`: from its first
    assistant entry on (a runner has something to resume)."""
    return was or role == "assistant"


def merged_overrides(
    overrides: Mapping[str, JsonValue], changes: Mapping[str, JsonValue]
) -> dict[str, JsonValue]:
    """A generation's overrides after an `overrides.changed`: each change sets its
    override, a null value removes it."""
    merged = dict(overrides)
    for name, value in changes.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


class FreshnessPolicy(Model):
    mode: Literal["manual", "idle", "daily", "idle+daily"] = "manual"
    idle_minutes: int = Field(default=60, ge=1, le=60 * 24 * 365)
    at_hour: int = Field(default=4, ge=0, le=23)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {value!r}") from e
        return value

    def expiry(
        self, *, opened_at: datetime, last_interaction_at: datetime | None, now: datetime
    ) -> ExpiryReason | None:
        """Why a generation is stale at `now`, or None. Pure: depends only on its arguments.

        Daily expiry counts from when the generation started; idle expiry from the last
        user/ingress interaction (the start, if there was none). Daily wins when both
        apply, because it is the harder reset.
        """
        # Compare instants, never wall clocks: aware datetimes sharing one tzinfo compare
        # and subtract by wall clock in Python, which is wrong across DST changes.
        now = now.astimezone(UTC)
        opened_at = opened_at.astimezone(UTC)
        if self.mode in ("daily", "idle+daily") and opened_at < self.last_boundary(now):
            return "daily"
        if self.mode in ("idle", "idle+daily"):
            since = (last_interaction_at or opened_at).astimezone(UTC)
            if now - since >= timedelta(minutes=self.idle_minutes):
                return "idle"
        return None

    def last_boundary(self, now: datetime) -> datetime:
        """The most recent daily reset boundary (at_hour:00 local time) at or before `now`."""
        local = now.astimezone(ZoneInfo(self.timezone))
        # fold=0: a wall-clock hour repeated by a DST change starts at its first occurrence.
        boundary = local.replace(hour=self.at_hour, minute=0, second=0, microsecond=0, fold=0)
        if boundary.astimezone(UTC) > now.astimezone(UTC):
            boundary = (local - timedelta(days=1)).replace(
                hour=self.at_hour, minute=0, second=0, microsecond=0, fold=0
            )
        return boundary


def ended_status(event: RunEnded | RunErrored) -> Status:
    """A run's status once it ended: the outcome its end reported, or `failed` if it
    errored."""
    return event.outcome if type(event) is RunEnded else "failed"
