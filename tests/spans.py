"""The `spans` fixture: every span this process records, in memory, for a test to read.

OpenTelemetry takes one tracer provider per process, so the provider is installed once (an
SDK provider that exports nothing over the network) and its exporter cleared for each test.
"""

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_EXPORTER = InMemorySpanExporter()


def _install() -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not getattr(provider, "_test_exporter_added", False):
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        provider._test_exporter_added = True  # type: ignore[attr-defined]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The in-memory exporter of the process's spans, empty at the test's start."""
    _install()
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def by_id(finished: tuple[ReadableSpan, ...]) -> dict[int, ReadableSpan]:
    """Spans by their span id."""
    return {s.context.span_id: s for s in finished if s.context is not None}


def parent_of(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> ReadableSpan | None:
    """The span's parent among `spans`, if it is there."""
    return spans.get(span.parent.span_id) if span.parent is not None else None
