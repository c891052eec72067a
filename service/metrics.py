"""Prometheus metrics, one registry per app (tests and several apps in a process never collide).

Conventions: prefix ``guidance_``, counters end in ``_total``, durations are ``_seconds``
histograms, and labels only take values from closed sets (program kinds, results, formats and
error codes), never an id, a hash or client text.

    guidance_compiles_total{kind,result}        compile requests; result: compiled|cached|error
    guidance_compile_duration_seconds{kind}     compiles that ran (not cache hits)
    guidance_compiles_pending                   compiles running or queued
    guidance_cache_{hits,misses,evictions}_total, guidance_cache_entries, guidance_cache_bytes
    guidance_negative_cache_hits_total          compiles refused from the failed-compile cache
    guidance_negative_cache_entries             failed compiles remembered
    guidance_cache_protected_entries            programs used more than once (not evicted by one-offs)
    guidance_cache_promotions_total             programs moved to the protected segment on reuse
    guidance_compile_worker_crashes_total       compile workers that died mid-compile (422 compile-crashed)
    guidance_compiles_cancelled_total           compiles stopped or never started: every caller had gone
    guidance_compile_workers_stopped_total      workers killed mid-compile (its CPU budget spent, or its callers gone)
    guidance_slow_lane_programs                 live programs served off the event loop
    guidance_slow_lane_calls_total              requests whose engine work ran in the slow lane
    guidance_sessions_active, guidance_sessions_{created,expired,deleted,refused}_total
    guidance_tokens_accepted_total, guidance_tokens_rejected_total
    guidance_masks_served_total{format}         format: binary|json|batch
    guidance_mask_duration_seconds              computing one mask (or one batch of masks)
    guidance_step_batch_size                    sessions per POST /step
    guidance_errors_total{code}                 error answers by problem code
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.backend import GuidanceBackend
from core.kinds import KINDS
from service.scheduling import SlowLane
from service.sessions import SessionStore

__all__ = ["COMPILE_RESULTS", "MASK_FORMATS", "Metrics"]

COMPILE_RESULTS = ("compiled", "cached", "error")
MASK_FORMATS = ("binary", "json", "batch")

_MASK_BUCKETS = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1.0)
_COMPILE_BUCKETS = (1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _StateCollector(Collector):
    """Figures the engine and the session store count themselves, read at scrape time."""

    def __init__(self, backend: GuidanceBackend, sessions: SessionStore, slow_lane: SlowLane | None) -> None:
        self.backend = backend
        self.sessions = sessions
        self.slow_lane = slow_lane

    def collect(self) -> Iterator[Metric]:
        stats = self.backend.get_stats()
        cache = stats["cache"]
        yield CounterMetricFamily("guidance_cache_hits", "Program cache hits.", value=cache["hits"])
        yield CounterMetricFamily("guidance_cache_misses", "Program cache misses.", value=cache["misses"])
        yield CounterMetricFamily(
            "guidance_cache_evictions", "Programs evicted from the cache.", value=cache["evictions"]
        )
        yield GaugeMetricFamily("guidance_cache_entries", "Programs in the cache.", value=cache["entries"])
        yield GaugeMetricFamily("guidance_cache_bytes", "Estimated bytes of the cached programs.", value=cache["bytes"])
        yield CounterMetricFamily(
            "guidance_negative_cache_hits",
            "Compiles refused from the failed-compile cache (no compile ran).",
            value=cache["negative_hits"],
        )
        yield GaugeMetricFamily(
            "guidance_negative_cache_entries", "Failed compiles remembered.", value=cache["negative_entries"]
        )
        yield GaugeMetricFamily(
            "guidance_cache_protected_entries",
            "Programs used more than once, safe from one-off programs.",
            value=cache["protected_entries"],
        )
        yield CounterMetricFamily(
            "guidance_cache_promotions", "Programs moved to the protected segment on reuse.", value=cache["promotions"]
        )
        yield CounterMetricFamily(
            "guidance_compiles_cancelled",
            "Compiles stopped or never started because every caller had gone.",
            value=cache["compiles_cancelled"],
        )
        workers = stats.get("compile_workers")
        if workers is not None:
            yield CounterMetricFamily(
                "guidance_compile_worker_crashes",
                "Compile workers that died mid-compile (that compile failed alone).",
                value=workers["crashes"],
            )
            yield CounterMetricFamily(
                "guidance_compile_workers_stopped",
                "Compile workers killed mid-compile: its CPU budget spent, or its callers gone.",
                value=workers["stopped"],
            )
        if self.slow_lane is not None:
            lane = self.slow_lane
            yield GaugeMetricFamily(
                "guidance_slow_lane_programs", "Live programs served off the event loop.", value=len(lane)
            )
            yield CounterMetricFamily(
                "guidance_slow_lane_calls", "Requests whose engine work ran in the slow lane.", value=lane.calls
            )
        s = self.sessions
        yield GaugeMetricFamily("guidance_sessions_active", "Open sessions.", value=len(s))
        yield CounterMetricFamily("guidance_sessions_created", "Sessions opened (forks included).", value=s.created)
        yield CounterMetricFamily("guidance_sessions_expired", "Sessions closed for idleness.", value=s.expired)
        yield CounterMetricFamily("guidance_sessions_deleted", "Sessions closed by DELETE.", value=s.deleted)
        yield CounterMetricFamily("guidance_sessions_refused", "Sessions refused at the cap (429).", value=s.refused)


class Metrics:
    """The service's metrics in their own :class:`CollectorRegistry`.

    Args:
        backend: the backend (cache figures are read from it at scrape time).
        sessions: the session store (session figures likewise).
        slow_lane: the slow lane (likewise), if any.
    """

    def __init__(self, backend: GuidanceBackend, sessions: SessionStore, slow_lane: SlowLane | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.compiles = Counter(
            "guidance_compiles", "Compile requests by program kind and result.", ["kind", "result"], registry=r
        )
        for kind in KINDS:
            for result in COMPILE_RESULTS:
                self.compiles.labels(kind, result)
        self.compile_seconds = Histogram(
            "guidance_compile_duration_seconds",
            "Time compiling programs (cache misses).",
            ["kind"],
            buckets=_COMPILE_BUCKETS,
            registry=r,
        )
        self.compiles_pending = Gauge("guidance_compiles_pending", "Compiles running or queued.", registry=r)
        self.tokens_accepted = Counter("guidance_tokens_accepted", "Tokens accepted into sessions.", registry=r)
        self.tokens_rejected = Counter("guidance_tokens_rejected", "Tokens the constraints rejected (409).", registry=r)
        self.masks_served = Counter("guidance_masks_served", "Masks served, by wire format.", ["format"], registry=r)
        for fmt in MASK_FORMATS:
            self.masks_served.labels(fmt)
        self.mask_seconds = Histogram(
            "guidance_mask_duration_seconds",
            "Time computing a mask (or a batch of masks).",
            buckets=_MASK_BUCKETS,
            registry=r,
        )
        self.step_batch_size = Histogram(
            "guidance_step_batch_size", "Sessions per batched step.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.errors = Counter("guidance_errors", "Error answers by problem code.", ["code"], registry=r)
        r.register(_StateCollector(backend, sessions, slow_lane))
        # Hot-path children, resolved once.
        self.masks_binary = self.masks_served.labels("binary")
        self.masks_json = self.masks_served.labels("json")
        self.masks_batch = self.masks_served.labels("batch")

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
