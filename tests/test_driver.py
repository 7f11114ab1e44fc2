"""The training driver (driver/): configuration, the distributed run end to end on local Ray
with a tiny upstream model, resuming, failures and launch.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import ray
import yaml
from helpers import waiting

from helpers.models import slow_llm
from helpers.runs import ONE_ACTOR, tiny_config, training_run

import launch
from core.agent_file import SHIPPED_AGENT, read_agent_metadata, save_agent
from core.jsonl import read_jsonl
from core.networks import Actor
from core.prompts import load_prompts
from core.state_features import STATE_FEATURES, state_size
from envs.upstream import model_hidden_size
from driver.config import RunConfig, from_dict, load_config, save_config
from driver.metrics import METRICS
from driver.prompt_queue import PromptQueue
from driver.run import RunFailed
from driver.run_folder import new_run_dir, record_config
from evaluation.learning_curve import episode_rewards, plot_learning_curve, throughput
from replay.buffer import ReplayBuffer
from rewards.embedded import head_path, shipped_head_path

ROOT = Path(__file__).resolve().parents[1]


def test_config_round_trips_and_refuses_bad_values(tmp_path, tiny_llm_path):
    cfg = from_dict(RunConfig, tiny_config(tiny_llm_path, tmp_path))
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    over = load_config(tmp_path / "c.yaml", ["sac.batch_size=64", "rollout.num_workers=3"])
    assert over.sac.batch_size == 64 and over.rollout.num_workers == 3
    with pytest.raises(ValueError, match="unknown"):
        load_config(tmp_path / "c.yaml", ["sac.batchsize=64"])
    assert load_config(tmp_path / "c.yaml", ["sac.hidden_size=64"]).sac.hidden_size == 64  # the agent's, workers too
    # An earlier version's run folder repeated the agent's width as rollout.agent_hidden_size: read
    # where it agrees (such a run resumes), refused where it does not.
    assert load_config(tmp_path / "c.yaml", ["rollout.agent_hidden_size=32"]) == cfg
    with pytest.raises(ValueError, match="rollout.agent_hidden_size is retired"):
        load_config(tmp_path / "c.yaml", ["rollout.agent_hidden_size=64"])
    with pytest.raises(ValueError):
        load_config(tmp_path / "c.yaml", ["model.mode=greedy"])


def test_a_resume_that_changes_settings_records_them_and_keeps_the_earlier_ones(tmp_path, tiny_llm_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = from_dict(RunConfig, tiny_config(tiny_llm_path, tmp_path))
    assert record_config(cfg, run_dir) == [] and load_config(run_dir / "config.yaml") == cfg
    assert record_config(load_config(run_dir / "config.yaml"), run_dir) == []  # a plain resume
    assert not list(run_dir.glob("config.*.yaml"))

    changed = load_config(run_dir / "config.yaml", ["reward.fluency_weight=1.0", "budget.seconds=900"])
    assert record_config(changed, run_dir) == [
        f"reward.fluency_weight: {cfg.reward.fluency_weight!r} -> 1.0", "budget.seconds: 240.0 -> 900.0"]
    assert load_config(run_dir / "config.yaml") == changed  # a later plain resume goes on with these
    assert load_config(run_dir / "config.1.yaml") == cfg  # what the first part ran with
    record_config(load_config(run_dir / "config.yaml", ["budget.seconds=1200"]), run_dir)
    assert load_config(run_dir / "config.2.yaml") == changed
    (run_dir / "config.1.yaml").unlink()  # a user tidied up: the next one still goes after config.2
    record_config(load_config(run_dir / "config.yaml", ["budget.seconds=1500"]), run_dir)
    assert load_config(run_dir / "config.2.yaml") == changed
    assert load_config(run_dir / "config.3.yaml").budget.seconds == 1200.0


PROGRESS_LINE = re.compile(
    r"\[\s*\d+s\] workers \d+/\d+ \| episodes \d+ \| transitions \d+ \([\d.]+/s\) \| replay \d+ \| updates \d+ "
    r"\((nan|[\d.]+)/s\) \| reward (nan|-?[\d.]+) \| accept [\d.]+ \| weights v\d+ lag (nan|[\d.]+)")


def scrape_when(port: int, ready, timeout_s: float = 180) -> str:
    """Scrape the driver's Prometheus endpoint over loopback until ``ready(text)``."""
    deadline, text = time.monotonic() + timeout_s, ""
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:  # the run ended and closed the endpoint
            return text
        if ready(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def metric_value(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else float("nan")


def test_learner_updates_while_episodes_are_in_flight_and_every_metric_is_exported(
        ray_local, tiny_llm_path, tmp_path, capsys):
    # A deliberately slow environment: every forward of the upstream sleeps, so episodes take seconds.
    raw = tiny_config(tiny_llm_path, tmp_path, model={"name": slow_llm(0.05)}, budget={"episodes": 16})
    cfg = from_dict(RunConfig, raw)
    run_dir = new_run_dir(cfg)
    save_config(cfg, run_dir / "config.yaml")
    run = training_run(cfg, run_dir)
    port = run.sink.start_http_server(0)
    run.build()
    # Every metric of the issue, read from the loopback endpoint while the run goes on.
    # (An unset prometheus gauge reads 0, so wait for values that only training sets.)
    positive = ["mara_episodes_total", "mara_transitions_total", "mara_learner_updates_total",
                "mara_replay_size", "mara_samples_per_insert", "mara_updates_per_second",
                "mara_tokens_per_second", "mara_accept_rate", "mara_alpha", "mara_entropy",
                "mara_weight_version", "mara_mean_reward", "mara_transitions_per_second", "mara_rollout_workers",
                "mara_rollout_workers_target"]
    nonzero = ["mara_critic_loss", "mara_actor_loss"]

    def all_set(text: str) -> bool:
        return all(metric_value(text, n) > 0 for n in positive) and \
            all(abs(metric_value(text, n)) > 0 for n in nonzero)  # nan (absent) compares False

    scraped = {}
    scraper = threading.Thread(target=lambda: scraped.setdefault("text", scrape_when(port, all_set)))
    scraper.start()
    close_endpoint = run.sink.stop
    run.sink.stop = lambda: (scraper.join(timeout=180), close_endpoint())  # after the final report
    # The learner's update count, read every 50 ms while the run goes on.
    counts, running = [], threading.Event()
    running.set()

    def watch_the_learner():
        while running.is_set():
            counts.append((time.time(), ray.get(run.learner.metrics.remote()).updates))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_the_learner)
    watcher.start()
    summary = run.run()
    running.clear()
    watcher.join()
    scraper.join()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rollouts = [r for r in records if r.get("event") == "rollout"]
    assert summary["learner_updates"] > 0 and summary["episodes"] >= 16
    # Two readings taken while one rollout call was decoding, between which the learner's
    # update count grew: the learner trained while that episode was in flight.
    overlapping = [(a, b) for a, b in zip(counts, counts[1:]) if b[1] > a[1]
                   and any(r["episode_start"] < a[0] and b[0] < r["episode_end"] for r in rollouts)]
    assert overlapping, "no learner update happened while an episode was being decoded"
    assert summary["weight_version"] > 0  # the learner published (workers take it: test_rollout_worker.py)
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "replay.arrow", "agent.safetensors",
                 "summary.json", "state.json"):
        assert (run_dir / name).is_file(), name
    assert summary["replay"]["size"] == summary["inserted"]

    # The progress display, and every metric of the issue on the loopback endpoint mid-run.
    progress = [line for line in capsys.readouterr().out.splitlines() if PROGRESS_LINE.search(line)]
    assert len(progress) >= 2, "no progress display"
    text = scraped["text"]
    assert {n: metric_value(text, n) for n in positive if not metric_value(text, n) > 0} == {}
    assert all(metric_value(text, n) != 0 for n in nonzero)
    assert {f"mara_{n}" for n, d in METRICS.items() if d.kind == "gauge"} <= set(positive + nonzero) | {
        "mara_policy_version_lag"}  # the lag may rightly be 0


