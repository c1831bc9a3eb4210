"""What the repairs (recover, prune, the bindings check) have in common: the writer
their events are recorded as, how they name a span of time, and which names may become
a file name."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_

from sessionledger.domain.values import Writer

SYSTEM: Writer = "system"  # the writer of every event a repair records

# A name used as a file name as it is: no path separator, no leading dot.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def after_row(
    moment: ColumnElement[datetime], key: ColumnElement[str], after: tuple[datetime, str]
) -> ColumnElement[bool]:
    """The rows after `after` in the order (moment, key) a repair pages through its
    candidates in: the next page starts where the last one ended, whatever was repaired."""
    last_moment, last_key = after
    return or_(moment > last_moment, and_(moment == last_moment, key > last_key))


def span(value: timedelta) -> str:
    """`value` in its largest whole unit: 30m, 2h, 7d (or seconds)."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
