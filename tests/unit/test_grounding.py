"""Citation checking, grounding scores and the extractive fallback of the rag worker."""

import pytest

from app.errors import ConfigError
from nodes.context import Context
from nodes.critic import grounding_score
from nodes.grounding import Passage, check_answer, extractive_answer, relabel
from nodes.plans import direct_plan, use_documents
from nodes.schemas import StepResult, StepUsage

PASSAGES = [
    Passage("1", "abc-0", "/docs/pandas.md", 0.9, "Giant pandas eat bamboo. They live in China."),
    Passage("2", "def-0", "/docs/tea.md", 0.5, "Green tea contains catechins."),
]


def test_valid_citations_become_structured_data_with_a_quote() -> None:
    checked = check_answer("Pandas eat bamboo [1]. Green tea contains catechins [2].", PASSAGES)
    assert [c["chunk_id"] for c in checked.citations] == ["abc-0", "def-0"]
    assert checked.citations[0]["source"] == "/docs/pandas.md"
    assert checked.citations[0]["score"] == 0.9
    assert checked.citations[0]["quote"] == "Giant pandas eat bamboo."
    assert checked.dropped == []
    assert checked.grounding == 1.0
    assert checked.grounded


def test_a_citation_of_a_chunk_not_retrieved_is_dropped_and_flagged() -> None:
    checked = check_answer("Pandas eat bamboo [7]. They sleep [zzz-9].", PASSAGES)
    assert checked.citations == []
    assert checked.dropped == ["7", "zzz-9"]
    assert not checked.grounded


def test_unsupported_sentences_lower_the_grounding() -> None:
    checked = check_answer(
        "Pandas eat bamboo [1]. Pandas are excellent swimmers and fly airplanes [1].", PASSAGES
    )
    assert checked.citations
    assert 0.3 < checked.grounding < 0.8
    # a citation after the full stop still belongs to its sentence
    after = check_answer("Green tea contains catechins. [2]", PASSAGES)
    assert after.grounding == 1.0


def test_extractive_answer_quotes_retrieved_sentences_with_citations() -> None:
    answer = extractive_answer("What do giant pandas eat?", PASSAGES)
    assert answer.startswith("Giant pandas eat bamboo [1].")
    checked = check_answer(answer, PASSAGES)
    assert checked.grounded
    assert relabel(answer, PASSAGES).startswith("Giant pandas eat bamboo [abc-0].")


def _rag_result(grounding: float | None, *, cited: bool = True) -> StepResult:
    result = StepResult(
        step_id="s1",
        kind="rag",
        status="done",
        output="x",
        citations=[{"chunk_id": "a", "source": "s", "score": 1.0, "quote": "q"}] if cited else [],
        usage=StepUsage(input_tokens=0, output_tokens=0, cost=0.0),
        attempts=1,
        latency_ms=1.0,
        error=None,
    )
    if grounding is not None:
        result["grounding"] = grounding
    return result


def test_the_critic_averages_the_grounding_of_rag_steps() -> None:
    assert grounding_score([_rag_result(1.0), _rag_result(0.5)]) == 0.75
    assert grounding_score([_rag_result(None, cited=False)]) == 0.0
    assert grounding_score([]) is None


def test_a_named_collection_turns_steps_into_rag_steps() -> None:
    plan = direct_plan("What do pandas eat?")
    assert use_documents(plan, None) == plan
    assert [s["kind"] for s in use_documents(plan, "notes")["steps"]] == ["rag"]
    assert Context(collection="notes").collection == "notes"
    with pytest.raises(ConfigError, match="collection"):
        Context(collection="Bad Name")


def test_a_sentence_without_a_citation_of_its_own_is_an_uncited_claim() -> None:
    checked = check_answer("Pandas eat bamboo [1]. They also love honey.", PASSAGES)
    assert [c.flag for c in checked.claims] == [None, "uncited"]
    assert checked.flagged[0].sentence == "They also love honey."
    assert checked.grounding >= 0.5  # the old score alone would have called it grounded
    assert not checked.grounded


def test_a_claim_citing_a_passage_without_its_key_terms_is_unsupported() -> None:
    # The question's own words prove nothing: only "bamboo" is the answer's to back.
    wrong = check_answer("Pandas eat bamboo [2].", PASSAGES, question="What do pandas eat?")
    [claim] = wrong.claims
    assert (claim.flag, claim.support, claim.cited) == ("unsupported", 0.0, ["def-0"])
    assert not wrong.grounded
    right = check_answer("Pandas eat bamboo [1].", PASSAGES, question="What do pandas eat?")
    assert right.claims[0].flag is None
    assert right.grounded
    # Stems match: "eating" and "eat", "Chinese" is no "China".
    assert check_answer("Pandas are eating bamboo [1].", PASSAGES).claims[0].support == 1.0
    assert check_answer("Pandas are Chinese [1].", PASSAGES).claims[0].support < 1.0


def test_the_critic_counts_an_answer_with_flagged_claims_as_not_grounded() -> None:
    flagged = _rag_result(0.9)
    flagged["flagged_claims"] = [
        {"sentence": "x", "reason": "unsupported", "support": 0.0, "cited": ["a"]}
    ]
    assert grounding_score([flagged]) == 0.0
    flagged["extractive"] = True  # replaced by quotes of the passages: grounded as scored
    assert grounding_score([flagged]) == 0.9
