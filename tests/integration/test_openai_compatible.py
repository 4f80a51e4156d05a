"""A model behind an OpenAI-compatible server (here llama-cpp-python's, on 127.0.0.1),
reached through AGENTGRAPH_MODEL_BASE_URL with the real OpenAI client."""

from tests.integration.conftest import Cli


def test_run_through_an_openai_compatible_server(cli: Cli, openai_compatible_server: str) -> None:
    env = {"AGENTGRAPH_MODEL_BASE_URL": openai_compatible_server}
    doc = cli.json(
        "ask",
        "What is the capital of France?",
        "--model",
        "smollm2",
        "--approval",
        "never",
        env=env,
    )

    assert doc["status"] == "done", doc
    assert doc["answer"]
    report = doc["report"]
    # This server streams no usage: the tokens are estimated, never reported as zero.
    assert report["total_tokens"] > 0
    assert report["tokens_estimated"] is True
    assert report["nodes"]["reasoning"]["output_tokens"] > 0


def test_unreachable_server_fails_the_step_not_the_process(cli: Cli) -> None:
    env = {"AGENTGRAPH_MODEL_BASE_URL": "http://127.0.0.1:9/v1", "AGENTGRAPH_STEP_ATTEMPTS": "2"}
    doc = cli.json(
        "ask",
        "What is the capital of France?",
        "--model",
        "smollm2",
        "--approval",
        "never",
        "--max-replans",
        "0",
        env=env,
    )

    assert doc["status"] == "failed"
    assert doc["_exit_code"] == 1
    [step] = doc["report"]["steps"]
    assert step["status"] == "failed"
    assert step["attempts"] == 2
    assert "Connection" in step["error"]
