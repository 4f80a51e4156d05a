"""Races between two server processes on one database, 100 rounds each: two resumes of one
thread, a resume and a continue, a fork and a resume. Each round sends both requests at
once, one to each server; exactly one run goes ahead, the other request gets a 409, and the
thread ends as if the two had come one after the other."""

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

ROUNDS = 100
AT_ONCE = 4
"""Rounds in flight together (each on a thread of its own)."""
QUESTION = "What is A? What is B?"
MODEL = "bench:zero"
APPROVE = {"decision": "approve"}

Clients = tuple[httpx.AsyncClient, httpx.AsyncClient]


async def _rounds(
    bases: tuple[str, str], one_round: Callable[[Clients], Awaitable[str]]
) -> Counter[str]:
    """Play `ROUNDS` rounds, `AT_ONCE` at a time; count their outcomes."""
    gate = asyncio.Semaphore(AT_ONCE)
    async with (
        httpx.AsyncClient(base_url=bases[0], timeout=60) as a,
        httpx.AsyncClient(base_url=bases[1], timeout=60) as b,
    ):

        async def play(i: int) -> str:
            async with gate:
                # Alternate which server gets the first request of the pair.
                return await one_round((a, b) if i % 2 else (b, a))

        return Counter(await asyncio.gather(*(play(i) for i in range(ROUNDS))))


async def _waiting(client: httpx.AsyncClient) -> str:
    """A new thread waiting for the approval of its plan."""
    response = await client.post(
        "/api/v1/agent/run", json={"question": QUESTION, "model": MODEL, "approval": "always"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "interrupted", response.text
    thread_id: str = response.json()["thread_id"]
    return thread_id


async def _thread(client: httpx.AsyncClient, thread_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/threads/{thread_id}")
    assert response.status_code == 200, response.text
    thread: dict[str, Any] = response.json()
    return thread


def _refusal(response: httpx.Response) -> str:
    assert response.status_code == 409, response.text
    error: str = response.json()["error"]
    return error


def _decisions(thread: dict[str, Any]) -> list[str]:
    return [a["decision"] for a in (thread["report"] or {}).get("approvals", [])]


async def test_two_resumes_on_bench_servers_one_wins_every_round(
    bench_servers: tuple[str, str],
) -> None:
    async def one_round(clients: Clients) -> str:
        thread_id = await _waiting(clients[0])
        path = f"/api/v1/threads/{thread_id}/resume"
        answers = await asyncio.gather(*(c.post(path, json=APPROVE) for c in clients))
        won = [r for r in answers if r.status_code == 200]
        assert len(won) == 1, [r.text for r in answers]
        assert won[0].json()["status"] == "done"
        refused = _refusal(next(r for r in answers if r is not won[0]))
        thread = await _thread(clients[0], thread_id)
        assert thread["status"] == "done"
        assert _decisions(thread) == ["approve"]  # one decision, taken once
        return refused

    outcomes = await _rounds(bench_servers, one_round)
    print(dict(outcomes))  # how the rounds fell, with -s
    # The loser met the winner's run (busy) or came after it (nothing left to resume).
    assert set(outcomes) <= {"ThreadBusyError", "NothingToResumeError"}, outcomes
    assert outcomes["ThreadBusyError"] > 0, f"no round overlapped: {outcomes}"


async def test_a_resume_and_a_continue_on_bench_servers_one_wins_every_round(
    bench_servers: tuple[str, str],
) -> None:
    async def one_round(clients: Clients) -> str:
        thread_id = await _waiting(clients[0])
        resumed, continued = await asyncio.gather(
            clients[0].post(f"/api/v1/threads/{thread_id}/resume", json=APPROVE),
            clients[1].post(f"/api/v1/threads/{thread_id}/continue"),
        )
        # A thread waiting for approval is answered, never continued past its gate.
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["status"] == "done"
        refused = _refusal(continued)
        thread = await _thread(clients[0], thread_id)
        assert thread["status"] == "done"
        assert _decisions(thread) == ["approve"]
        return refused

    outcomes = await _rounds(bench_servers, one_round)
    print(dict(outcomes))
    assert set(outcomes) <= {"ThreadBusyError", "NothingToContinueError"}, outcomes


async def test_a_fork_and_a_resume_on_bench_servers_never_interleave(
    bench_servers: tuple[str, str],
) -> None:
    async def one_round(clients: Clients) -> str:
        thread_id = await _waiting(clients[0])
        waiting_at = (await _thread(clients[0], thread_id))["checkpoint_id"]
        # The fork writes an answer as the synthesiser: the thread no longer waits.
        forked, resumed = await asyncio.gather(
            clients[1].post(
                f"/api/v1/threads/{thread_id}/fork",
                json={
                    "checkpoint_id": waiting_at,
                    "values": {"answer": "A forked answer."},
                    "as_node": "synthesize",
                },
            ),
            clients[0].post(f"/api/v1/threads/{thread_id}/resume", json=APPROVE),
        )
        thread = await _thread(clients[0], thread_id)
        assert 200 in (forked.status_code, resumed.status_code), (forked.text, resumed.text)
        if forked.status_code != 200:
            # The resume's run held the thread: the fork was refused, the run finished.
            assert _refusal(forked) == "ThreadBusyError"
            assert thread["status"] == "done"
            return "fork refused, run finished"
        # The fork is the head: nothing was written after it.
        assert thread["checkpoint_id"] == forked.json()["checkpoint_id"]
        assert thread["next"] == ["finalize"]
        if resumed.status_code != 200:
            # The fork came first: the resume met it under way (busy) or after it, when
            # nothing waited for approval any more.
            refused = _refusal(resumed)
            assert refused in ("ThreadBusyError", "NothingToResumeError"), resumed.text
            return f"fork first, resume refused ({refused})"
        # The run came first and finished; the fork branched after it, from the old point.
        assert resumed.json()["status"] == "done"
        history = (await clients[0].get(f"/api/v1/threads/{thread_id}/history")).json()
        assert any(c["next"] == [] for c in history["checkpoints"][1:])
        return "run finished, then fork"

    outcomes = await _rounds(bench_servers, one_round)
    assert sum(outcomes.values()) == ROUNDS, outcomes
    print(dict(outcomes))
