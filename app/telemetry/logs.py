"""Log lines: human-readable text by default, one JSON object per line when asked.

A run's thread and run ids are kept in context variables for the run's length
(`bind_run`), so every line logged while it runs, in any of its tasks, carries them; with
`AGENTGRAPH_LOG_FORMAT=json` each line is an object with `time`, `level`, `logger`,
`message`, the ids, the current trace and span ids when a trace is recorded, and `exc_info`.
"""

import json
import logging
import logging.config
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from app.settings import LogFormat

TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
"""The text format: what the CLI has always written."""
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")

thread_id_var: ContextVar[str | None] = ContextVar("agentgraph_log_thread_id", default=None)
"""The thread of the run being executed, if any."""
run_id_var: ContextVar[str | None] = ContextVar("agentgraph_log_run_id", default=None)
"""The run being executed, if any."""


@contextmanager
def bind_run(thread_id: str, run_id: str) -> Iterator[None]:
    """Name the thread and the run on every line logged in the block (and in the tasks it
    starts)."""
    thread_token = thread_id_var.set(thread_id)
    run_token = run_id_var.set(run_id)
    try:
        yield
    finally:
        run_id_var.reset(run_token)
        thread_id_var.reset(thread_token)


class RunFields(logging.Filter):
    """Put the current run's `thread_id` and `run_id` on each record (None outside a run),
    unless the record already carries them (`extra=`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the fields; never drop a record."""
        if not hasattr(record, "thread_id"):
            record.thread_id = thread_id_var.get()
        if not hasattr(record, "run_id"):
            record.run_id = run_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as JSON: time (UTC, ISO 8601), level, logger, message, and
        thread_id, run_id, trace_id, span_id, exc_info and stack_info when there are any."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        thread_id = getattr(record, "thread_id", None) or thread_id_var.get()
        run_id = getattr(record, "run_id", None) or run_id_var.get()
        if thread_id is not None:
            line["thread_id"] = thread_id
        if run_id is not None:
            line["run_id"] = run_id
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
            line["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def logging_config(log_format: LogFormat, *, level: int | str = logging.WARNING) -> dict[str, Any]:
    """A `logging.config.dictConfig` configuration: one handler on the root logger, on
    stderr, in `log_format`, that uvicorn's own loggers write through too."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"run": {"()": RunFields}},
        "formatters": {"agentgraph": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "agentgraph",
                "filters": ["run"],
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {name: {"handlers": [], "propagate": True} for name in UVICORN_LOGGERS},
    }


def configure_logging(log_format: LogFormat, *, level: int | str = logging.WARNING) -> None:
    """Log to stderr in `log_format` at `level` (an entry point calls this once)."""
    logging.config.dictConfig(logging_config(log_format, level=level))
