"""Per-job callback URLs with an unguessable token, and their check."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

CALLBACK_PATH = "/kie/callback"


def callback_token(secret: str, job_id: str) -> str:
    return hmac.new(secret.encode(), f"kie-callback:{job_id}".encode(), hashlib.sha256).hexdigest()[:32]


def token_ok(secret: str, job_id: str, token: str) -> bool:
    return hmac.compare_digest(callback_token(secret, job_id), token or "")


def callback_url(public_base_url: str, secret: str, job_id: str, workflow_id: str | None = None) -> str:
    """The URL Kie calls back. ``wf`` names the workflow to signal; the token covers the job only,
    so the endpoint accepts ``wf`` just when it is one of that job's ids (contracts.workflow_id_candidates)."""
    fields = {"job": job_id}
    if workflow_id:
        fields["wf"] = workflow_id
    fields["token"] = callback_token(secret, job_id)
    query = urlencode(fields)
    return f"{public_base_url.rstrip('/')}{CALLBACK_PATH}?{query}"