def test_sync_mode_runs_exactly_the_updates_per_episode_and_never_alongside_rollouts(ray_local, tiny_llm_path,
                                                                                     tmp_path):
    cfg = from_dict(RunConfig, tiny_config(tiny_llm_path, tmp_path, mode="sync", sync_updates_per_episode=3,
                                           replay={"min_size_to_sample": 1, **ONE_ACTOR}, budget={"episodes": 12},
                                           model={"name": slow_llm(0)}))  # the loop is under test, not the LLM
    run = training_run(cfg)
    run.build()
    summary = run.run()
    assert summary["status"] == "completed"
    # Every episode was followed by exactly 3 updates (the replay could sample from the start).
    assert summary["episodes"] >= 12
    assert summary["learner_updates"] == 3 * summary["episodes"]
    records = read_jsonl(run.run_dir / "metrics.jsonl")
    rounds = [r for r in records if r.get("event") == "sync_updates"]
    rollouts = [r for r in records if r.get("event") == "rollout"]
    assert rounds and sum(r["updates"] for r in rounds) == summary["learner_updates"]
    assert all(r["updates"] == 3 * r["episodes"] for r in rounds)
    # No rollout decoded while the learner was updating.
    for u in rounds:
        for r in rollouts:
            assert r["episode_end"] <= u["start"] or r["episode_start"] >= u["end"], (r, u)


