"""The broadcaster: job events from Redis to this node's WebSocket subscribers.

One blocking XREAD loop per node reads the feeds of the tenants that have subscribers on this
node, and offers each event to those connections; control entries (a job's cancellation) go to
`control`. A node without subscribers reads no events at all. An event carries its id in its
tenant's feed and the id before it, so that a connection can tell a missed event and catch up
from the feed (feed.py). An offer never blocks: a connection whose bounded queue is full is
marked lagged (the model is tractor's Lagged) and reads what it missed from the feed once it has
caught up, never buffered further.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable

import trio

from ..hub import CatchUp, FeedEvent, Hub
from ..stores import RedisStore, StoreUnavailable

log = logging.getLogger(__name__)


BLOCK_MS = 250  # how long a read waits for entries; a tenant's first subscriber ends it sooner
# a read is cut short at most this often: a cut read's Redis connection is closed (its reply may
# still come), so a tenant subscribing and unsubscribing in a loop must not cut every read
CUT_EVERY_S = 0.05


async def run_broadcaster(
    redis: RedisStore,
    hub: Hub,
    control: Callable[[str, dict[str, str]], None] = lambda kind, fields: None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Read the control stream, and the feeds of the tenants this node has subscribers for."""
    task_status.started()
    control_key = redis.control_key()
    control_last: str | None = None  # from "now" on: a cancel concerns running jobs only
    positions: dict[str, str] = {}  # tenant -> last id read of its feed
    last_cut = -math.inf
    while True:
        # a tenant subscribed meanwhile (before the read, or during it) ends the read: its feed
        # is then read from the next round, at once (CUT_EVERY_S at most), not after BLOCK_MS
        # (a new dashboard's first events came 100-250 ms late). Nothing read is lost: positions
        # move only past entries handed over. Where a read cannot end early at no cost (more
        # than one shard), a new tenant is read from the next round, as before.
        reading = trio.CancelScope()
        if redis.reads_end_early:
            hub.on_new_tenant = functools.partial(_cut, reading, last_cut + CUT_EVERY_S)
        try:
            if control_last is None:
                control_last = await redis.now_event_id()
            wanted = hub.tenants()
            for gone in positions.keys() - wanted:
                del positions[gone]
            if new := [t for t in wanted if t not in positions]:
                positions.update(await redis.feed_heads(new))
                for tenant in new:  # what happened before this read: from the feed itself
                    hub.publish(tenant, CatchUp(tenant))
            streams = {control_key: control_last}
            tenant_of = {redis.feed_key(t): t for t in positions}
            streams.update({key: positions[t] for key, t in tenant_of.items()})
            got = []
            with reading:
                got = await redis.read_streams(streams, block_ms=BLOCK_MS)
            if reading.cancelled_caught:
                last_cut = trio.current_time()
        except StoreUnavailable as exc:
            log.warning("broadcaster: %s", exc)
            await trio.sleep(1.0)
            continue
        for key, entries in got:
            if key == control_key:
                for entry_id, fields in entries:
                    control_last = entry_id
                    control(fields.get("k", ""), fields)
                continue
            tenant = tenant_of[key]
            for entry_id, fields in entries:
                hub.publish(tenant, FeedEvent(tenant, entry_id, fields["v"], fields["d"]))
            if entries and tenant in positions:
                positions[tenant] = entries[-1][0]


def _cut(reading: trio.CancelScope, not_before: float) -> None:
    """End the read now, or at not_before if that is later."""
    reading.deadline = min(reading.deadline, max(trio.current_time(), not_before))
