"""The delivering attempt's heartbeat, which also renews its delivery lease.

Every HEARTBEAT_EVERY_SECONDS, the first one interval after the start: heartbeat Temporal (with the
accepted-message memo once there is one) and renew the Postgres lease (``UPDATE … SET delivering_at = now() WHERE id = … AND delivery_owner =
<me>``). A holder that cannot keep its lease stops sending: when the renewal finds the lock taken over
(or the job delivered), or when it has not succeeded for half a lease (Postgres away), the guarded
send is cancelled and ``lost`` says why. A live holder is thus never overtaken while it sends, and a
dead one (no renewals) is replaced about one lease after its last renewal.
"""

from __future__ import annotations

import asyncio

from activities import budget
from imagegen.jobs import JobRepository
from imagegen.logs import log_event
from imagegen.redact import redact

HEARTBEAT_EVERY_SECONDS = 2.0


class LeaseKeeper:
    def __init__(self, repo: JobRepository, job_id: str, owner: str, lease_seconds: float, details: dict):
        self.repo, self.job_id, self.owner = repo, job_id, owner
        self.lease_seconds = lease_seconds
        self.details = details  # heartbeated as they are at each beat (the accepted-message memo)
        self.lost = ""  # why the send was stopped, if it was
        self.renewals = 0

    async def run(self, guarded: asyncio.Task) -> None:
        loop = asyncio.get_running_loop()
        renewed_at = loop.time()
        while True:
            # The first beat after one interval, not at once: a delivery that is done within it (most
            # are) costs the server no heartbeat at all (docs/performance.md); the 15 s heartbeat timeout
            # and a cancel's delivery (on the next beat's answer, as before) are unaffected.
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)
            budget.heartbeat(self.details)
            if guarded.done():
                continue  # accepted (or failed): only heartbeats from here on, no lease to keep
            try:
                held = await asyncio.wait_for(self.repo.extend_delivery_lease(self.job_id, self.owner),
                                              HEARTBEAT_EVERY_SECONDS)
            except Exception as exc:  # Postgres away: the lease runs out unless it comes back in time
                held = None
                log_event(self.job_id, "DELIVER_LEASE_RENEW_FAILED", error=redact(f"{type(exc).__name__}: {exc}")[:120])
            if held:
                renewed_at, self.renewals = loop.time(), self.renewals + 1
            elif held is False:
                self._stop(guarded, "lease taken over or job delivered")
            elif loop.time() - renewed_at > self.lease_seconds / 2:
                self._stop(guarded, f"lease not renewed for {loop.time() - renewed_at:.0f} s")

    def _stop(self, guarded: asyncio.Task, why: str) -> None:
        if not guarded.done() and not self.lost:
            self.lost = why
            log_event(self.job_id, "DELIVER_LEASE_LOST", reason=why, owner=self.owner)
            guarded.cancel()
