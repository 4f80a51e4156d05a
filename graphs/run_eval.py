"""Run evaluation: each question of a dataset run through the graph, and its answer scored.

A dataset is JSON Lines, one case a line:

    {"id": "q1", "question": "...", "facts": ["..."], "reference": "...",
     "collection": "scifact_runs", "documents": "corpus.jsonl", "sources": ["#4983"],
     "options": {"planner": "rules"}}

Only `question` is required. `facts` are what a correct answer states; `reference` is a
reference answer (scored by token F1 when there are no facts). `collection` is where the
run answers from; `documents` (a path, relative to the dataset) are ingested into it before
the runs; `sources` are the documents a good answer cites (a citation's source ends with one).
`options` are run options laid over the evaluation's own.

Each case runs to its end (no approvals: the policy is `never` unless a case says otherwise)
on a thread of its own, through the one run driver, and is scored for correctness
(`graphs.eval_scoring`), grounding (the run report's), citations (valid: the cited chunk
exists and holds the quoted text; on target: one cites an expected source), tokens, cost and
latency.
"""

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from psycopg import sql

from app.errors import ConfigError
from app.settings import Settings
from graphs.driver import RunOrder, claim_run
from graphs.eval_scoring import FactMatch, correctness, judge, quote_found
from graphs.locks import ThreadLocks
from graphs.runs import new_thread_id
from graphs.service import Agent
from graphs.threads import view_thread
from retrievers.ingest import ingest
from retrievers.schema import chunk_table
from retrievers.service import open_collection

EVAL_DEFAULTS: Mapping[str, object] = {"approval": "never"}
"""Run options every case starts from: nobody is there to approve."""
_FIELDS = {"id", "question", "facts", "reference", "collection", "documents", "sources", "options"}


@dataclass(frozen=True, kw_only=True)
class EvalCase:
    """One question of a dataset and what its answer should hold."""

    case_id: str
    question: str
    facts: tuple[str, ...] = ()
    reference: str | None = None
    collection: str | None = None
    documents: Path | None = None
    sources: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class CaseResult:
    """How one case's run went and how its answer scored."""

    case_id: str
    question: str
    thread_id: str
    status: str
    answer: str
    correctness: float | None
    facts: list[FactMatch]
    judged: bool | None
    grounding: float | None
    citations: int
    citations_valid: float | None
    """Share of the answer's citations whose chunk exists and holds the quote."""
    cites_expected: bool | None
    """Whether a citation names one of the case's expected sources (None: none expected)."""
    tokens: int
    cost: float
    latency_s: float
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The result as plain JSON values."""
        return asdict(self)


def _case(row: object, where: str, base: Path) -> EvalCase:
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: a case is a JSON object")
    unknown = sorted(set(row) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ConfigError(f"{where}: 'question' must be a non-empty string")
    facts, sources = row.get("facts", []), row.get("sources", [])
    for name, value in (("facts", facts), ("sources", sources)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: '{name}' must be a list of strings")
    for name in ("reference", "collection", "documents", "id"):
        if row.get(name) is not None and not isinstance(row[name], str):
            raise ConfigError(f"{where}: '{name}' must be a string")
    options = row.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: 'options' must be an object")
    documents = row.get("documents")
    if documents is not None and row.get("collection") is None:
        raise ConfigError(f"{where}: 'documents' needs a 'collection' to ingest them into")
    return EvalCase(
        case_id=row.get("id") or f"line-{where.rsplit(':', 1)[-1]}",
        question=question,
        facts=tuple(facts),
        reference=row.get("reference"),
        collection=row.get("collection"),
        documents=(base / documents) if documents is not None else None,
        sources=tuple(sources),
        options=options,
    )


def load_cases(path: Path, *, limit: int | None = None) -> list[EvalCase]:
    """Read a dataset's cases, the first `limit` of them if given.

    Raises:
        ConfigError: the file cannot be read, a line is not JSON, or a case is malformed
            (the message names the line).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the dataset {path}: {exc.strerror}") from None
    cases: list[EvalCase] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not JSON ({exc.msg})") from None
        cases.append(_case(row, f"{path}:{number}", path.parent))
        if limit is not None and len(cases) >= limit:
            break
    if not cases:
        raise ConfigError(f"{path}: the dataset holds no case")
    ids = [c.case_id for c in cases]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ConfigError(f"{path}: case id(s) used twice: {', '.join(repeated)}")
    return cases


async def ingest_documents(settings: Settings, cases: Sequence[EvalCase]) -> list[str]:
    """Ingest each case's documents into its collection (unchanged ones are skipped); return
    the collections written to.

    Raises:
        ConfigError: a documents file does not exist.
    """
    wanted = sorted(
        {(c.collection, c.documents) for c in cases if c.collection and c.documents}, key=str
    )
    for collection, documents in wanted:
        if not documents.exists():
            raise ConfigError(f"the documents {documents} do not exist")
        async with open_collection(settings, collection, create=True) as (store, embedder):
            await ingest(
                store,
                embedder,
                [documents],
                chunk_size=settings.chunk_size,
                chunk_overlap=settings.chunk_overlap,
            )
    return sorted({c for c, _ in wanted if c})


