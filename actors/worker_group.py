"""WorkerGroup: a set of Ray actors of one class, with their placement, their calls in flight
and their restarts (OpenRLHF's actor group, for an asynchronous driver).

The driver never holds an actor handle or an in-flight map of its own. It asks a group
which members can take a call, makes calls through the group (``call``), and collects
finished calls from all its groups at once (``wait_any``). Each finished call comes back
as a ``CallResult``: the value, or the error (its actor died during the call, or the call
itself raised), together with the ``tag`` the caller attached (for example the prompts of
a rollout call, to hand out again).

Restarts are Ray's (``max_restarts`` in the group's actor options): when a call fails
because its actor died, the group counts the death once, takes the member out of service,
and probes it (``__ray_ready__``, which every Ray actor answers) until Ray has rebuilt it;
a member Ray gave up on is left out from then on. An actor whose constructor raised cannot
be restarted into health: the group records why (``fatal``) and the driver stops the run
with that reason. A call that raised leaves its member in service.

Size. ``add`` starts more members; ``retire`` takes one out of service and stops its actor
once its calls have finished; ``drop`` stops it at once (its calls in flight fail as if it
had died, without counting a death). driver/scaling.py uses them to follow a target.

    workers = WorkerGroup(RolloutWorker, size=4, options={"num_cpus": 1, "max_restarts": -1},
                          make_kwargs=lambda i: {"worker_index": i, ...}, name="rollout worker")
    for member in workers.idle_members(max_calls=2):
        workers.call(member, lambda actor: actor.rollout.remote(prompts), tag=prompts)
    for result in wait_any([workers], timeout=0.5):
        result.value if result.ok else requeue(result.tag)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import ray
from ray.exceptions import ActorDiedError, ObjectLostError, RayActorError, RayError, RayTaskError

log = logging.getLogger(__name__)

PROBE_RETRY_S = 1.0  # pause between two probes of a member that is restarting
PROBE_DEADLINE_S = 300.0  # a member still unavailable after this long is given up


@dataclass
class CallResult:
    """One finished call of a group member."""

    group: "WorkerGroup"
    member: int  # index of the actor in its group
    tag: Any  # what the caller attached to the call
    refs: tuple  # every object reference the call returned (the first one is waited on)
    value: Any = None  # the first return value, when the call succeeded
    error: RayError | None = None  # why it did not: its actor died, or the call raised (a RayTaskError)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def actor_died(self) -> bool:
        """The call was lost with its actor (which Ray restarts); else the call itself raised."""
        return isinstance(self.error, RayActorError) and not isinstance(self.error, RayTaskError)

    @property
    def lost(self) -> bool:
        """The call's work is gone through no fault of its own: its actor died, or its
        result was lost with a node that left. Doing it again is the right answer."""
        return self.actor_died or isinstance(self.error, ObjectLostError)


@dataclass
class _Member:
    actor: Any  # the Ray actor handle
    restarting: bool = False  # out of service until a probe answers
    probe: ray.ObjectRef | None = None  # the probe in flight, while restarting
    next_probe: float = 0.0  # time.monotonic() of the next probe, while restarting without one
    down_since: float = 0.0
    dead: bool = False  # given up, retired or dropped: never called again
    retiring: bool = False  # no new calls; stopped once its calls in flight have finished
    starting: bool = True  # not yet known to be up: out of service until its first probe answers
    gave_up: bool = False  # Ray gave up on it (max_restarts spent, its node gone)
    node: str | None = None  # the Ray node it runs on (from its last probe)


def _node_id(actor_self) -> str:
    """Run inside a member (``__ray_call__``): the node it lives on. Module level so that Ray
    pickles it by reference."""
    return ray.get_runtime_context().get_node_id()


def start_actor(cls: type, options: dict, **kwargs):
    """Start plain class ``cls`` as a Ray actor with ``options``: the one way MARA makes an
    actor (a WorkerGroup starts its members with it too)."""
    return ray.remote(cls).options(**options).remote(**kwargs)


class WorkerGroup:
    def __init__(self, cls: type, *, size: int, options: dict, make_kwargs: Callable[[int], dict],
                 name: str) -> None:
        """Start ``size`` actors of plain class ``cls``: member i gets ``make_kwargs(i)``."""
        self.name = name
        # A member starts out of service: its first probe (which also says on which node it
        # runs) answers once Ray has placed and constructed it; no call waits on it before.
        self._start = lambda i: _Member(start_actor(cls, options, **make_kwargs(i)), restarting=True,
                                        down_since=time.monotonic())
        self._members = [self._start(i) for i in range(size)]
        self._inflight: dict[ray.ObjectRef, tuple[int, Any, tuple]] = {}
        self.failures = 0  # actor deaths noticed, each counted once
        self.fatal: str | None = None  # why the group cannot go on (a constructor raised)

    def __len__(self) -> int:
        return len(self._members)

    @property
    def actors(self) -> list:
        """The members' actor handles (to pass to other components, or to kill in tests)."""
        return [m.actor for m in self._members]

    # ------------------------------------------------------------------ calls
    def call(self, member: int, invoke: Callable[[Any], ray.ObjectRef | Sequence[ray.ObjectRef]],
             tag: Any = None) -> None:
        """Make a call on one member: ``invoke(actor)`` returns the call's reference(s)."""
        refs = invoke(self._members[member].actor)
        refs = tuple(refs) if isinstance(refs, (list, tuple)) else (refs,)
        self._inflight[refs[0]] = (member, tag, refs)

    def tags(self) -> list:
        """The tags of the calls in flight."""
        return [tag for _, tag, _ in self._inflight.values()]

    def calls_in_flight(self, member: int | None = None) -> int:
        return sum(1 for m, _, _ in self._inflight.values() if member is None or m == member)

    def available(self) -> list[int]:
        """Members in service: alive, not restarting, not retiring."""
        return [i for i, m in enumerate(self._members) if not m.restarting and not m.dead and not m.retiring]

    def live(self) -> list[int]:
        """Members that count towards the group's size: in service or restarting."""
        return [i for i, m in enumerate(self._members) if not m.dead and not m.retiring]

    # ------------------------------------------------------------------ size
    def add(self, count: int) -> list[int]:
        """Start ``count`` more members (Ray places them when resources allow); their indices."""
        first = len(self._members)
        self._members += [self._start(i) for i in range(first, first + count)]
        return list(range(first, first + count))

    def retire(self, member: int) -> None:
        """No new calls for ``member``; its actor stops once its calls in flight have finished."""
        self._members[member].retiring = True
        self._reap()

    def on_nodes(self, nodes: set[str]) -> list[int]:
        """Live members last seen on one of ``nodes``."""
        return [i for i in self.live() if self._members[i].node in nodes]

    def given_up(self) -> int:
        """Members Ray gave up on (not those retired or dropped on purpose)."""
        return sum(1 for m in self._members if m.gave_up)

    def drop(self, member: int) -> None:
        """Stop ``member`` now, for good (its calls in flight fail as if it had died)."""
        m = self._members[member]
        m.dead, m.restarting, m.probe = True, False, None
        ray.kill(m.actor, no_restart=True)

    def _reap(self) -> None:
        for i, m in enumerate(self._members):
            if m.retiring and not m.dead and not self.calls_in_flight(i):
                self.drop(i)

    def restarting(self) -> list[int]:
        """Members out of service until Ray has rebuilt them."""
        return [i for i, m in enumerate(self._members) if m.restarting]

    def idle_members(self, max_calls: int) -> list[int]:
        """Members in service with fewer than ``max_calls`` calls in flight, one entry per free slot."""
        return [i for i in self.available() for _ in range(max_calls - self.calls_in_flight(i))]

    def least_busy(self) -> int | None:
        """The member in service with the fewest calls in flight (None when none is in service)."""
        members = self.available()
        return min(members, key=self.calls_in_flight) if members else None

    def pending(self) -> list[ray.ObjectRef]:
        """References ``wait_any`` watches: calls in flight and restart probes (sent when due)."""
        self._reap()
        now = time.monotonic()
        for m in self._members:
            if m.restarting and m.probe is None and now >= m.next_probe:
                m.probe = m.actor.__ray_call__.remote(_node_id)
        return list(self._inflight) + [m.probe for m in self._members if m.probe is not None]

    def owns(self, ref: ray.ObjectRef) -> bool:
        return ref in self._inflight or any(m.probe == ref for m in self._members)

    def finish(self, ref: ray.ObjectRef) -> CallResult | None:
        """The result of a finished call, or None for a finished probe (the member is back)."""
        if ref not in self._inflight:
            self._probe_finished(ref)
            return None
        member, tag, refs = self._inflight.pop(ref)
        try:
            return CallResult(self, member, tag, refs, value=ray.get(ref))
        except RayTaskError as err:  # the call raised (also when an actor *it* called died): the member is fine
            return CallResult(self, member, tag, refs, error=err)
        except RayActorError as err:  # its actor died (or cannot be reached)
            self._member_down(member, err)
            return CallResult(self, member, tag, refs, error=err)
        except RayError as err:  # its result was lost (an ObjectLostError: its node left): the member may be fine
            return CallResult(self, member, tag, refs, error=err)

    # ------------------------------------------------------------------ restarts
    def _member_down(self, member: int, err: RayActorError) -> None:
        m = self._members[member]
        if err.actor_init_failed:
            m.dead = True
            self.fatal = f"{self.name} {member} cannot start: {str(err).strip().splitlines()[-1]}"
            return
        if m.restarting or m.dead or m.retiring:
            return  # already known to be down (or dropped on purpose): not a new death
        self.failures += 1
        log.warning("%s %d died (%s); waiting for Ray to restart it", self.name, member, type(err).__name__)
        print(f"{self.name} {member} died; Ray is restarting it, its calls are handed out again", flush=True)
        m.restarting, m.down_since, m.next_probe = True, time.monotonic(), 0.0

    def _probe_finished(self, ref: ray.ObjectRef) -> None:
        index, m = next((i, m) for i, m in enumerate(self._members) if m.probe == ref)
        m.probe = None
        try:
            node = ray.get(ref)
        except RayActorError as err:
            if err.actor_init_failed:
                m.restarting, m.dead = False, True
                self.fatal = f"{self.name} {index} cannot start: {str(err).strip().splitlines()[-1]}"
            elif isinstance(err, ActorDiedError) or time.monotonic() - m.down_since > PROBE_DEADLINE_S:
                # Calls to an actor that is restarting wait for it: a probe that fails with
                # ActorDiedError means Ray gave up on it (max_restarts spent, or its node gone).
                m.restarting, m.dead, m.gave_up = False, True, True
                log.error("%s %d is gone for good (%s); running without it", self.name, index, type(err).__name__)
                print(f"{self.name} {index} is gone for good; the run goes on without it", flush=True)
            else:  # unavailable for now: ask again soon
                m.next_probe = time.monotonic() + PROBE_RETRY_S
            return
        m.restarting, m.node = False, node
        if m.starting:
            m.starting = False
        else:
            print(f"{self.name} {index} is back", flush=True)


def wait_any(groups: Sequence[WorkerGroup], timeout: float) -> list[CallResult]:
    """Wait up to ``timeout`` seconds for calls of any of ``groups`` to finish; return every
    call that has finished by then (restart probes are handled on the way)."""
    pending = [ref for g in groups for ref in g.pending()]
    if not pending:
        time.sleep(timeout)
        return []
    ready, _ = ray.wait(pending, num_returns=1, timeout=timeout)
    if ready:  # and everything else that is ready too
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
    results = []
    for ref in ready:
        group = next(g for g in groups if g.owns(ref))
        result = group.finish(ref)
        if result is not None:
            results.append(result)
    return results
