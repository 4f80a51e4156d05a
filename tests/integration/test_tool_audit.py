"""The tool audit log on the real Postgres: calls recorded redacted, read back in order per
thread, and deleted with their thread."""

from collections.abc import AsyncIterator

import pytest

from app.pg import open_pool
from app.tools.audit import REDACTED, AuditLog, ToolCall


@pytest.fixture
async def audit(embedded_url: str) -> AsyncIterator[AuditLog]:
    pool = await open_pool(embedded_url, max_size=2)
    log = AuditLog(pool)
    await log.setup()
    await log.setup()  # a second set-up (another process starting) changes nothing
    yield log
    await pool.close()


def _call(thread_id: str, step_id: str, status: str = "ok", **arguments: object) -> ToolCall:
    return ToolCall(
        thread_id=thread_id,
        step_id=step_id,
        agent="analyst",
        tool="calculator",
        arguments=arguments,
        status=status,  # type: ignore[arg-type]  # a CallStatus, given as a test parameter
        result_chars=3,
        duration_ms=1.5,
        approval="policy",
    )


async def test_calls_are_kept_per_thread_redacted_and_forgotten(
    audit: AuditLog, thread_id: str
) -> None:
    other = thread_id + "-other"
    await audit.record(_call(thread_id, "s1", expression="17 * 23", api_key="sk-12345"))
    await audit.record(_call(other, "s1", expression="1"))
    await audit.record(_call(thread_id, "s2", "refused", expression="2"))

    calls = await audit.calls(thread_id)
    assert [(c.step_id, c.status) for c in calls] == [("s1", "ok"), ("s2", "refused")]
    assert calls[0].arguments == {"expression": "17 * 23", "api_key": REDACTED}
    assert calls[0].approval == "policy"
    assert calls[0].created_at is not None

    await audit.forget(thread_id)
    assert await audit.calls(thread_id) == []
    assert len(await audit.calls(other)) == 1
    await audit.forget(other)
