"""driver.metrics: the Prometheus endpoint over real loopback HTTP, Ray export, the JSONL/CSV log."""

from __future__ import annotations

import csv
import json
import time
import urllib.request

import psutil
import pytest


from core.jsonl import read_jsonl
from driver.metrics import METRICS, PREFIX, MetricsLog, MetricsSink


def loopback_only(port: int) -> bool:
    """Who listens on ``port``: this process, on 127.0.0.1 and nowhere else."""
    listening = [c.laddr.ip for c in psutil.Process().net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    return listening == ["127.0.0.1"]


def scrape(port: int, host: str = "127.0.0.1") -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        return r.read().decode()


@pytest.fixture
def sink():
    s = MetricsSink()
    yield s
    s.stop()


def test_every_metric_is_defined_once_with_prefix():
    required = {
        "episodes", "transitions", "tokens_per_second", "replay_size", "samples_per_insert",
        "learner_updates", "updates_per_second", "critic_loss", "actor_loss", "alpha",
        "entropy", "accept_rate", "mean_reward", "weight_version", "policy_version_lag",
    }
    assert required <= set(METRICS)
    assert {METRICS[n].kind for n in ("episodes", "transitions", "learner_updates")} == {"counter"}
    for name, d in METRICS.items():
        assert d.name == name and d.full_name == PREFIX + name and d.description
        if d.kind == "histogram":
            assert d.buckets and min(d.buckets) > 0  # Ray refuses non-positive boundaries


def test_http_endpoint_exports_recorded_values(sink):
    port = sink.start_http_server(0)
    assert port > 0 and sink.port == port
    sink.record({"replay_size": 123, "critic_loss": 0.25, "episodes": 2, "episode_length": 40})
    sink.inc("episodes")
    sink.inc("learner_updates", 10)
    text = scrape(port)
    assert "mara_replay_size 123.0" in text
    assert "mara_critic_loss 0.25" in text
    assert "mara_episodes_total 3.0" in text
    assert "mara_learner_updates_total 10.0" in text
    assert "mara_episode_length_count 1.0" in text
    assert 'mara_episode_length_bucket{le="64.0"} 1.0' in text
    assert "# HELP mara_alpha SAC entropy temperature alpha." in text
    # Gauges are overwritten, not summed.
    sink.record({"replay_size": 7})
    assert "mara_replay_size 7.0" in scrape(port)


def test_endpoint_binds_loopback_by_default_and_stops(sink):
    port = sink.start_http_server(0)
    assert loopback_only(port)
    with pytest.raises(RuntimeError, match="already running"):
        sink.start_http_server(0)
    sink.stop()
    assert sink.port is None
    with pytest.raises(OSError):
        scrape(port)


def test_sinks_are_independent_and_tagged():
    a, b = MetricsSink(), MetricsSink(tags={"component": "learner"})
    a.record({"alpha": 0.5})
    b.record({"alpha": 0.01})
    with a, b:
        text_a, text_b = scrape(a.start_http_server(0)), scrape(b.start_http_server(0))
    assert "mara_alpha 0.5" in text_a and "0.01" not in text_a
    assert 'mara_alpha{component="learner"} 0.01' in text_b


def test_unknown_names_and_bad_values_raise_before_any_update(sink):
    with pytest.raises(KeyError, match="replay_sze.*known metrics: .*replay_size"):
        sink.record({"replay_size": 5, "replay_sze": 1})
    with pytest.raises(KeyError, match="known metrics"):
        sink.inc("episode")
    with pytest.raises(TypeError, match="not a counter"):
        sink.inc("alpha")
    with pytest.raises(ValueError, match="only go up"):
        sink.record({"replay_size": 5, "episodes": -1})
    sink.inc("transitions", 0)  # no-op, not an error
    text = scrape(sink.start_http_server(0))
    assert "mara_replay_size 0.0" in text  # the failed calls changed nothing
    assert "mara_episodes_total 0.0" in text


def test_jsonl_log_round_trips_and_writes_csv(tmp_path):
    import numpy as np

    records = [
        {"step": 1, "critic_loss": 1.5, "replay_size": 10},
        {"step": 2, "critic_loss": np.float32(0.5), "replay_size": 20, "alpha": 0.01},
    ]
    with MetricsLog(tmp_path / "run") as log:
        for r in records:
            log.write(r)
        # Flushed per line: another reader sees both records before close.
        assert len(read_jsonl(log.path)) == 2
    assert log.path == tmp_path / "run" / "metrics.jsonl"
    rows = read_jsonl(log.path)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[1]["critic_loss"] == 0.5 and rows[1]["alpha"] == 0.01
    assert all(isinstance(r["time"], float) for r in rows)

    # A process killed mid-write leaves a torn last line: it is skipped, not fatal.
    with open(log.path, "a") as f:
        f.write('{"step": 3, "crit')
    assert len(read_jsonl(log.path)) == 2

    with MetricsLog(tmp_path / "run") as log:  # reopening appends
        log.write({"step": 4})
        csv_path = log.to_csv(tmp_path / "metrics.csv")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["time", "step", "critic_loss", "replay_size", "alpha"]
    assert [r["step"] for r in rows] == ["1", "2", "4"]
    assert rows[0]["alpha"] == "" and rows[1]["replay_size"] == "20"
    assert json.loads(log.path.read_text().splitlines()[0])["step"] == 1


def test_recording_inside_a_ray_actor_reaches_rays_metrics_export(ray_local):
    ray = ray_local

    @ray.remote(num_cpus=0)
    class Recorder:
        def record(self) -> str:
            from core import metrics as core_metrics
            from driver import metrics

            sink = metrics.MetricsSink(tags={"component": "test_actor"})
            sink.record({"replay_size": 77, "episodes": 2, "episode_length": 100})
            sink.inc("learner_updates")
            assert core_metrics._in_ray() and core_metrics._RAY_METRICS
            import prometheus_client

            return prometheus_client.generate_latest(sink.registry).decode()

    recorder = Recorder.remote()  # kept alive until Ray has exported what it recorded
    local_text = ray.get(recorder.record.remote())
    assert 'mara_replay_size{component="test_actor"} 77.0' in local_text

    # Ray exports it with a "ray_" prefix on the node's metrics port (about every 10 s).
    port = ray._private.worker.global_worker.node.metrics_export_port
    deadline = time.monotonic() + 120
    while True:
        try:
            text = scrape(port)
        except OSError:
            text = ""
        lines = [l for l in text.splitlines() if l.startswith("ray_mara_replay_size{")]
        if any('component="test_actor"' in l and l.endswith(" 77.0") for l in lines):
            break
        assert time.monotonic() < deadline, "ray_mara_replay_size never reached Ray's export"
        time.sleep(1)
    ray.kill(recorder)
