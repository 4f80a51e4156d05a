"""Model routing: resolving a role's models, validating the routes wherever they are set, and
falling back in order when a model errors, times out, is rate-limited or fails part-way."""

import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk

from app.errors import AllModelsFailedError, ConfigError, ManifestError
from app.model_routes import Route, resolve_route, route_problems
from app.models import register_chat_model
from app.settings import Settings, get_settings, load_settings
from app.tools.manifest import parse_manifest
from cli.main import _routing
from cli.render import fallback_lines, report_table
from graphs.agent import AgentGraph
from nodes.context import Context
from nodes.events import event_sink
from nodes.llm import generate, generate_structured, usage_record
from nodes.toolbox import build_toolbox
from tests.fakes import MakeModel, ScriptedChatModel

from .conftest import CollectEvents
from .graph_helpers import QUESTION, final, only, state_of, step_results


class RateLimitError(Exception):
    """An HTTP 429, as OpenAI's client raises it."""

    status_code = 429


class FlakyChatModel(ScriptedChatModel):
    """Streams `partial` tokens of its reply, then raises `error` (rate-limited or not)."""

    partial: int = 0
    rate_limited: bool = False

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self.calls += 1
        for token in self.reply.split()[: self.partial]:
            yield ChatGenerationChunk(message=AIMessageChunk(content=token + " "))
        if self.rate_limited:
            raise RateLimitError("Error code: 429 - too many requests")
        raise RuntimeError("the connection broke")


_FLAKY: dict[str, FlakyChatModel] = {}


@pytest.fixture
def flaky() -> Iterator[dict[str, FlakyChatModel]]:
    """Models `flaky:NAME` resolve to `flaky[NAME]`."""
    register_chat_model("flaky", lambda spec, _: _FLAKY[spec.split(":", 1)[1]])
    yield _FLAKY
    _FLAKY.clear()


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """The events model calls emit (the run's event sink)."""
    seen: list[dict[str, Any]] = []
    token = event_sink.set(seen.append)
    yield seen
    event_sink.reset(token)


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A model timeout of 0.3 s (`AGENTGRAPH_MODEL_TIMEOUT_S`)."""
    monkeypatch.setenv("AGENTGRAPH_MODEL_TIMEOUT_S", "0.3")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _quiet(_: object) -> None:
    """A stream writer nobody reads."""


ASK = [HumanMessage("What is the capital of France?")]


class TestResolution:
    def test_agent_then_role_then_run_model(self) -> None:
        tables: dict[str, Any] = {
            "model": "run",
            "models": {"planner": "planner-model"},
            "fallbacks": {"*": ["any-1"], "planner": ["plan-1", "plan-2"]},
        }
        assert resolve_route("planner", **tables) == Route("planner-model", ("plan-1", "plan-2"))
        assert resolve_route("reasoning", **tables) == Route("run", ("any-1",))
        agent = resolve_route("reasoning", **tables, agent_model="mine", agent_fallbacks=["f"])
        assert agent == Route("mine", ("f",))
        # An agent with a model but no fallbacks of its own keeps the role's fallbacks.
        assert resolve_route("planner", **tables, agent_model="mine").fallbacks == (
            "plan-1",
            "plan-2",
        )

    def test_fallbacks_list_each_model_once_and_never_the_primary(self) -> None:
        route = resolve_route(
            "rag", model="a", models={}, fallbacks={"rag": ["a", "b", "b", "local"]}
        )
        assert route.chain == ("a", "b", "local")

    def test_route_problems_name_the_role_or_spec(self) -> None:
        problems = route_problems(
            {"planer": "x", "rag": " "},
            {"*": ["ok", ""], "critic": "local", "reasoning": ["a", "b", "c", "d", "e"]},
        )
        assert problems == [
            "models: unknown role 'planer' (roles: planner, reasoning, rag, critic, synthesis)",
            "models.rag must be a non-empty model spec",
            "fallbacks.*[1] must be a non-empty model spec",
            "fallbacks.critic must be a list of model specs",
            "fallbacks.reasoning may list at most 4 models",
        ]
        assert route_problems({"synthesis": "local"}, {"*": ["local"]}) == []


class TestOptions:
    def test_the_context_refuses_bad_routes(self) -> None:
        with pytest.raises(ConfigError, match="unknown role 'judge'"):
            Context(models={"judge": "local"})
        with pytest.raises(ConfigError, match=r"fallbacks\.\*\[0\] must be a non-empty"):
            Context(fallbacks={"*": [" "]})
        with pytest.raises(ConfigError, match="models must be an object"):
            Context(models="local")  # type: ignore[arg-type]

    def test_the_context_survives_the_json_of_the_state(self) -> None:
        context = Context(
            model="openai:y", models={"rag": "local"}, fallbacks={"*": ["local", "openai:x"]}
        )
        again = Context.from_record(json.loads(json.dumps(asdict(context))))
        assert again == context
        assert again.route("rag") == Route("local", ("openai:x",))
        assert again.route("critic") == Route("openai:y", ("local", "openai:x"))

    def test_run_routes_are_laid_over_the_settings(self) -> None:
        settings = Settings(
            models={"planner": "p", "rag": "r"}, fallbacks={"*": ["local"], "rag": ["x"]}
        )
        context = Context.from_settings(
            settings, models={"rag": "mine"}, fallbacks={"planner": ["y"]}
        )
        assert context.models == {"planner": "p", "rag": "mine"}
        assert context.fallbacks == {"*": ["local"], "rag": ["x"], "planner": ["y"]}
        assert settings.models == {"planner": "p", "rag": "r"}  # the settings are untouched

    def test_settings_read_the_routes_from_json_and_name_a_bad_variable(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.chdir(tmp_path)
        for name in [n for n in os.environ if n.startswith("AGENTGRAPH_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("AGENTGRAPH_MODELS", '{"synthesis": "openai:gpt-4o-mini"}')
        monkeypatch.setenv("AGENTGRAPH_FALLBACKS", '{"*": ["local"]}')
        monkeypatch.setenv("AGENTGRAPH_MODEL_TIMEOUT_S", "5")
        settings = load_settings()
        assert settings.models == {"synthesis": "openai:gpt-4o-mini"}
        assert settings.fallbacks == {"*": ["local"]}
        assert settings.model_timeout_s == 5
        monkeypatch.setenv("AGENTGRAPH_FALLBACKS", '{"writer": ["local"]}')
        with pytest.raises(ConfigError, match=r"AGENTGRAPH_FALLBACKS: .*unknown role 'writer'"):
            load_settings()

    def test_a_manifest_agent_has_its_own_fallbacks(self) -> None:
        text = """\
