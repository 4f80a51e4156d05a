"""Which steps answer from documents: the planning rule, with the library's answers scripted
(the real matching against Postgres is tested in tests/integration/test_rag_graph.py)."""

from collections.abc import Sequence
from dataclasses import dataclass, field

from app.errors import DatabaseError
from nodes.context import Context
from nodes.documents import with_documents
from nodes.plans import rule_plan
from nodes.schemas import Plan
from retrievers.service import Library, Match


@dataclass(frozen=True)
class ScriptedLibrary(Library):
    answers: Sequence[Match | None] | Exception = ()
    asked: list[list[str]] = field(default_factory=list)

    async def match(
        self, queries: Sequence[str], *, threshold: float | None = None
    ) -> list[Match | None]:
        self.asked.append(list(queries))
        if isinstance(self.answers, Exception):
            raise self.answers
        return list(self.answers)


PLAN: Plan = rule_plan("What do okapis eat? Why is the sky blue?", max_steps=8)


async def test_only_the_matching_step_becomes_a_rag_step() -> None:
    library = ScriptedLibrary(answers=[Match("zoo", 0.71, "c1"), None])
    plan, note = await with_documents(PLAN, Context(), library)
    assert [s["kind"] for s in plan["steps"]] == ["rag", "reasoning"]
    assert note == "s1 answers from collection 'zoo' (similarity 0.71)"
    assert library.asked == [[s["instruction"] for s in PLAN["steps"]]]


async def test_a_named_collection_makes_every_step_rag_without_matching() -> None:
    library = ScriptedLibrary()
    plan, note = await with_documents(PLAN, Context(collection="zoo"), library)
    assert {s["kind"] for s in plan["steps"]} == {"rag"}
    assert note is None
    assert library.asked == []


async def test_documents_off_or_no_library_leaves_the_plan() -> None:
    library = ScriptedLibrary(answers=[Match("zoo", 0.9, "c1"), None])
    assert await with_documents(PLAN, Context(documents=False), library) == (PLAN, None)
    assert await with_documents(PLAN, Context(), None) == (PLAN, None)
    assert library.asked == []


async def test_a_store_that_cannot_be_consulted_leaves_the_plan_and_says_why() -> None:
    library = ScriptedLibrary(answers=DatabaseError("cannot reach Postgres"))
    plan, note = await with_documents(PLAN, Context(), library)
    assert plan == PLAN
    assert note == "documents not consulted: cannot reach Postgres"
