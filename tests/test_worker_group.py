"""WorkerGroup (actors/worker_group.py): calls with tags, members that die and come back, a
death counted once however many calls it failed, and a constructor that raises."""

from __future__ import annotations

import time

from actors.worker_group import WorkerGroup, wait_any

DEADLINE_S = 120


def _echo_cls():
    """A plain class, defined in a function so that Ray ships it by value (its workers cannot
    import test modules)."""

    class Echo:
        def __init__(self, index: int, fail: bool = False) -> None:
            if fail:
                raise RuntimeError(f"member {index} refuses to start")
            self.index, self.started = index, 0

        def echo(self, value, delay_s: float = 0.0):
            import time

            self.started += 1
            time.sleep(delay_s)
            return self.index, value

        def calls_started(self) -> int:
            return self.started

        def fail(self):
            raise ValueError("this call cannot be answered")

        def pid(self) -> int:
            import os

            return os.getpid()

    return Echo


def collect(groups, until, timeout_s: float = DEADLINE_S) -> list:
    """Results of ``wait_any`` until ``until(results)`` holds (or the deadline passes)."""
    results, deadline = [], time.monotonic() + timeout_s
    while not until(results) and time.monotonic() < deadline:
        results += wait_any(groups, timeout=0.5)
    return results


def started(group, timeout_s: float = DEADLINE_S) -> bool:
    """Wait until no member waits for its first probe (each is in service or given up);
    True if all are in service. No call may be in flight meanwhile."""
    deadline = time.monotonic() + timeout_s
    while group.restarting() and time.monotonic() < deadline:
        for result in wait_any([group], timeout=0.5):
            raise AssertionError(f"a call of {group.name} {result.member} finished while starting")
    return len(group.available()) == len(group)


def test_calls_come_back_with_their_tags_and_members_are_loaded_evenly(ray_local):
    group = WorkerGroup(_echo_cls(), size=2, options={"num_cpus": 0}, make_kwargs=lambda i: {"index": i},
                        name="echo")
    assert group.idle_members(max_calls=2) == []  # members take calls once they are up
    assert started(group)
    assert group.idle_members(max_calls=2) == [0, 0, 1, 1]
    for n, member in enumerate(group.idle_members(max_calls=2)):
        group.call(member, lambda actor: actor.echo.remote(n), tag=f"call {n}")
    assert group.calls_in_flight() == 4 and group.idle_members(max_calls=2) == []
    results = collect([group], lambda r: len(r) == 4)
    assert sorted((r.member, r.value, r.tag) for r in results) == [
        (0, (0, 0), "call 0"), (0, (0, 1), "call 1"), (1, (1, 2), "call 2"), (1, (1, 3), "call 3")]
    assert all(r.ok and r.group is group for r in results)
    group.call(1, lambda actor: actor.echo.remote("x", 30.0))
    assert group.least_busy() == 0
    for actor in group.actors:
        ray_local.kill(actor)


def test_a_member_that_dies_is_counted_once_and_comes_back(ray_local):
    ray = ray_local
    group = WorkerGroup(_echo_cls(), size=2, options={"num_cpus": 0, "max_restarts": -1, "max_concurrency": 4},
                        make_kwargs=lambda i: {"index": i}, name="echo")
    assert started(group)
    old_pid = ray.get(group.actors[0].pid.remote())
    for n in range(3):  # three calls in flight on member 0 when it dies
        group.call(0, lambda actor: actor.echo.remote(n, 30.0), tag=n)
    deadline = time.monotonic() + DEADLINE_S
    while ray.get(group.actors[0].calls_started.remote()) < 3:
        assert time.monotonic() < deadline, "the calls never started"
        time.sleep(0.05)
    ray.kill(group.actors[0], no_restart=False)
    failed = collect([group], lambda r: len(r) == 3)
    assert sorted(r.tag for r in failed) == [0, 1, 2] and not any(r.ok for r in failed)
    assert group.failures == 1  # one death, three failed calls
    assert 0 not in group.available() and group.restarting() == [0]

    # Ray rebuilds it; the group's probe notices and puts it back in service.
    deadline = time.monotonic() + DEADLINE_S
    while 0 not in group.available() and time.monotonic() < deadline:
        wait_any([group], timeout=0.5)
    assert 0 in group.available() and group.restarting() == [] and group.fatal is None
    group.call(0, lambda actor: actor.echo.remote("again"))
    (result,) = collect([group], lambda r: len(r) == 1)
    assert result.ok and result.value == (0, "again")
    assert ray.get(group.actors[0].pid.remote()) != old_pid  # a new process
    for actor in group.actors:
        ray.kill(actor)


def test_a_member_that_cannot_start_makes_the_group_fatal(ray_local):
    group = WorkerGroup(_echo_cls(), size=2, options={"num_cpus": 0, "max_restarts": -1},
                        make_kwargs=lambda i: {"index": i, "fail": i == 1}, name="echo")
    assert not started(group)  # its first probe says why: no call is ever made on it
    assert group.fatal is not None and group.fatal.startswith("echo 1 cannot start: ")
    assert "member 1 refuses to start" in group.fatal
    assert group.available() == [0] and group.restarting() == []  # given up, not waited for
    for actor in group.actors:
        ray_local.kill(actor)


def test_a_call_that_raises_leaves_its_member_in_service(ray_local):
    group = WorkerGroup(_echo_cls(), size=1, options={"num_cpus": 0}, make_kwargs=lambda i: {"index": i},
                        name="echo")
    assert started(group)
    group.call(0, lambda actor: actor.fail.remote(), tag="bad")
    (result,) = collect([group], lambda r: len(r) == 1)
    assert not result.ok and not result.actor_died and "cannot be answered" in str(result.error)
    assert group.failures == 0 and group.available() == [0] and group.fatal is None
    group.call(0, lambda actor: actor.echo.remote("fine"))
    (result,) = collect([group], lambda r: len(r) == 1)
    assert result.ok and result.value == (0, "fine")
    for actor in group.actors:
        ray_local.kill(actor)


def test_members_added_retired_and_dropped(ray_local):
    group = WorkerGroup(_echo_cls(), size=1, options={"num_cpus": 0, "max_concurrency": 2},
                        make_kwargs=lambda i: {"index": i}, name="echo")
    assert group.add(2) == [1, 2] and group.live() == [0, 1, 2]
    assert started(group) and group.available() == [0, 1, 2]
    # Retired with a call in flight: the call still comes back, then the member is stopped.
    group.call(1, lambda actor: actor.echo.remote("last", 1.0), tag="last")
    group.retire(1)
    assert group.live() == [0, 2] and 1 not in group.idle_members(max_calls=1)
    (result,) = collect([group], lambda r: len(r) == 1)
    assert result.ok and result.tag == "last"
    # Dropped with a call in flight: the call is lost (to be done again), no death is counted.
    group.call(2, lambda actor: actor.echo.remote("cut", 30.0), tag="cut")
    group.drop(2)
    (result,) = collect([group], lambda r: len(r) == 1)
    assert result.lost and result.tag == "cut" and group.failures == 0
    assert group.live() == [0] and group.available() == [0]
    for actor in group.actors:
        ray_local.kill(actor)
