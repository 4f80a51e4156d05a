"""Schemathesis over the whole OpenAPI of a running server with API keys required: property-
based requests to every operation, checked for server errors and for responses that break
their documented schema. The default model is a fake that answers at once, so the runs that
fuzzed bodies start are cheap."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.auth import Keys
from app.settings import Settings
from tests.fakes import MakeModel
from tests.integration.server_harness import running_server

MAX_EXAMPLES = 25
"""Cases per operation and phase here; the note's figures come from more (`-n 200`)."""


@pytest.fixture
async def admin_key(keys: Keys) -> str:
    _, secret = await keys.create("fuzz", ["runs", "approvals", "admin"])
    return secret


def test_no_operation_answers_500_or_breaks_its_schema(
    settings: Settings, embedded_url: str, make_model: MakeModel, admin_key: str, tmp_path: Path
) -> None:
    spec, _ = make_model(reply="Fuzzed answer.")
    secured = settings.model_copy(update={"auth": "required", "model": spec})
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is a dev dependency"
    with running_server(secured, embedded_url) as server:
        proc = subprocess.run(
            [
                st,
                "run",
                f"{server.base_url}/openapi.json",
                "--checks",
                "not_a_server_error,response_schema_conformance,content_type_conformance",
                "--header",
                f"Authorization: Bearer {admin_key}",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                "1",
                "--generation-database",
                "none",
                "--no-color",
                "--request-timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            timeout=1200,
            cwd=tmp_path,
        )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-20_000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", output)
    assert cases is not None, output[-5000:]
    assert cases.group(1) == cases.group(2), output[-5000:]
    assert int(cases.group(1)) > 1000, output[-5000:]
