"""Process settings from the environment, and the per-run context."""

import os
from pathlib import Path

import pytest

from app.errors import ConfigError
from app.settings import Settings, load_settings
from nodes.context import Context


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An environment without agentgraph variables, and no `.env` file in the working dir."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for name in list(os.environ):
        if name.startswith("AGENTGRAPH_"):
            monkeypatch.delenv(name)
    return monkeypatch


def named(error: ConfigError) -> list[str]:
    """Return the variable names a settings error lists, one per problem."""
    message = str(error)
    assert message.startswith("bad setting: ")
    problems = message.removeprefix("bad setting: ").split("; ")
    return [p.split(":", 1)[0] for p in problems]


class TestLoadSettings:
    def test_defaults(self, clean_env: pytest.MonkeyPatch) -> None:
        settings = load_settings()
        assert settings.database_url is None
        assert settings.model == "local"
        assert settings.max_replans == 2
        assert settings.local_extra_buffers is False  # segfaults on AMX CPUs: opt in only

    def test_extra_buffers_are_turned_on_by_their_variable(
        self, clean_env: pytest.MonkeyPatch
    ) -> None:
        clean_env.setenv("AGENTGRAPH_LOCAL_EXTRA_BUFFERS", "1")
        assert load_settings().local_extra_buffers is True
        clean_env.setenv("AGENTGRAPH_LOCAL_EXTRA_BUFFERS", "perhaps")
        with pytest.raises(ConfigError) as caught:
            load_settings()
        assert named(caught.value) == ["AGENTGRAPH_LOCAL_EXTRA_BUFFERS"]

    def test_reads_prefixed_variables(self, clean_env: pytest.MonkeyPatch) -> None:
        clean_env.setenv("AGENTGRAPH_MAX_REPLANS", "4")
        clean_env.setenv("AGENTGRAPH_APPROVAL", "always")
        clean_env.setenv("AGENTGRAPH_MODEL", "  openai:gpt-4o  ")
        clean_env.setenv("DATABASE_URL", "postgresql://u@h/db")
        clean_env.setenv("AGENTGRAPH_PRICES", '{"m": {"input_per_mtok": 1, "output_per_mtok": 2}}')
        settings = load_settings()
        assert settings.max_replans == 4
        assert settings.approval == "always"
        assert settings.model == "openai:gpt-4o"
        assert settings.database_url == "postgresql://u@h/db"
        assert settings.prices["m"].output_per_mtok == 2

    def test_reads_a_dotenv_file(self, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
        (tmp_path / ".env").write_text("AGENTGRAPH_MAX_STEPS=5\n")
        assert load_settings().max_steps == 5

    def test_empty_database_url_means_embedded(self, clean_env: pytest.MonkeyPatch) -> None:
        clean_env.setenv("DATABASE_URL", "")
        assert load_settings().database_url is None

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("AGENTGRAPH_MAX_REPLANS", "abc"),
            ("AGENTGRAPH_MAX_REPLANS", "11"),
            ("DATABASE_URL", "mysql://x"),
            ("AGENTGRAPH_APPROVAL", "sometimes"),
            ("AGENTGRAPH_STEP_TIMEOUT_S", "0"),
            ("AGENTGRAPH_MODEL", "   "),
            ("AGENTGRAPH_PRICES", '{"m": {"input_per_mtok": -1, "output_per_mtok": 0}}'),
        ],
    )
    def test_bad_variable_is_named(
        self, clean_env: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        clean_env.setenv(name, value)
        with pytest.raises(ConfigError) as info:
            load_settings()
        assert named(info.value) == [name]

    def test_every_bad_variable_is_named(self, clean_env: pytest.MonkeyPatch) -> None:
        clean_env.setenv("AGENTGRAPH_MAX_STEPS", "0")
        clean_env.setenv("AGENTGRAPH_PLANNER", "magic")
        with pytest.raises(ConfigError) as info:
            load_settings()
        assert sorted(named(info.value)) == ["AGENTGRAPH_MAX_STEPS", "AGENTGRAPH_PLANNER"]


class TestContext:
    def test_defaults_are_valid(self) -> None:
        assert Context().approval == "when_required"

    def test_is_frozen(self) -> None:
        context = Context()
        with pytest.raises(AttributeError):
            context.model = "other"  # type: ignore[misc]

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"approval": "sometimes"}, "approval must be one of"),
            ({"planner": "magic"}, "planner must be one of"),
            ({"mode": "fast"}, "mode must be one of"),
            ({"max_replans": -1}, "max_replans must be >= 0"),
            ({"max_replans": 11}, "max_replans must be <= 10"),
            ({"max_steps": 51}, "max_steps must be <= 50"),
            ({"token_budget": 0}, "token_budget must be >= 1"),
            ({"max_steps": 0}, "max_steps must be >= 1"),
            ({"max_output_tokens": 0}, "max_output_tokens must be >= 1"),
            ({"model": "  "}, "model must not be empty"),
        ],
    )
    def test_rejects_bad_values(self, options: dict[str, object], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            Context(**options)  # type: ignore[arg-type]

    def test_reports_every_problem(self) -> None:
        with pytest.raises(ConfigError) as info:
            Context(approval="x", max_steps=0)  # type: ignore[arg-type]
        assert "approval" in str(info.value)
        assert "max_steps" in str(info.value)

    def test_max_replans_may_be_zero(self) -> None:
        assert Context(max_replans=0).max_replans == 0


@pytest.fixture
def settings(clean_env: pytest.MonkeyPatch) -> Settings:
    return Settings(
        model="openai:gpt-4o", approval="always", planner="llm", max_replans=5, max_steps=3
    )


class TestContextFromSettings:
    def test_takes_the_process_defaults(self, settings: Settings) -> None:
        context = Context.from_settings(settings)
        assert context.model == "openai:gpt-4o"
        assert context.approval == "always"
        assert context.planner == "llm"
        assert context.max_replans == 5
        assert context.max_steps == 3
        assert context.mode == "auto"

    def test_applies_overrides_and_ignores_none(self, settings: Settings) -> None:
        context = Context.from_settings(
            settings, approval="never", max_steps=None, model=None, mode="plan"
        )
        assert context.approval == "never"
        assert context.mode == "plan"
        assert context.max_steps == 3
        assert context.model == "openai:gpt-4o"

    def test_unknown_option(self, settings: Settings) -> None:
        with pytest.raises(ConfigError, match=r"unknown run option.*colour"):
            Context.from_settings(settings, colour="blue")

    def test_bad_override_value(self, settings: Settings) -> None:
        with pytest.raises(ConfigError, match="max_replans must be >= 0"):
            Context.from_settings(settings, max_replans=-3)

    def test_mistyped_override_is_a_config_error(self, settings: Settings) -> None:
        with pytest.raises(ConfigError):
            Context.from_settings(settings, max_steps="3")