async def _chunks(agent: Agent, collection: str, ids: Sequence[str]) -> dict[str, str]:
    """The text of the chunks `ids` that exist in `collection`."""
    if not ids:
        return {}
    async with agent.db.pool.connection() as conn:
        cursor = await conn.execute(
            sql.SQL("SELECT id, content FROM {t} WHERE id = ANY(%s)").format(
                t=chunk_table(collection)
            ),
            (list(ids),),
        )
        return {row["id"]: row["content"] for row in await cursor.fetchall()}


async def _citations_valid(
    agent: Agent, citations: Sequence[Mapping[str, Any]], collection: str | None
) -> float | None:
    """Share of `citations` whose chunk exists in the collections searched and holds the
    quoted text."""
    if not citations:
        return None
    names = [collection] if collection else await agent.library.collections()
    texts: dict[str, str] = {}
    ids = [str(c["chunk_id"]) for c in citations]
    for name in names:
        texts |= await _chunks(agent, name, ids)
    valid = 0
    for citation in citations:
        chunk = texts.get(str(citation["chunk_id"]))
        quote = str(citation.get("quote") or "")
        if len(quote) >= 500:  # cut at 500 characters, maybe mid-word
            quote = quote.rsplit(" ", 1)[0]
        valid += chunk is not None and (not quote or quote_found(quote, chunk))
    return valid / len(citations)


async def run_case(
    agent: Agent,
    locks: ThreadLocks,
    settings: Settings,
    case: EvalCase,
    *,
    options: Mapping[str, Any],
    judge_model: BaseChatModel | None = None,
) -> CaseResult:
    """Run `case` on a new thread with `options` (the case's own laid over them) and score
    what it answered. A run that fails is a result with its error, not an exception."""
    run_options = {**EVAL_DEFAULTS, **options, **case.options}
    if case.collection is not None:
        run_options.setdefault("collection", case.collection)
    order = RunOrder(
        thread_id=new_thread_id(), request=case.question, options=run_options, new_thread=True
    )
    started = time.perf_counter()
    error: str | None = None
    async with claim_run(agent.graph, locks, settings, order, roster=agent.toolbox.roster()) as run:
        async for event in run.stream():
            if event["event"] == "error":
                error = f"{event.get('type')}: {event.get('message')}"
    latency_s = time.perf_counter() - started
    view = await view_thread(agent.graph, order.thread_id, context=run.context)
    answer = view["answer"] or ""
    score, facts = correctness(answer, facts=case.facts, reference=case.reference)
    citations = [dict(c) for c in view["citations"]]
    report: Mapping[str, Any] = view["report"] or {}
    judged = None
    if judge_model is not None and answer:
        judged = await judge(
            judge_model,
            question=case.question,
            answer=answer,
            facts=case.facts,
            reference=case.reference,
        )
    cites_expected = (
        any(str(c["source"]).endswith(s) for c in citations for s in case.sources)
        if case.sources
        else None
    )
    return CaseResult(
        case_id=case.case_id,
        question=case.question,
        thread_id=order.thread_id,
        status="failed" if error and view["status"] not in ("done", "rejected") else view["status"],
        answer=answer,
        correctness=score,
        facts=facts,
        judged=judged,
        grounding=report.get("grounding"),
        citations=len(citations),
        citations_valid=await _citations_valid(agent, citations, case.collection),
        cites_expected=cites_expected,
        tokens=int(report.get("total_tokens", 0)),
        cost=float(report.get("total_cost", 0.0)),
        latency_s=round(latency_s, 3),
        error=error,
    )


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 4) if present else None


def summarize(results: Sequence[CaseResult]) -> dict[str, Any]:
    """The figures of a whole evaluation: means over the cases that have each score."""
    latencies = sorted(r.latency_s for r in results)
    return {
        "cases": len(results),
        "done": sum(r.status == "done" for r in results),
        "failed": sum(r.status == "failed" for r in results),
        "correctness": _mean([r.correctness for r in results]),
        "judged_correct": _mean([None if r.judged is None else float(r.judged) for r in results]),
        "grounding": _mean([r.grounding for r in results]),
        "citations_valid": _mean([r.citations_valid for r in results]),
        "cites_expected": _mean(
            [None if r.cites_expected is None else float(r.cites_expected) for r in results]
        ),
        "tokens_mean": _mean([float(r.tokens) for r in results]),
        "cost_total": round(sum(r.cost for r in results), 6),
        "latency_s_mean": _mean([r.latency_s for r in results]),
        "latency_s_p50": latencies[len(latencies) // 2] if latencies else None,
        "latency_s_max": latencies[-1] if latencies else None,
    }


async def evaluate(
    agent: Agent,
    locks: ThreadLocks,
    settings: Settings,
    cases: Sequence[EvalCase],
    *,
    options: Mapping[str, Any],
    judge_model: BaseChatModel | None = None,
    on_case: Callable[[CaseResult], Awaitable[None] | None] | None = None,
) -> list[CaseResult]:
    """Run and score every case in turn; `on_case` hears of each result as it comes."""
    results = []
    for case in cases:
        result = await run_case(
            agent, locks, settings, case, options=options, judge_model=judge_model
        )
        results.append(result)
        if on_case is not None:
            maybe = on_case(result)
            if maybe is not None:
                await maybe
    return results
