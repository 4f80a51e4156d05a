"""The parts of authentication that need no server: scopes, expiry spans, the loopback
decision of `AGENTGRAPH_AUTH=auto`."""

from datetime import UTC, datetime, timedelta

import pytest

from app.auth import LOCAL, Principal, parse_scopes
from app.errors import ConfigError
from app.settings import get_settings
from cli.keys import parse_expiry
from server.serve import is_loopback, resolve_auth

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_scopes_are_read_in_their_canonical_order() -> None:
    assert parse_scopes("approvals, runs") == ["runs", "approvals"]
    with pytest.raises(ConfigError, match="unknown scope"):
        parse_scopes("runs,root")
    with pytest.raises(ConfigError, match="none given"):
        parse_scopes(" , ")


@pytest.mark.parametrize(
    ("text", "delta"),
    [("90m", timedelta(minutes=90)), ("12h", timedelta(hours=12)), ("30d", timedelta(days=30))],
)
def test_expiry_spans(text: str, delta: timedelta) -> None:
    assert parse_expiry(text, now=NOW) == NOW + delta


def test_expiry_dates_and_refusals() -> None:
    assert parse_expiry("2026-02-01", now=NOW) == datetime(2026, 2, 1, tzinfo=UTC)
    with pytest.raises(ConfigError, match="not in the future"):
        parse_expiry("2025-12-31", now=NOW)
    with pytest.raises(ConfigError, match="give a span"):
        parse_expiry("soon", now=NOW)


def test_who_sees_everything() -> None:
    assert LOCAL.sees_everything
    assert LOCAL.label == "local"
    tenant = Principal(tenant="acme", scopes=frozenset({"runs"}), key_id="ab")
    assert not tenant.sees_everything
    assert tenant.label == "acme/ab"
    assert Principal(tenant="ops", scopes=frozenset({"admin"}), key_id="cd").sees_everything


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("preset", "host", "decided"),
    [
        ("auto", "127.0.0.1", "off"),
        ("auto", "0.0.0.0", "required"),
        ("required", "127.0.0.1", "required"),
        ("off", "0.0.0.0", "off"),
    ],
)
def test_auto_is_decided_by_the_address(
    monkeypatch: pytest.MonkeyPatch, preset: str, host: str, decided: str
) -> None:
    # Set through monkeypatch even for "auto", so that what `resolve_auth` writes into the
    # environment is undone after the test.
    monkeypatch.setenv("AGENTGRAPH_AUTH", preset)
    get_settings.cache_clear()
    try:
        resolve_auth(host)
        assert get_settings().auth == decided
    finally:
        get_settings.cache_clear()


def test_a_redis_url_is_shown_without_its_password() -> None:
    from app.rates import redact

    assert redact("redis://user:s3cret@cache:6380/2") == "redis://user:***@cache:6380/2"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
