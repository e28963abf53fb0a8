"""Availability sampling: call a probe per target at a fixed rate in a background thread, keep every sample,
and report the failures and the longest time without a successful answer.

The e2e tier and the benchmarks (bench/takeover.py, bench/lifecycle.py) use it to show that the metrics
API keeps answering while `up` takes over a cluster, renews a certificate or rotates a CA (issue 13: every
200 ms through every master):

    with Sampler({"master1": probe1, ...}, interval=0.2) as s:
        ...                      # the change under test
    report = s.report()          # report.failures == [] ; report.longest_gap_s

A probe returns normally (anything but False) on success; False or an exception is a failed sample. By
default each target has its own thread and is probed every `interval` seconds; `in_turn=True` probes the
targets one after the other, one sample every `interval` seconds in all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


class ProbeFailed(Exception):
    """Raised by a probe whose answer arrived but is wrong."""


@dataclass(frozen=True)
class Sample:
    sent: float  # time.time()
    answered: float
    ok: bool
    target: str
    reason: str = ""  # why it failed


@dataclass(frozen=True)
class Failure:
    target: str
    at_s: float  # seconds since the sampler started
    reason: str

    def __str__(self) -> str:
        return f"{self.target} at +{self.at_s:.1f}s: {self.reason}"


@dataclass
class Report:
    samples: int = 0
    failures: list[Failure] = field(default_factory=list)
    longest_gap_s: float = 0.0  # the longest stretch of the sampled window without an ok answer
    duration_s: float = 0.0
    per_target: dict[str, int] = field(default_factory=dict)  # samples per target

    def summary(self) -> str:
        head = (f"{self.samples} samples in {self.duration_s:.1f}s, {len(self.failures)} failures, "
                f"longest gap {self.longest_gap_s:.2f}s")
        return "\n".join([head, *(f"  {f}" for f in self.failures[:20])])


def longest_gap(samples: list[Sample], start: float, end: float) -> float:
    """The longest stretch of [start, end] without an ok answer (from one ok answer to the next)."""
    marks = [start, *sorted(s.answered for s in samples if s.ok and start <= s.answered <= end), end]
    return max(b - a for a, b in zip(marks, marks[1:], strict=False))


def most_unready(by_target: dict[str, list[Sample]]) -> tuple[int, float]:
    """(most targets whose latest answer was not ok at one moment, when): e.g. apiservers down at once."""
    events = sorted((s.answered, t, s.ok) for t, ss in by_target.items() for s in ss)
    state = dict.fromkeys(by_target, True)
    worst, when = 0, 0.0
    for at, t, ok in events:
        state[t] = ok
        down = sum(not v for v in state.values())
        if down > worst:
            worst, when = down, at
    return worst, when


class Sampler:
    """Probes the targets at a fixed rate until stopped, and at most `max_duration` seconds (a forgotten
    sampler ends): a sampler that reaches it records one failed sample per target, so a change that outlived
    the sampling window never passes as "no failures"."""

    def __init__(self, probes: Mapping[str, Callable[[], object]], *, interval: float = 0.2,
                 in_turn: bool = False, max_duration: float = 1800.0):
        if not probes:
            raise ValueError("Sampler needs at least one probe")
        self._probes = dict(probes)
        self._interval = interval
        self._max = max_duration
        self._in_turn = in_turn
        self._stop = threading.Event()
        self._lock = threading.Lock()
        groups = [tuple(self._probes)] if in_turn else [(t,) for t in self._probes]
        self._threads = [threading.Thread(target=self._run, args=(g,), name=f"sampler-{'+'.join(g)}", daemon=True)
                         for g in groups]
        self.samples: list[Sample] = []
        self.started = self.stopped = 0.0  # time.time()

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.started = time.time()
        for t in self._threads:
            t.start()

    def stop(self) -> Report:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self.stopped = time.time()
        return self.report()

    def taken(self, target: str | None = None) -> list[Sample]:
        """The samples so far (of one target)."""
        with self._lock:
            return [s for s in self.samples if target is None or s.target == target]

    def report(self) -> Report:
        samples = self.taken()
        end = self.stopped or time.time()
        # in turn, any target's ok answer closes a gap (one service behind several doors); else each its own
        groups = [samples] if self._in_turn else [[s for s in samples if s.target == t] for t in self._probes]
        return Report(
            samples=len(samples),
            failures=[Failure(s.target, s.sent - self.started, s.reason) for s in samples if not s.ok],
            longest_gap_s=max(longest_gap(g, self.started, end) for g in groups),
            duration_s=end - self.started,
            per_target={t: sum(s.target == t for s in samples) for t in self._probes},
        )

    def _probe(self, target: str) -> Sample:
        sent = time.time()
        try:
            ok, reason = self._probes[target]() is not False, ""
            if not ok:
                reason = "probe returned False"
        except Exception as e:  # noqa: BLE001 - any failure of the probe is a failed sample
            ok, reason = False, f"{type(e).__name__}: {e}"[:300]
        return Sample(sent, time.time(), ok, target, reason)

    def _run(self, targets: tuple[str, ...]) -> None:
        t0, k = time.monotonic(), 0  # the schedule: monotonic (a clock step does not bunch or skip samples)
        while not self._stop.is_set():
            if time.monotonic() - t0 >= self._max:
                # the change under test outlived the sampler: what was not sampled cannot count as answered
                now = time.time()
                with self._lock:
                    self.samples += [Sample(now, now, False, t, f"not sampled after max_duration={self._max:g}s")
                                     for t in targets]
                return
            sample = self._probe(targets[k % len(targets)])
            with self._lock:
                self.samples.append(sample)
            k += 1
            # a fixed rate, not a fixed pause: a slow answer does not stretch the schedule
            self._stop.wait(max(0.0, t0 + k * self._interval - time.monotonic()))