version: 1
agents:
  - name: analyst
    description: Works numbers out.
    model: openai:gpt-4o-mini
    fallbacks: [local]
  - name: plain
    description: Uses the run's routes.
"""
        box = build_toolbox(parse_manifest(text, source="m.yaml"))
        context = Context(model="run", fallbacks={"reasoning": ["r1"]})
        assert box.route_of("analyst", context) == Route("openai:gpt-4o-mini", ("local",))
        assert box.route_of("plain", context) == Route("run", ("r1",))
        too_many = text.replace("[local]", "[a, b, c, d, e]")
        with pytest.raises(ManifestError, match="fallbacks"):
            parse_manifest(too_many, source="m.yaml")

    def test_the_cli_options_become_routes(self) -> None:
        assert _routing(
            ["planner=local", "rag=openai:gpt-4o-mini"],
            ["local", "rag=openai:gpt-4o", "rag=local"],
        ) == {
            "models": {"planner": "local", "rag": "openai:gpt-4o-mini"},
            "fallbacks": {"*": ["local"], "rag": ["openai:gpt-4o", "local"]},
        }
        assert _routing([], []) == {"models": None, "fallbacks": None}


class TestFallbacks:
    async def test_models_are_tried_in_order_until_one_answers(
        self, make_model: MakeModel, events: list[dict[str, Any]]
    ) -> None:
        first, first_model = make_model(fail_first=-1)
        second, second_model = make_model(fail_first=-1)
        third, _ = make_model(reply="Paris.")
        generation = await generate(
            ASK, model=first, fallbacks=[second, third], writer=_quiet, node="reasoning"
        )
        assert generation.text == "Paris."
        assert generation.model == third
        assert [(f["model"], f["reason"]) for f in generation.fallbacks] == [
            (first, "error"),
            (second, "error"),
        ]
        assert "RuntimeError: scripted failure on call 1" in generation.fallbacks[0]["error"]
        assert (first_model.calls, second_model.calls) == (1, 1)
        announced = [e for e in events if e["event"] == "fallback"]
        assert [(e["model"], e["next"], e["discard"]) for e in announced] == [
            (first, second, False),
            (second, third, False),
        ]
        record = usage_record("reasoning", 0.0, generation=generation)
        assert record["model"] == third
        assert [f["model"] for f in record["fallbacks"]] == [first, second]

    @pytest.mark.usefixtures("short_timeout")
    async def test_a_model_that_hangs_times_out_and_the_next_answers(
        self, make_model: MakeModel
    ) -> None:
        hanging, _ = make_model(delay_s=30)
        local, _ = make_model(reply="Paris.")
        generation = await generate(
            ASK, model=hanging, fallbacks=[local], writer=_quiet, node="reasoning"
        )
        assert generation.model == local
        [failed] = generation.fallbacks
        assert failed["reason"] == "timeout"
        assert "within 0.3 s" in failed["error"]

    async def test_a_rate_limited_model_is_named_so(
        self, make_model: MakeModel, flaky: dict[str, FlakyChatModel]
    ) -> None:
        flaky["busy"] = FlakyChatModel(rate_limited=True)
        local, _ = make_model(reply="Paris.")
        generation = await generate(
            ASK, model="flaky:busy", fallbacks=[local], writer=_quiet, node="rag"
        )
        assert generation.fallbacks[0]["reason"] == "rate_limited"
        assert "429" in generation.fallbacks[0]["error"]

    async def test_a_half_streamed_answer_is_dropped_and_announced(
        self,
        make_model: MakeModel,
        flaky: dict[str, FlakyChatModel],
        events: list[dict[str, Any]],
    ) -> None:
        flaky["half"] = FlakyChatModel(reply="Lyon is the capital", partial=2)
        local, _ = make_model(reply="Paris.")
        generation = await generate(
            ASK,
            model="flaky:half",
            fallbacks=[local],
            writer=_quiet,
            node="reasoning",
            step_id="s1",
        )
        assert generation.text == "Paris."  # nothing of the primary's half answer
        kinds = [(e["event"], e.get("text") or e.get("model")) for e in events]
        assert kinds == [
            ("delta", "Lyon "),
            ("delta", "is "),
            ("fallback", "flaky:half"),
            ("delta", "Paris."),
        ]
        assert events[2]["discard"] is True
        assert events[2]["step_id"] == "s1"

    async def test_when_every_model_fails_the_error_names_each(self, make_model: MakeModel) -> None:
        first, _ = make_model(fail_first=-1)
        second, _ = make_model(fail_first=-1)
        with pytest.raises(AllModelsFailedError) as caught:
            await generate(ASK, model=first, fallbacks=[second], writer=_quiet, node="x")
        assert first in str(caught.value)
        assert second in str(caught.value)
        with pytest.raises(RuntimeError, match="scripted failure"):  # no route: as it was
            await generate(ASK, model=first, writer=_quiet, node="x")

    async def test_structured_calls_fall_back_too(
        self, flaky: dict[str, FlakyChatModel], make_model: MakeModel
    ) -> None:
        class Broken(FlakyChatModel):
            def with_structured_output(self, *args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("no structured output here")

        flaky["broken"] = Broken()
        good, _ = make_model(structured={"best": 1, "reason": "it is right"})
        parsed, generation = await generate_structured(
            ASK, {"type": "object"}, model="flaky:broken", fallbacks=[good]
        )
        assert parsed == {"best": 1, "reason": "it is right"}
        assert generation.model == good
        assert generation.fallbacks[0]["model"] == "flaky:broken"


async def test_a_run_reports_who_answered_and_why_a_fallback_was_taken(
    graph: AgentGraph, thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    broken, _ = make_model(fail_first=-1)
    good, _ = make_model(reply="Paris is the capital of France.")
    context = Context(model=broken, fallbacks={"*": [good]}, approval="never", mode="direct")

    events = await collect_events(graph, thread_id=thread_id, context=context, request=QUESTION)

    [result] = step_results(events).values()
    assert result["status"] == "done"
    assert result["model"] == good
    assert [(f["model"], f["reason"]) for f in result["fallbacks"]] == [(broken, "error")]
    report = final(events)["report"]
    assert report["steps"][0]["model"] == good
    [taken] = report["model_fallbacks"]
    assert (taken["node"], taken["model"], taken["answered_by"]) == ("reasoning", broken, good)
    assert len(only(events, "fallback")) == 1
    usage = (await state_of(graph, thread_id))["usage"]
    assert [r["model"] for r in usage if r["node"] == "reasoning"] == [good]
    assert fallback_lines(report) == [
        f"reasoning [{result['step_id']}]: {broken} -> {good} ({taken['reason']}: {taken['error']})"
    ]
    assert report_table(report).caption is not None


async def test_each_role_answers_with_its_own_model(
    graph: AgentGraph, thread_id: str, make_model: MakeModel, collect_events: CollectEvents
) -> None:
    run_model, run = make_model(reply="from the run's model")
    reasoner, _ = make_model(reply="from the reasoning model")
    synthesizer, synthesis = make_model(reply="the synthesis")
    context = Context(
        model=run_model,
        models={"reasoning": reasoner, "synthesis": synthesizer},
        approval="never",
        mode="plan",
        synthesis="model",
    )
    events = await collect_events(
        graph,
        thread_id=thread_id,
        context=context,
        request="What is the capital of France? What is the capital of Spain?",
    )
    assert {r["model"] for r in step_results(events).values()} == {reasoner}
    assert final(events)["answer"] == "the synthesis"
    assert (run.calls, synthesis.calls) == (0, 1)
    assert final(events)["report"]["model_fallbacks"] == []
