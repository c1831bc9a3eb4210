"""Freshness policy (SPEC §4.11): when an inbound user interaction rotates a session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from sessionledger.domain.values import Model

ExpiryReason = Literal["idle", "daily"]


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
