"""Spans of time as people write them: 90s, 30m, 12h, 30d, 2w."""

import re
from datetime import timedelta

from app.errors import ConfigError

_SPAN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
FORMS = "a number and a unit: 90s, 30m, 12h, 30d, 2w"


def parse_span(text: str, *, what: str = "span") -> timedelta:
    """Read a span such as 30d.

    Raises:
        ConfigError: it is not one (`what` names it in the message).
    """
    match = _SPAN.match(text)
    if match is None:
        raise ConfigError(f"bad {what} {text!r}: give {FORMS}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_timeout(text: str, *, what: str = "timeout") -> timedelta:
    """Read a span such as 30m, or whole seconds such as 90, longer than nothing.

    Raises:
        ConfigError: it is neither, or it is 0 (`what` names it in the message).
    """
    span = timedelta(seconds=int(text)) if text.strip().isdigit() else None
    if span is None:
        try:
            span = parse_span(text, what=what)
        except ConfigError:
            raise ConfigError(f"bad {what} {text!r}: give {FORMS}, or whole seconds") from None
    if not span:
        raise ConfigError(f"bad {what} {text!r}: it must be longer than 0")
    return span


def is_span(text: str) -> bool:
    """Whether `text` reads as a span."""
    return _SPAN.match(text) is not None
