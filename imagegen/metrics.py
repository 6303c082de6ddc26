"""Prometheus metrics through the Temporal runtime's telemetry (no second metrics library).

Each process (worker, bot) builds one :class:`temporalio.runtime.Runtime` with a Prometheus exporter on
``METRICS_PORT`` (an internal port, never the public one) and connects its Temporal client with it:
the SDK's own metrics (``temporal_*``: workflow/activity task latencies, slots, polls, failures) and
the pipeline's (``imagegen_*``, below) come out of the same ``/metrics``.

The pipeline's metrics (README, "Operator guide", lists them with their labels):
- imagegen_generations_started_total{model}           bot: a workflow was started
- imagegen_generations_finished_total{outcome,model}  workflow (replay-safe meter)
- imagegen_deliveries_total{level}                    workflow: delivered at url / bytes / text
- imagegen_delivery_lock_total{outcome}               activity: won / busy / delivered / missing
- imagegen_record_info_per_generation                 workflow: histogram, recordInfo calls per generation
- imagegen_callback_to_delivered_seconds              workflow: histogram, first wake-up → delivered
- imagegen_callbacks_total{verdict}                   bot: accepted / bad_token / bad_signature / ...
- imagegen_kie_calls_total{endpoint,status}           Kie client: HTTP status or body code
- imagegen_telegram_calls_total{method,status}        aiogram session: ok / error code / network
- imagegen_telegram_paced_total{outcome}              worker's Bot: a send waited for its slot / was refused (window full)

Without a runtime (tests, METRICS_PORT=0) every call here is a no-op.
"""

from __future__ import annotations

from temporalio.common import MetricMeter

_meter: MetricMeter = MetricMeter.noop
_instruments: dict[tuple[str, str], object] = {}

# Histogram buckets (the SDK's defaults suit milliseconds, not these).
BUCKETS = {
    "imagegen_callback_to_delivered_seconds": [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    "imagegen_record_info_per_generation": [1, 2, 3, 5, 8, 13, 21, 34, 55],
}


def make_runtime(port: int, host: str = "0.0.0.0"):
    """A runtime exporting Prometheus metrics on host:port; None when port is 0 (off)."""
    if not port:
        return None
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(
        bind_address=f"{host}:{port}",
        counters_total_suffix=True,
        durations_as_seconds=True,
        histogram_bucket_overrides=BUCKETS,
    )))


def install(runtime) -> None:
    """Use this runtime's meter for the process's own metrics (None: stay a no-op)."""
    global _meter
    _meter = runtime.metric_meter if runtime is not None else MetricMeter.noop
    _instruments.clear()


def _labels(labels: dict[str, object]) -> dict[str, str | int | float | bool]:
    return {k: v if isinstance(v, (int, float, bool)) else str(v) for k, v in labels.items()}


def _instrument(kind: str, name: str, meter: MetricMeter | None):
    """A counter ("c") or float histogram ("h"); cached for the process meter. A workflow passes its
    own replay-safe meter (``workflow.metric_meter()``), whose instruments are made per call."""
    if meter is not None:
        return meter.create_counter(name) if kind == "c" else meter.create_histogram_float(name)
    inst = _instruments.get((kind, name))
    if inst is None:
        inst = _meter.create_counter(name) if kind == "c" else _meter.create_histogram_float(name)
        _instruments[(kind, name)] = inst
    return inst


def count(name: str, value: int = 1, *, meter: MetricMeter | None = None, **labels: object) -> None:
    """Add to a counter (name without the ``_total`` suffix the exporter adds)."""
    _instrument("c", name, meter).add(value, _labels(labels))


def gauge(name: str, value: float, **labels: object) -> None:
    """Set a float gauge of the process (e.g. the Kie account's credits)."""
    inst = _instruments.get(("g", name))
    if inst is None:
        inst = _instruments[("g", name)] = _meter.create_gauge_float(name)
    inst.set(value, _labels(labels))


def observe(name: str, value: float, *, meter: MetricMeter | None = None, **labels: object) -> None:
    """Record a value in a float histogram (buckets: BUCKETS)."""
    _instrument("h", name, meter).record(value, _labels(labels))
