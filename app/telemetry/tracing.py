"""Traces: spans through OpenTelemetry's API, exported over OTLP only when asked.

Code everywhere opens spans with `span` (or `model_span`); without an SDK provider installed
these are OpenTelemetry's no-op spans and cost next to nothing. An entry point calls
`install_tracing`: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
set, it installs a provider that batches spans to that collector (OTLP over HTTP/protobuf;
the exporter reads the other `OTEL_EXPORTER_OTLP_*` variables itself); otherwise nothing, and
nothing leaves the process. `OTEL_SERVICE_NAME` names the service (default `agentgraph`).
"""

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from app.accounting import Tokens
from app.settings import Settings
from app.telemetry.logs import run_id_var, thread_id_var

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger(__name__)

TRACER = "agentgraph"
SERVICE_NAME = "agentgraph"

# Attributes. The gen_ai.* names are OpenTelemetry's semantic conventions for model calls.
THREAD_ID = "agentgraph.thread_id"
RUN_ID = "agentgraph.run_id"
STEP_ID = "agentgraph.step_id"
NODE = "agentgraph.node"
STATUS = "agentgraph.status"
COST = "agentgraph.cost_usd"
INTERRUPTED = "agentgraph.interrupted"
MODEL = "gen_ai.request.model"
OPERATION = "gen_ai.operation.name"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOOL = "gen_ai.tool.name"
COLLECTION = "agentgraph.collection"
CHUNKS = "agentgraph.chunks"

Attributes = Mapping[str, AttributeValue | None]


def tracer() -> trace.Tracer:
    """The tracer of agentgraph's spans (of whichever provider is installed)."""
    return trace.get_tracer(TRACER)


def traces_url(settings: Settings) -> str | None:
    """Where spans are sent: the traces endpoint, else `/v1/traces` under the endpoint (as
    the exporter itself reads its variables, but from the settings, `.env` included); None
    when the settings name no collector."""
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    return None


def span_exporter(settings: Settings) -> "SpanExporter | None":
    """The OTLP exporter to the collector the settings name, or None when they name none."""
    url = traces_url(settings)
    if url is None:
        return None
    # Imported here: a process that exports nothing never loads the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=url)


def tracer_provider(settings: Settings) -> "TracerProvider | None":
    """The SDK provider that batches spans to the OTLP collector the settings name, or None
    when they name none (then no exporter exists and nothing is sent anywhere)."""
    exporter = span_exporter(settings)
    if exporter is None:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def install_tracing(settings: Settings) -> bool:
    """Install the OTLP-exporting provider when the settings name a collector and no SDK
    provider is installed yet (by an earlier call, or by a host application); return
    whether this call installed it."""
    if traces_url(settings) is None:
        return False
    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return False
    provider = tracer_provider(settings)
    if provider is None:
        return False
    trace.set_tracer_provider(provider)
    logger.info("exporting traces over OTLP to %s", traces_url(settings))
    return True


def _attributes(attributes: Attributes) -> dict[str, AttributeValue]:
    found: dict[str, AttributeValue] = {k: v for k, v in attributes.items() if v is not None}
    thread_id, run_id = thread_id_var.get(), run_id_var.get()
    if thread_id is not None:
        found.setdefault(THREAD_ID, thread_id)
    if run_id is not None:
        found.setdefault(RUN_ID, run_id)
    return found


def start_span(name: str, attributes: Attributes) -> Span:
    """Start a span (not made current) as a child of the current one, carrying the current
    run's thread and run ids; None attributes are left out."""
    return tracer().start_span(name, attributes=_attributes(attributes))


@contextmanager
def span(
    name: str, attributes: Attributes, *, benign: tuple[type[BaseException], ...] = ()
) -> Iterator[Span]:
    """Run the block in a span, current within it (see `start_span`). An exception marks the
    span as failed, except one of the `benign` types (an interrupt that waits for a
    person is not a failure)."""
    current = start_span(name, attributes)
    with trace.use_span(
        current, end_on_exit=True, record_exception=False, set_status_on_exception=False
    ):
        try:
            yield current
        except benign:
            raise
        except BaseException as exc:
            failed(current, exc)
            raise


def failed(current: Span, exc: BaseException) -> None:
    """Mark a span as ended by `exc`."""
    current.record_exception(exc)
    current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def set_usage(current: Span, tokens: Tokens, cost: float) -> None:
    """Put token counts and cost, as accounting counted them, on a span."""
    if current.is_recording():
        current.set_attributes(
            {INPUT_TOKENS: tokens.input, OUTPUT_TOKENS: tokens.output, COST: cost}
        )


@contextmanager
def model_span(model: str, *, node: str | None, step_id: str | None = None) -> Iterator[Span]:
    """A span for one chat-model call; give it its usage with `set_usage`."""
    with span(
        f"chat {model}",
        {OPERATION: "chat", MODEL: model, NODE: node, STEP_ID: step_id},
    ) as current:
        yield current