def test_mara_scale_changes_the_workers_of_a_running_run_and_a_killed_worker_loses_no_data(ray_local, tiny_llm_path,
                                                                                            tmp_path, capsys):
    """One worker, scaled to two with ``mara scale``; worker 0 killed mid-episode and replaced by
    Ray; scaled back to one. Nothing inserted is lost and every episode counted is inserted once.
    The budget is only a backstop: the test ends the run."""
    from cli.main import main as mara

    cfg = from_dict(RunConfig, tiny_config(tiny_llm_path, tmp_path, budget={"episodes": 0, "seconds": 540},
                                           model={"name": slow_llm(0.01)}))
    run = training_run(cfg)
    save_config(cfg, run.run_dir / "config.yaml")  # as launch.py does: what makes it a run folder
    run.build()
    result: dict = {}
    training = threading.Thread(target=lambda: result.update(summary=run.run()))
    training.start()

    def wait_for(condition, what: str):
        return waiting.wait_for(condition, what, timeout_s=300, while_alive=training.is_alive)

    def rollouts_of(worker: int, since: float = 0.0) -> list[dict]:
        return [r for r in read_jsonl(run.run_dir / "metrics.jsonl")  # skips a line being written
                if r.get("event") == "rollout" and r["worker"] == worker and r["episode_start"] > since]

    def worker_0_busy_with_data() -> bool:
        try:
            return run.rollouts.calls_in_flight(0) > 0 and ray.get(run.replay.stats.remote())["size"] > 0
        except RuntimeError:  # the driver changed its calls while we looked: look again
            return False

    try:
        wait_for(lambda: rollouts_of(0), "the first worker's rollouts")
        assert mara(["scale", str(run.run_dir), "--workers", "2"]) == 0
        wait_for(lambda: len(run.rollouts.live()) == 2 and rollouts_of(1), "a second worker")
        # Kill worker 0 while it has a rollout call in flight, so the kill lands mid-episode.
        wait_for(worker_0_busy_with_data, "worker 0 decoding, with data in the replay")
        snapshot = ray.get(run.replay.save.remote(str(tmp_path / "at_kill.arrow")))["path"]
        killed_at = time.time()
        ray.kill(run.rollouts.actors[0], no_restart=False)
        wait_for(lambda: rollouts_of(0, since=killed_at), "worker 0's replacement decoding")
        assert mara(["scale", str(run.run_dir), "--workers", "1"]) == 0
        wait_for(lambda: len(run.rollouts.live()) == 1 and not run.rollouts.calls_in_flight(1), "one worker again")
    finally:
        run.learner.stop.remote()  # ends the run (as an update budget would)
        training.join(timeout=300)
    summary = result["summary"]
    assert summary["status"] == "completed" and summary["rollout_workers_target"] == 1
    assert summary["worker_failures"] == 1  # one death, counted once however many calls it failed
    # Nothing inserted before the kill is lost: those slots are unchanged at the end.
    before = ReplayBuffer.load(snapshot)
    after = ReplayBuffer.load(run.run_dir / "replay.arrow")
    n = before.size()
    assert 0 < n < after.size() <= after.capacity  # no ring wrap-around in this run
    for name in ("_states", "_actions", "_rewards", "_dones", "_policy_versions"):
        np.testing.assert_array_equal(getattr(after, name)[:n], getattr(before, name)[:n], err_msg=name)
    # And every transition of every episode the driver counted reached the replay, once (the
    # killed call's episodes never existed, its prompts were handed out again; the retired
    # worker's episodes were kept).
    stats = ray.get(run.replay.stats.remote())
    assert stats["inserted_transitions"] == summary["inserted"] == summary["transitions"]
    assert summary["replay"]["size"] == summary["inserted"]
    assert mara(["scale", str(tmp_path), "--workers", "2"]) == 2  # not a run folder
    assert mara(["scale", str(run.run_dir), "--workers", "lots"]) == 2
    assert "--workers must be a number or 'auto'" in capsys.readouterr().err


