"""Model fallbacks against a real failing OpenAI-compatible server on 127.0.0.1: the primary
model (reached through AGENTGRAPH_MODEL_BASE_URL with the real OpenAI client) answers 500,
429, or never, and the real local model, its fallback, answers; the run goes through the
`agentgraph` CLI on the embedded Postgres."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.integration.conftest import Cli

HANG_S = 60
"""How long the hanging server keeps a request waiting (released when the test ends)."""


class FailingServer(ThreadingHTTPServer):
    """Answers every chat completion with `status`, or, with status 0, never (until closed)."""

    daemon_threads = True

    def __init__(self, status: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = status
        self.requests = 0
        self.released = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FailingServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests += 1
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        if self.server.status == 0:
            self.server.released.wait(HANG_S)
            return
        body = json.dumps({"error": {"message": "the model is down", "type": "server_error"}})
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test's output quiet."""


@pytest.fixture
def failing_server(request: pytest.FixtureRequest) -> Iterator[FailingServer]:
    server = FailingServer(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("failing_server", "reason", "error"),
    [
        (500, "error", "500"),
        (429, "rate_limited", "429"),
        (0, "timeout", "within 3 s"),
    ],
    indirect=["failing_server"],
    ids=["http-500", "http-429", "hangs"],
)
def test_the_local_model_answers_when_the_primary_fails(
    cli: Cli, failing_server: FailingServer, reason: str, error: str
) -> None:
    env = {
        "AGENTGRAPH_MODEL_BASE_URL": failing_server.base_url,
        "AGENTGRAPH_FALLBACKS": json.dumps({"*": ["local"]}),
        "AGENTGRAPH_MODEL_TIMEOUT_S": "3",
        "AGENTGRAPH_MAX_OUTPUT_TOKENS": "24",
        "AGENTGRAPH_STEP_ATTEMPTS": "1",
    }
    doc = cli.json(
        "ask",
        "What is the capital of France?",
        "--model",
        "down-model",
        "--mode",
        "direct",
        "--approval",
        "never",
        "--max-replans",
        "0",
        env=env,
    )

    assert doc["status"] == "done", doc
    assert doc["answer"]
    assert failing_server.requests >= 1  # the primary was asked, through the real client
    report = doc["report"]
    [step] = report["steps"]
    assert step["status"] == "done"
    assert step["model"] == "local"
    [failed] = step["fallbacks"]
    assert failed["model"] == "down-model"
    assert failed["reason"] == reason
    assert error in failed["error"]
    [taken] = report["model_fallbacks"]
    assert taken["node"] == "reasoning"
    assert taken["answered_by"] == "local"
    assert taken["reason"] == reason
    assert report["nodes"]["reasoning"]["output_tokens"] > 0  # the local model's own count
