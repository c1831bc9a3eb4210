"""Assertions shared by the test layers."""

from __future__ import annotations

from infrastructure.ledger import Ledger


def assert_replay_equals_live(ledger: Ledger) -> None:
    """SPEC §4.3: a fresh fold of the whole log equals the live read models, field for field."""
    mismatches = ledger.replay_mismatches()
    assert mismatches == [], "\n".join(map(str, mismatches[:20]))
