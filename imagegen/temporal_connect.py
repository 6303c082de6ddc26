"""Connecting to Temporal anywhere: the local dev server, a self-hosted cluster behind (m)TLS, or
Temporal Cloud (mTLS or API key). Used by worker.py and the bot.

When Temporal cannot be reached at start, the process logs one line per attempt
(``TEMPORAL_UNREACHABLE address=… namespace=… attempt=… retry_in=…s error=…``) and retries with a
capped exponential backoff instead of exiting, so a deploy where Temporal comes up late (or a
Temporal restart) does not turn into a crash loop; ``/readyz`` says "not ready" meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import temporalio.runtime
from temporalio.client import Client
from temporalio.service import TLSConfig

from imagegen import metrics
from imagegen.redact import redact
from imagegen.settings import Settings

log = logging.getLogger("imagegen.temporal")
FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 30.0


def tls_config(settings: Settings) -> TLSConfig | bool:
    """The TLS argument of Client.connect: False, or a TLSConfig from the TEMPORAL_TLS_* settings."""
    if not settings.temporal_tls_enabled:
        return False

    def read(path: Any) -> bytes | None:
        return path.read_bytes() if path is not None else None

    return TLSConfig(
        server_root_ca_cert=read(settings.temporal_tls_server_ca),
        domain=settings.temporal_tls_server_name,
        client_cert=read(settings.temporal_tls_client_cert),
        client_private_key=read(settings.temporal_tls_client_key),
    )


def connect_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of Client.connect for these settings (besides the address)."""
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key is not None else None
    return {"namespace": settings.temporal_namespace, "tls": tls_config(settings), "api_key": api_key}


def backoff_delays(first: float = FIRST_DELAY_SECONDS, cap: float = MAX_DELAY_SECONDS):
    """1, 2, 4, … capped at `cap` seconds, each with ±20 % jitter (processes do not retry in step)."""
    delay = first
    while True:
        yield delay * random.uniform(0.8, 1.2)
        delay = min(delay * 2, cap)


class ConnectAborted(Exception):
    """`stop` was set while waiting to retry: the process is shutting down before it connected."""


async def connect_temporal(
    settings: Settings,
    *,
    runtime: temporalio.runtime.Runtime | None = None,
    attempts: int | None = None,
    first_delay: float = FIRST_DELAY_SECONDS,
    max_delay: float = MAX_DELAY_SECONDS,
    stop: asyncio.Event | None = None,
) -> Client:
    """A connected client whose namespace answers; retries with backoff (forever unless `attempts`).

    The last error is raised once `attempts` connections have failed; :class:`ConnectAborted` when
    `stop` is set meanwhile (SIGTERM while Temporal is down ends the process at once).
    """
    options = connect_options(settings)
    delays = backoff_delays(first_delay, max_delay)
    attempt = 0
    while True:
        attempt += 1
        try:
            client = await Client.connect(settings.temporal_address, runtime=runtime, **options)
            # Connecting checks the frontend only; a missing namespace or a refused key shows here.
            await client.workflow_service.describe_namespace(_describe_request(settings.temporal_namespace))
            if attempt > 1:
                log.info("TEMPORAL_CONNECTED address=%s namespace=%s attempt=%d", settings.temporal_address,
                         settings.temporal_namespace, attempt)
            return client
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if attempts is not None and attempt >= attempts:
                raise
            delay = next(delays)
            log.warning("TEMPORAL_UNREACHABLE address=%s namespace=%s attempt=%d retry_in=%.1fs error=%s",
                        settings.temporal_address, settings.temporal_namespace, attempt, delay,
                        _one_line(exc))
            if stop is None:
                await asyncio.sleep(delay)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    continue
                raise ConnectAborted(f"stopped before Temporal at {settings.temporal_address} answered") from None


async def connect_process(settings: Settings, *, runtime: temporalio.runtime.Runtime | None = None,
                          stop: asyncio.Event | None = None) -> Client | None:
    """An entry point's client: with the Prometheus runtime of imagegen.metrics (METRICS_PORT) unless
    `runtime` is given, retried until Temporal answers; None when `stop` was set first."""
    if runtime is None:
        runtime = metrics.make_runtime(settings.metrics_port)
        metrics.install(runtime)
    try:
        return await connect_temporal(settings, runtime=runtime, stop=stop)
    except ConnectAborted:
        log.info("TEMPORAL_CONNECT_ABORTED address=%s (stopping)", settings.temporal_address)
        return None


def _describe_request(namespace: str):
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    return DescribeNamespaceRequest(namespace=namespace)


def _one_line(exc: BaseException) -> str:
    text = redact(f"{type(exc).__name__}: {exc}")
    return " ".join(text.split())[:300]