def test_a_worker_that_cannot_start_stops_the_run_with_its_reason(ray_local, tiny_llm_path, tmp_path):
    # The driver reads the model's config (fine); the workers cannot read its weights.
    broken = tmp_path / "bad-weights"
    shutil.copytree(tiny_llm_path, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    cfg = from_dict(RunConfig, tiny_config(broken, tmp_path, replay=ONE_ACTOR))
    run = training_run(cfg)
    run.build()
    with pytest.raises(RunFailed, match="rollout worker 0 cannot start: .*Error"):
        run.run()
    assert (run.run_dir / "summary.json").is_file()  # stopped through the normal shutdown


def test_prompts_are_spread_over_workers_without_overlap_and_resume():
    prompts = [f"prompt {i}" for i in range(10)]
    queue = PromptQueue(prompts, seed=0)
    first, second = queue.take(3), queue.take(3)  # two workers' calls
    assert not set(first) & set(second) and queue.position == 6
    queue.give_back(second)  # a failed call: its prompts are handed out again first
    resumed = PromptQueue(prompts, seed=0, position=queue.position, retry=list(queue.retry))
    for q in (queue, resumed):  # resuming from the saved position and retry list changes nothing
        again = q.take(4)
        assert again == second + [q.prompts[6]]
        assert sorted(first + again + q.take(3)) == sorted(prompts)  # one pass: each prompt once


def test_the_default_configuration_is_the_embedded_offline_run(smollm2_path):
    cfg = load_config()
    assert cfg.model.name == "smollm2" and cfg.address == ""  # local Ray unless told otherwise
    assert len(load_prompts(cfg.prompts.source)) >= 50  # the prompts that ship with the project
    assert [s.kind for s in cfg.reward.scorers] == ["answer-reader"]  # the offline reader reward
    assert all(head_path(s.path, s.kind) == shipped_head_path("reader-reward") for s in cfg.reward.scorers)
    assert shipped_head_path("reader-reward").is_file()
    assert 0 < cfg.budget.seconds <= 600 and cfg.budget.episodes > 0


def test_launch_py_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert launch.main(["--set", "sac.batchsize=3"]) == 2
    assert "launch.py: error: unknown sac setting(s) ['batchsize']" in capsys.readouterr().err
    assert launch.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert launch.main(["--resume", str(tmp_path / "no-run")]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.parametrize("setting, message", [
    ("prompts.source=MISSING/prompts.json", "prompt file not found"),
    ("prompts.source=EMPTY", "no prompts found"),
    ("prompts.source=BLANK", "no prompts found"),
    ("model.name=MISSING/model", "model folder not found"),
    ("reward.scorers=[{kind: function, path: 'rewards.examples:nothing_here'}]", "cannot be found"),
    ("reward.scorers=[{kind: embedding-bt, path: MISSING/head.safetensors}]", "head file not found"),
    ("learner.init_agent=MISSING/agent.safetensors", "agent file not found"),
    ("learner.init_agent=SHIPPED", "reads states of size 576, but this run's states are of size 64"),
    ("learner.init_agent=BAD_ALPHA", "recorded temperature alpha = warm is not a positive number"),
    ("learner.init_agent=PROMPT_STATES", "reads candidate+prompt states, which this run's rollout.state_features "
                                         "candidate"),
])
def test_input_errors_are_reported_before_ray_starts_and_before_a_run_folder(tmp_path, capsys, tiny_llm_path,
                                                                                monkeypatch, setting, message):
    def train(*args, **kwargs):  # what starts Ray: it must not be reached
        raise AssertionError("the run started before its inputs were checked")

    monkeypatch.setattr(launch, "train", train)
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "blank.json").write_text('[{"instruction": "  "}, {"instruction": ""}]')
    setting = setting.replace("MISSING", str(tmp_path / "missing")).replace("EMPTY", str(tmp_path / "empty.json"))
    setting = setting.replace("BLANK", str(tmp_path / "blank.json")).replace("SHIPPED", str(SHIPPED_AGENT))
    # agents that fit the model and the networks, with a temperature that is not one, or that read other states
    actor = Actor(state_dim=model_hidden_size(str(tiny_llm_path)), hidden_size=RunConfig().sac.hidden_size)
    if "BAD_ALPHA" in setting:
        setting = setting.replace("BAD_ALPHA", str(save_agent(actor, tmp_path / "agent.safetensors", alpha="warm")))
    if "PROMPT_STATES" in setting:
        path = save_agent(actor, tmp_path / "agent.safetensors", state_features="candidate+prompt")
        setting = setting.replace("PROMPT_STATES", str(path))
    runs = tmp_path / "runs"
    assert launch.main(["--set", f"output_dir={runs}", "--set", f"model.name={tiny_llm_path}", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith("launch.py: error: ") and message in err and "Traceback" not in err
    assert not runs.exists()  # no folder left behind


def test_resuming_a_folder_with_nothing_to_resume_says_so(tmp_path, capsys, tiny_llm_path):
    run_dir = tmp_path / "runs" / "early"
    save_config(from_dict(RunConfig, tiny_config(tiny_llm_path, tmp_path)), run_dir / "config.yaml")
    assert launch.main(["--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume in" in err and "no learner checkpoint, no replay snapshot and no saved state" in err
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]


def launch_py(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "launch.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def interrupted_run(config: Path | None, run_dir: Path, interrupt, *args: str, past: dict | None = None
                    ) -> tuple[dict, str, set]:
    """Start launch.py with ``args`` (and ``--config config`` if given), call ``interrupt(proc)``
    once its progress shows more episodes and learner updates than ``past`` (a summary of an
    earlier part; default: none), and return the summary of the run it stopped cleanly
    (exit 0), what it printed, and the TCP addresses its processes (the local Ray cluster's
    included) listened on just before."""
    proc = launch_py(*(("--config", str(config)) if config else ()), *args, start_new_session=True)
    output, sockets = [], set()
    try:
        for line in proc.stdout:
            output.append(line)
            shown = progress_counts(line)
            if shown and all(shown[count] > (past or {}).get(count, 0) for count in shown):
                sockets = listening_sockets(proc.pid)
                interrupt(proc)
                break
        output.extend(proc.stdout)
        assert proc.wait(timeout=120) == 0, "".join(output)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted: stopping cleanly and saving" in "".join(output)
    assert "Prometheus metrics: http://127.0.0.1:" in "".join(output)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] and summary["episodes"] > 0
    for name in ("replay.arrow", "agent.safetensors", "state.json", "checkpoints/latest.json"):
        assert (run_dir / name).is_file(), name
    assert ReplayBuffer.load(run_dir / "replay.arrow").size() == summary["replay"]["size"] > 0
    return summary, "".join(output), sockets


def progress_counts(line: str) -> dict[str, int] | None:
    """The episodes and learner updates a progress line shows (named as a summary names them)."""
    if not PROGRESS_LINE.search(line):
        return None
    return {"episodes": int(re.search(r"episodes (\d+)", line).group(1)),
            "learner_updates": int(re.search(r"updates (\d+)", line).group(1))}


def listening_sockets(pid: int) -> set[tuple[str, int, str]]:
    """(address, port, process name) of every TCP socket that process ``pid`` or one of its
    descendants listens on."""
    import psutil

    root = psutil.Process(pid)
    sockets = set()
    for p in [root, *root.children(recursive=True)]:
        try:
            sockets |= {(c.laddr.ip, c.laddr.port, p.name()) for c in p.net_connections(kind="tcp")
                        if c.status == psutil.CONN_LISTEN}
        except psutil.Error:  # a process that ended while we looked
            pass
    return sockets


def interruptible_config(tiny_llm_path: Path, tmp_path: Path) -> Path:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_llm_path, tmp_path, budget={"episodes": 0, "seconds": 300},
                                                 model={"name": slow_llm(0.01)})))
    return config


