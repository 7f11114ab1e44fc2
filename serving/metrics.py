"""The server's metrics, on the training metrics' conventions (core/metrics.py): each
defined once, exported as ``mara_<name>`` to the replica's own Prometheus registry (its
``/metrics`` route) and to Ray's metrics (the dashboard), labelled by replica."""

from __future__ import annotations

from core.metrics import MetricDef, MetricsSink

SERVING = (
    MetricDef("serve_requests", "counter", "Requests answered (every answer of the request finished)."),
    MetricDef("serve_request_errors", "counter", "Requests that failed inside the decoding loop."),
    MetricDef("serve_tokens", "counter", "Answer tokens generated, both models."),
    MetricDef("serve_tokens_per_second", "gauge", "Answer tokens generated per second over the last 5 s."),
    MetricDef("serve_time_to_first_token_seconds", "histogram", "From a request's arrival to its first text.",
              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)),
    MetricDef("serve_request_latency_seconds", "histogram", "From a request's arrival to its last answer's end.",
              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)),
    MetricDef("serve_queue_length", "gauge", "Answers waiting for a row of the running batch."),
    MetricDef("serve_batch_size", "histogram", "Rows of the running batch at each decision step.",
              buckets=(1, 2, 4, 8, 16, 32, 64, 128)),
    MetricDef("serve_batches", "counter",
              "Batches started from idle (a request that joins a running batch starts none)."),
)


def serving_metrics(replica: str) -> MetricsSink:
    return MetricsSink(SERVING, tags={"component": "serve", "replica": replica})
