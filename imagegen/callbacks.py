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


def callback_url(public_base_url: str, secret: str, job_id: str) -> str:
    query = urlencode({"job": job_id, "token": callback_token(secret, job_id)})
    return f"{public_base_url.rstrip('/')}{CALLBACK_PATH}?{query}"