def test_sigterm_and_ctrl_c_stop_launch_py_cleanly_and_a_resume_goes_on_with_what_was_saved(
        tiny_llm_path, tmp_path):
    """A scheduler's (or ``kill``'s) SIGTERM to launch.py alone stops the run cleanly and saves;
    so does Ctrl-C in a terminal, which sends SIGINT to the whole foreground process group (the
    local Ray cluster's processes too), here to the resumed run, which goes on from the saved
    counters, replay and learner with a changed budget. It trains the agent on every part of the
    state (core/state_features.py); the other runs use the paper's. The first part's local Ray
    cluster, dashboard included, listens on loopback only. (A resumed run that goes on to its
    budget: test_recovery.py.)"""
    features = STATE_FEATURES[-1]
    run_dir = tmp_path / "runs" / "smoke"
    config = interruptible_config(tiny_llm_path, tmp_path)
    first, _, sockets = interrupted_run(config, run_dir, lambda proc: proc.send_signal(signal.SIGTERM),
                                        "--set", "run_name=smoke", "--set", f"rollout.state_features={features}",
                                        "--set", "dashboard=true")
    assert len(sockets) >= 5  # GCS, raylet, object manager, dashboard, agents, workers, Prometheus...
    exposed = [s for s in sockets if s[0] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
    assert exposed == [], f"listening beyond loopback: {exposed}"

    target = 10_000  # not reached before the interrupt
    summary, out, _ = interrupted_run(None, run_dir, lambda proc: os.killpg(proc.pid, signal.SIGINT),
                                      "--resume", str(run_dir), "--set", f"budget.episodes={target}", past=first)
    assert summary["episodes"] > first["episodes"] and summary["transitions"] > first["transitions"]
    assert summary["learner_updates"] >= first["learner_updates"]
    assert summary["replay"]["size"] > first["replay"]["size"]
    # The folder says what the resumed part ran with, and keeps what the first part ran with.
    assert f"budget.episodes: {load_config(run_dir / 'config.1.yaml').budget.episodes!r} -> {target!r}" in out
    assert load_config(run_dir / "config.yaml").budget.episodes == target
    # The agent file says what it was trained against (mara eval reads it).
    meta = read_agent_metadata(run_dir / "agent.safetensors")
    assert json.loads(meta["reward"]) == [{"kind": "function", "path": "rewards.examples:word_count",
                                           "weight": 1.0}]
    assert int(meta["episodes"]) == summary["episodes"] and meta["run"] == "smoke"
    assert int(meta["episode_tokens"]) == yaml.safe_load(config.read_text())["sampling"]["max_new_tokens"]
    # what the workers' upstream computed states in, as they reported it: this synthetic upstream
    # computes in float32 whatever model.dtype says (a real one resolves "auto": test_rollout_worker.py)
    assert meta["upstream_dtype"] == "float32"
    # and the states its agent reads
    assert meta["state_features"] == features
    assert int(meta["state_dim"]) == state_size(features, model_hidden_size(str(tiny_llm_path)))
    # Every scored episode's reward is in metrics.jsonl: the learning curve.
    rewards = episode_rewards(run_dir)
    assert 0 < len(rewards) <= summary["episodes"] and np.isfinite(rewards).all()
    png = plot_learning_curve(run_dir, tmp_path / "curve.png", block=2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert throughput(run_dir)["episodes"] == summary["episodes"]


def test_block_means_drop_the_partial_block():
    from evaluation.learning_curve import block_means

    assert block_means(np.arange(7, dtype=float), 3).tolist() == [1.0, 4.0]
    with pytest.raises(ValueError):
        block_means(np.arange(3.0), 0)
