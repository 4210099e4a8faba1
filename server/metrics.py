"""Prometheus metrics of one process: what an autoscaler and a dashboard need to know about its load.

One `Metrics` per engine, on its own registry (several engines in one test process do not collide); the web
port serves it at `/metrics` in the text format.
"""

from __future__ import annotations

from collections.abc import Callable

from lipstream.server.cpu import LEDGER, PARTS
from lipstream.server.events import AudioEvent, FrameEvent, SessionEvent, StatsEvent
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# The `_created` series double every counter's lines and no dashboard or autoscaler reads them.
disable_created_metrics()

_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
_FACTOR_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The counters, gauges and histograms; the engine, the servicer and the stages update them."""

    def __init__(self, active_sessions: Callable[[], int], max_sessions: int) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.active_sessions = Gauge(
            "lipstream_active_sessions", "Sessions open now (the load an autoscaler acts on)", registry=reg
        )
        self.active_sessions.set_function(lambda: float(active_sessions()))
        self.max_sessions = Gauge("lipstream_max_sessions", "The --max-sessions limit", registry=reg)
        self.max_sessions.set(max_sessions)
        self.sessions_ended = Counter(
            "lipstream_sessions_ended", "Sessions ended, by reason", ["reason"], registry=reg
        )
        self.rpcs = Counter(
            "lipstream_rpcs", "Finished LipStream calls by method and status code", ["method", "code"],
            registry=reg,
        )
        self.time_to_first_audio = Histogram(
            "lipstream_time_to_first_audio_seconds", "From the first text to the first audio chunk",
            buckets=_LATENCY_BUCKETS, registry=reg,
        )
        self.time_to_first_frame = Histogram(
            "lipstream_time_to_first_frame_seconds", "From the first text to the first video frame",
            buckets=_LATENCY_BUCKETS, registry=reg,
        )
        self.tts_real_time_factor = Histogram(
            "lipstream_tts_real_time_factor", "TTS compute seconds per second of speech, per session",
            buckets=_FACTOR_BUCKETS, registry=reg,
        )
        self.lipsync_real_time_factor = Histogram(
            "lipstream_lipsync_real_time_factor", "Lip-sync compute seconds per second of video, per session",
            buckets=_FACTOR_BUCKETS, registry=reg,
        )
        self.audio_seconds = Counter("lipstream_audio_seconds", "Seconds of audio sent", registry=reg)
        self.frames = Counter("lipstream_frames", "Video frames sent", registry=reg)
        self.bytes_sent = Counter(
            "lipstream_sent_bytes", "Payload bytes sent, by kind (audio, video)", ["kind"], registry=reg
        )
        reg.register(_CpuCollector())
        self.batch_frames = Histogram(
            "lipstream_model_batch_frames", "Frames per lip-sync model call (across sessions)",
            buckets=_BATCH_BUCKETS, registry=reg,
        )

    def count_sent(self, event: SessionEvent, written: int | None = None) -> None:
        """One event written to a client; `written`: the bytes written for it when they are not its own
        (audio encoded anew: the speech API's MP3, Opus...)."""
        if isinstance(event, AudioEvent):
            self.bytes_sent.labels("audio").inc(len(event.data) if written is None else written)
            self.audio_seconds.inc(event.num_samples / event.sample_rate)
        elif isinstance(event, FrameEvent):
            self.bytes_sent.labels("video").inc(len(event.jpeg))
            self.frames.inc()

    def session_ended(self, reason: str, stats: StatsEvent) -> None:
        """A session's end (finished, cancelled, idle_timeout, shutdown, refused, failed) and its figures."""
        self.sessions_ended.labels(reason).inc()
        if stats.time_to_first_audio_s > 0:
            self.time_to_first_audio.observe(stats.time_to_first_audio_s)
        if stats.time_to_first_frame_s > 0:
            self.time_to_first_frame.observe(stats.time_to_first_frame_s)
        if stats.audio_seconds > 0:
            self.tts_real_time_factor.observe(stats.tts_real_time_factor)
        if stats.frames > 0:
            self.lipsync_real_time_factor.observe(stats.lipsync_real_time_factor)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class _CpuCollector(Collector):
    """lipstream.server.cpu's ledger: the CPU seconds of each part of the pipeline, process-wide."""

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(
            "lipstream_cpu_seconds", "CPU seconds of finished stage threads, by part of the pipeline",
            labels=["part"],
        )
        seconds = LEDGER.snapshot()
        for part in PARTS:
            family.add_metric([part], seconds[part])
        return [family]
