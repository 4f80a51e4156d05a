"""How a run's answer is scored against what a dataset expects (`graphs.run_eval`).

Facts are matched in the answer exactly (after normalising case, punctuation and spaces) or
fuzzily (most of the fact's content words appear in the answer, each word matched by its
stem); a reference answer is compared by token F1; a judge model, when one is given, reads
the answer beside the facts or the reference and says whether it agrees.
"""

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from nodes.grounding import content_words, stem

FUZZY_SHARE = 0.75
"""Share of a fact's content words the answer must hold for a fuzzy match."""
_WORD = re.compile(r"[a-z0-9]+")
JUDGE_SYSTEM = (
    "You grade answers. Reply with one word: yes if the answer states what the expected "
    "facts or the reference answer state (other words may differ), no if it does not or "
    "contradicts them."
)
JUDGE_PROMPT = (
    "Question: {question}\nExpected: {expected}\nAnswer: {answer}\nDoes the answer agree?"
)


def words(text: str) -> list[str]:
    """The lowercase words and numbers of `text`, in order."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class FactMatch:
    """Whether one expected fact was found in an answer, and how."""

    fact: str
    found: bool
    how: str
    """'exact', 'fuzzy' (with the share of its words found) or 'missing'."""


def _said(wanted: str, stems: set[str]) -> bool:
    """Whether a word of stem `wanted` is among `stems`: the same stem, or one of four
    letters or more that begins the other ('fractur' and 'fracture')."""
    if wanted in stems:
        return True
    return len(wanted) >= 4 and any(
        len(s) >= 4 and (s.startswith(wanted) or wanted.startswith(s)) for s in stems
    )


def match_fact(fact: str, answer: str) -> FactMatch:
    """Look for `fact` in `answer`: exactly, then fuzzily."""
    fact_words, answer_words = words(fact), words(answer)
    if not fact_words:
        return FactMatch(fact, False, "missing")
    if f" {' '.join(fact_words)} " in f" {' '.join(answer_words)} ":
        return FactMatch(fact, True, "exact")
    content = sorted(content_words(fact)) or fact_words
    stems = {stem(w) for w in answer_words}
    share = sum(_said(stem(w), stems) for w in content) / len(content)
    if share >= FUZZY_SHARE:
        return FactMatch(fact, True, f"fuzzy ({share:.2f})")
    return FactMatch(fact, False, "missing")


def token_f1(answer: str, reference: str) -> float:
    """Token F1 of `answer` against `reference` (content words, with their counts)."""
    meaningful = content_words(answer) | content_words(reference)
    got = Counter(w for w in words(answer) if w in meaningful)
    want = Counter(w for w in words(reference) if w in meaningful)
    common = sum((got & want).values())
    if not common:
        return 0.0
    precision, recall = common / sum(got.values()), common / sum(want.values())
    return 2 * precision * recall / (precision + recall)


def correctness(
    answer: str, *, facts: Sequence[str], reference: str | None
) -> tuple[float | None, list[FactMatch]]:
    """Score `answer`: the share of `facts` found in it, else its token F1 against
    `reference`; None when the case expects neither."""
    if facts:
        matches = [match_fact(fact, answer) for fact in facts]
        return sum(m.found for m in matches) / len(matches), matches
    if reference:
        return token_f1(answer, reference), []
    return None, []


async def judge(
    model: BaseChatModel,
    *,
    question: str,
    answer: str,
    facts: Sequence[str],
    reference: str | None,
) -> bool | None:
    """Ask `model` whether `answer` agrees with what is expected; None if its reply is
    neither yes nor no (or nothing is expected)."""
    expected = "; ".join(facts) if facts else reference
    if not expected:
        return None
    reply = await model.ainvoke(
        [
            SystemMessage(JUDGE_SYSTEM),
            HumanMessage(JUDGE_PROMPT.format(question=question, expected=expected, answer=answer)),
        ]
    )
    said = words(str(reply.content))
    if said[:1] == ["yes"]:
        return True
    if said[:1] == ["no"]:
        return False
    return None


def quote_found(quote: str, chunk: str) -> bool:
    """Whether a citation's quote is text of the chunk it names (its words, in order)."""
    quoted = " ".join(words(quote))
    return bool(quoted) and quoted in " ".join(words(chunk))
