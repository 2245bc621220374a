"""Shared bookkeeping of the executor pool: free slots, running jobs, held leases.

The fetcher takes slots and records leases; executors give slots back; the recorder drops
leases once an outcome is written; the heartbeat extends what is held. No I/O here.
"""

from __future__ import annotations

import enum

import trio


class CancelReason(enum.Enum):
    DRAIN = "drain"  # the node is shutting down: hand the job back
    LOST = "lost"  # the lease went to another attempt: stop, record nothing
    CANCEL = "cancel"  # cancelled by request: stop, record CANCELLED


class ExecutorPool:
    def __init__(self, size: int) -> None:
        self.size = size
        self.slots = trio.Semaphore(size)
        self.leases: dict[str, int] = {}  # job id -> attempt, held by this node
        self.tenants: dict[str, str] = {}  # job id -> tenant, of the leases held
        self.handing_back = False  # after the drain grace: jobs not yet started go back at once
        self.fetcher_idle = False  # the fetcher waits for a wake-up: nothing was ready to claim
        self._running: dict[tuple[str, int], trio.CancelScope] = {}
        self._reasons: dict[tuple[str, int], CancelReason] = {}
        self._changed = trio.Event()
        self._watched = False  # wait_idle waits on _changed

    # -- slots ---------------------------------------------------------------------------------
    async def take_slots(self, most: int) -> int:
        """Wait for one free slot, then take as many more (up to `most`) as are free."""
        await self.slots.acquire()
        return 1 + self.take_free_slots(most - 1)

    def take_free_slots(self, most: int) -> int:
        """Take up to `most` slots that are free now, without waiting."""
        taken = 0
        while taken < most:
            try:
                self.slots.acquire_nowait()
            except trio.WouldBlock:
                break
            taken += 1
        return taken

    def give_slots(self, n: int) -> None:
        for _ in range(n):
            self.slots.release()
        if self._watched:  # a new Event only when someone waits: this runs for every job
            self._watched = False
            self._changed.set()
            self._changed = trio.Event()

    def hold_lease(self, job_id: str, attempt: int, tenant: str) -> None:
        """Hold (and heartbeat) a lease this node claimed."""
        self.leases[job_id] = attempt
        self.tenants[job_id] = tenant

    def held(self) -> list[tuple[str, int, str]]:
        """The leases held: (job id, attempt, tenant)."""
        return [(job_id, attempt, self.tenants[job_id]) for job_id, attempt in self.leases.items()]

    def forget_lease(self, job_id: str, attempt: int) -> None:
        """Stop holding (and heartbeating) a lease: its outcome is written, or it never will be
        by this node, and then the lease expires and the reaper gives the job another attempt."""
        if self.leases.get(job_id) == attempt:
            del self.leases[job_id]
            self.tenants.pop(job_id, None)

    def busy(self) -> int:
        return self.size - self.slots.value

    async def wait_idle(self) -> None:
        while self.busy():
            self._watched = True
            await self._changed.wait()

    # -- running jobs --------------------------------------------------------------------------
    def started(self, job_id: str, attempt: int, scope: trio.CancelScope) -> None:
        self._running[(job_id, attempt)] = scope

    def stopped(self, job_id: str, attempt: int) -> CancelReason | None:
        """Forget a running job; returns why it was cancelled, if this pool cancelled it."""
        self._running.pop((job_id, attempt), None)
        return self._reasons.pop((job_id, attempt), None)

    def cancel(self, job_id: str, attempt: int, reason: CancelReason) -> bool:
        scope = self._running.get((job_id, attempt))
        if scope is None:
            return False
        self._reasons[(job_id, attempt)] = reason
        scope.cancel()
        return True

    def cancel_job(self, job_id: str, reason: CancelReason) -> bool:
        """Cancel whatever attempt of this job runs here; False when none does."""
        attempt = self.leases.get(job_id)
        return attempt is not None and self.cancel(job_id, attempt, reason)

    def cancel_all(self, reason: CancelReason) -> int:
        running = list(self._running)
        for job_id, attempt in running:
            self.cancel(job_id, attempt, reason)
        return len(running)

    def running_count(self) -> int:
        return len(self._running)
