"""Resumable feeds: the rules that keep a client's view of a tenant's events whole. No I/O.

Every job event has an id in its tenant's feed (a Redis stream id, "<ms>-<n>", increasing) and
names the event before it in that feed. A subscription keeps a cursor, the id of the last event
it delivered. A live event is delivered when it follows the cursor; one at or before it is a
duplicate and skipped; one whose predecessor is not the cursor means events were missed, and the
subscription catches up by reading the feed after its cursor. A read proves itself whole the same
way: its first entry must follow the cursor. When it cannot (the events were trimmed away, or the
feed was lost), the client is told to RESYNC: reload through the REST API and go on from the
feed's newest id.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence

import attrs

NONE = "0-0"  # the id "before the first event" of every feed
_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_PART = 2**64  # each half of a stream id is an unsigned 64-bit number
LAST = (_PART - 1, _PART - 1)  # the greatest id: nothing can come after it


def parse_id(text: object) -> tuple[int, int] | None:
    """A feed id as a comparable pair, or None when the text is not one."""
    if not isinstance(text, str):
        return None
    match = _ID.fullmatch(text)
    if not match:
        return None
    ms, seq = int(match[1]), int(match[2])
    return (ms, seq) if ms < _PART and seq < _PART else None


def resumable(text: object) -> bool:
    """Whether a client may resume after this id: one the feed could have sent."""
    parsed = parse_id(text)
    return parsed is not None and parsed != LAST


class Verdict(enum.Enum):
    SEND = "send"
    SKIP = "skip"
    GAP = "gap"


@attrs.define
class Cursor:
    """Where one subscription is in its tenant's feed: the id of the last event it delivered."""

    last: str

    def verdict(self, event_id: str, prev: str) -> Verdict:
        this, last = parse_id(event_id), parse_id(self.last)
        if this is None or last is None:
            return Verdict.GAP
        if this <= last:
            return Verdict.SKIP
        return Verdict.SEND if prev == self.last else Verdict.GAP


def catch_up(
    after: str, head: str, entries: Sequence[tuple[str, str, str]]
) -> list[tuple[str, str, str]] | None:
    """The entries (id, data, previous id) read after `after` if they follow it without a gap,
    or None when events after it are gone (the client must RESYNC). `head` is the feed's newest
    id at the instant of the read."""
    if not entries:
        return [] if head == after else None
    expected = after
    for entry_id, _data, prev in entries:
        if prev != expected:
            return None
        expected = entry_id
    return list(entries)


def with_id(event_id: str, data: str) -> str:
    """The event's JSON object with its feed id first: {"eventId": ..., ...}."""
    if not data.startswith("{") or data == "{}":
        return data
    return '{"eventId": "' + event_id + '", ' + data[1:]
