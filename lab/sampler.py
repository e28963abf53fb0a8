"""Availability sampling: call a probe per target every `interval` seconds, in a thread per target, and
record every failure and the longest gap between two successful answers.

The e2e tier and bench/lifecycle.py use it to show that the metrics API never fails while certificates
are renewed or a CA is rotated (issue 13: sampled every 200 ms through every master):

    with Sampler({"master1": probe1, ...}, interval=0.2) as s:
        ...                      # the change under test
    report = s.report()          # report.failures == [] ; report.longest_gap_s
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


class ProbeFailed(Exception):
    """Raised by a probe whose answer is wrong (an answer that arrives but is not what it should be)."""


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
    longest_gap_s: float = 0.0  # the longest time between two successes of one target (from the start)
    duration_s: float = 0.0
    per_target: dict[str, int] = field(default_factory=dict)  # samples per target

    def summary(self) -> str:
        head = (f"{self.samples} samples in {self.duration_s:.1f}s, {len(self.failures)} failures, "
                f"longest gap {self.longest_gap_s:.2f}s")
        return "\n".join([head, *(f"  {f}" for f in self.failures[:20])])


class Sampler:
    """Probes each target every `interval` seconds until stopped (and at most `max_duration` seconds, so a
    forgotten sampler ends). A probe returns normally on success; any exception is a failure."""

    def __init__(self, probes: Mapping[str, Callable[[], object]], *, interval: float = 0.2,
                 max_duration: float = 1800.0):
        if not probes:
            raise ValueError("Sampler needs at least one probe")
        self._probes = dict(probes)
        self._interval = interval
        self._max = max_duration
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._report = Report(per_target={t: 0 for t in self._probes})
        self._t0 = 0.0

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._t0 = time.monotonic()
        for target, probe in self._probes.items():
            t = threading.Thread(target=self._run, args=(target, probe), name=f"sampler-{target}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> Report:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        with self._lock:
            self._report.duration_s = time.monotonic() - self._t0
        return self.report()

    def report(self) -> Report:
        with self._lock:
            r = self._report
            return Report(r.samples, list(r.failures), r.longest_gap_s, r.duration_s, dict(r.per_target))

    def _run(self, target: str, probe: Callable[[], object]) -> None:
        last_ok = self._t0
        next_at = self._t0
        while not self._stop.is_set() and time.monotonic() - self._t0 < self._max:
            started = time.monotonic()
            try:
                probe()
                ok, reason = True, ""
            except Exception as e:  # noqa: BLE001 - any failure of the probe is a failed sample
                ok, reason = False, f"{type(e).__name__}: {e}"[:300]
            now = time.monotonic()
            with self._lock:
                self._report.samples += 1
                self._report.per_target[target] += 1
                if ok:
                    self._report.longest_gap_s = max(self._report.longest_gap_s, now - last_ok)
                    last_ok = now
                else:
                    self._report.failures.append(Failure(target, started - self._t0, reason))
            # a fixed rate, not a fixed pause: a slow answer does not stretch the interval
            next_at += self._interval
            if next_at < now:
                next_at = now
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        with self._lock:  # a target failing up to the end counts its gap up to the end
            self._report.longest_gap_s = max(self._report.longest_gap_s, time.monotonic() - last_ok)
