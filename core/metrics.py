"""Metrics defined once, exported to Ray and to Prometheus (training and serving alike).

A ``MetricDef`` names a metric (short name, kind, description); the components that
report metrics list theirs (driver/metrics.py for training, serving/metrics.py for the
server). A ``MetricsSink`` over such a list updates two copies of each:

* Ray's metrics API (``ray.util.metrics``), only when the process runs inside Ray
  (``ray.is_initialized()``). Ray exports them on each node's metrics-export port with a
  ``ray_`` prefix (``ray_mara_replay_size``); the dashboard graphs them once Prometheus
  (and Grafana) scrape Ray. Ray does not store metrics itself.
* A prometheus-client registry of its own (not the global one), which can be served over
  HTTP with ``start_http_server`` (loopback only unless told otherwise) or rendered with
  ``prometheus_text`` by a server's own ``/metrics`` route.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping

import prometheus_client as prom

PREFIX = "mara_"
Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricDef:
    """One metric. ``name`` is the short name used in code; it is exported as ``mara_<name>``."""

    name: str
    kind: Kind
    description: str
    buckets: tuple[float, ...] = ()  # histogram bucket upper bounds; Ray needs them > 0

    @property
    def full_name(self) -> str:
        return PREFIX + self.name



# Ray metric objects, created once per process and shared by every sink in it.
_RAY_METRICS: dict[tuple[str, tuple[str, ...]], object] = {}


def _ray_metric(d: MetricDef, tag_keys: tuple[str, ...]):
    key = (d.name, tag_keys)
    if key not in _RAY_METRICS:
        from ray.util import metrics as ray_metrics

        if d.kind == "counter":
            m = ray_metrics.Counter(d.full_name, d.description, tag_keys=tag_keys)
        elif d.kind == "gauge":
            m = ray_metrics.Gauge(d.full_name, d.description, tag_keys=tag_keys)
        else:
            m = ray_metrics.Histogram(d.full_name, d.description, boundaries=list(d.buckets),
                                      tag_keys=tag_keys)
        _RAY_METRICS[key] = m
    return _RAY_METRICS[key]


def _in_ray() -> bool:
    ray = sys.modules.get("ray")  # not imported -> cannot be initialised; avoids a slow import
    return ray is not None and ray.is_initialized()


# The same method names update prometheus-client and Ray metrics.
_UPDATE_METHOD = {"counter": "inc", "gauge": "set", "histogram": "observe"}


def _counter_step(name: str, n: float) -> float:
    n = float(n)
    if not n >= 0:  # also catches NaN
        raise ValueError(f"counter {name!r} can only go up, got {n}")
    return n


class MetricsSink:
    """Updates every metric in Ray's metrics and in a private prometheus-client registry.

    ``tags`` (e.g. ``{"component": "rollout", "worker": "3"}``) label every series, so the
    same gauge reported by several actors stays apart. Build one sink per process; it is
    not meant to be pickled into actors.
    """

    def __init__(self, defs: Iterable[MetricDef], tags: Mapping[str, str] | None = None) -> None:
        self.defs = {d.name: d for d in defs}
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self._tag_keys = tuple(sorted(self.tags))
        self.registry = prom.CollectorRegistry()
        self._prom = {d.name: self._make_prom(d) for d in self.defs.values()}
        self._server = None
        self._thread = None

    def _make_prom(self, d: MetricDef):
        kwargs = dict(labelnames=self._tag_keys, registry=self.registry)
        if d.kind == "counter":
            m = prom.Counter(d.full_name, d.description, **kwargs)
        elif d.kind == "gauge":
            m = prom.Gauge(d.full_name, d.description, **kwargs)
        else:
            m = prom.Histogram(d.full_name, d.description, buckets=d.buckets, **kwargs)
        return m.labels(**self.tags) if self._tag_keys else m

    # -- updating ------------------------------------------------------------------------

    def inc(self, name: str, n: float = 1) -> None:
        """Add ``n`` (>= 0) to counter ``name``."""
        d = self.metric_def(name)
        if d.kind != "counter":
            raise TypeError(f"metric {name!r} is a {d.kind}, not a counter; use record()")
        self._update(d, _counter_step(name, n))

    def record(self, values: Mapping[str, float]) -> None:
        """Set gauges, observe histograms, and add to counters (``{"episodes": 1}`` adds 1).

        Every name and value is checked before anything is updated, so a typo changes nothing.
        """
        checked = []
        for name, value in values.items():
            d = self.metric_def(name)
            value = _counter_step(name, value) if d.kind == "counter" else float(value)
            checked.append((d, value))
        for d, value in checked:
            self._update(d, value)

    def metric_def(self, name: str) -> MetricDef:
        """The definition of ``name``; a KeyError that lists the known names if there is none."""
        try:
            return self.defs[name]
        except KeyError:
            raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(self.defs))}") from None

    def prometheus_text(self) -> bytes:
        """This sink's metrics in Prometheus' text format (for a server's own /metrics route)."""
        return prom.generate_latest(self.registry)

    def _update(self, d: MetricDef, value: float) -> None:
        if d.kind == "counter" and value == 0:
            return  # Ray counters refuse 0
        method = _UPDATE_METHOD[d.kind]
        getattr(self._prom[d.name], method)(value)
        if _in_ray():
            getattr(_ray_metric(d, self._tag_keys), method)(value, tags=self.tags or None)

    # -- HTTP endpoint -------------------------------------------------------------------

    def start_http_server(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve this sink's registry at ``http://host:port/metrics``; return the bound port.

        ``port=0`` lets the OS pick a free port. The default host keeps the endpoint on
        loopback; pass ``"0.0.0.0"`` only where the network is trusted.
        """
        if self._server is not None:
            raise RuntimeError(f"metrics endpoint already running on port {self.port}")
        self._server, self._thread = prom.start_http_server(port, addr=host,
                                                            registry=self.registry)
        return self.port

    @property
    def port(self) -> int | None:
        return None if self._server is None else self._server.server_address[1]

    def stop(self) -> None:
        """Stop the HTTP endpoint, if any (the metric values are kept)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
