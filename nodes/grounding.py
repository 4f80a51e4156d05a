"""Citations and grounding for RAG answers: parse cited ids, check them, score support.

Pure functions over the answer text and the retrieved chunks, so the rule is testable without
a model: a citation counts only when it names a retrieved chunk, and a sentence is supported by
the share of its content words found in the chunks it cites.

Each sentence is also a claim checked on its own: a claim must cite a retrieved chunk
(`uncited`), and the chunk must hold its key terms: the content words it adds to the
question, stemmed (`unsupported` below `SUPPORTED_AT`). An answer with a flagged claim is not
grounded. No entailment model ships in a package that can be installed offline; this is word
evidence, measured by `bench/grounding_eval.py` on SciFact claims and their abstracts.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from nodes.schemas import Citation

_CITE = re.compile(r"\[([^\[\]]{1,80})\]")
_TRAILING = re.compile(r"([.!?])((?:\s*\[[^\[\]]{1,80}\])+)")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "may",
        "might",
        "more",
        "most",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "she",
        "should",
        "so",
        "such",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "also",
        "about",
    ]
)
GROUNDED_AT = 0.5
"""A RAG answer is grounded when its sentences are, on average, at least this supported."""
SUPPORTED_AT = 0.5
"""A claim is supported when the chunks it cites hold at least this share of its key terms
(tuned on SciFact train claims: `bench/grounding_eval.py`)."""
_SUFFIXES = ("ational", "ations", "ation", "ments", "ment", "ings", "ing", "ies", "ied",
             "ness", "ous", "ive", "ers", "er", "ed", "es", "ly", "s")  # fmt: skip


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk as the worker shows it to the model: a short label and its id."""

    label: str
    chunk_id: str
    source: str
    score: float
    text: str


@dataclass(frozen=True)
class Claim:
    """One sentence of an answer: what it cites, how well that supports it, any flag."""

    sentence: str
    cited: list[str]
    """Chunk ids of the retrieved passages the sentence cites itself."""
    support: float
    """Share of its key terms found in what it cites (1.0 when it has none)."""
    flag: Literal["uncited", "unsupported"] | None


@dataclass(frozen=True)
class Checked:
    """An answer's citations after checking, and how well its sentences are supported."""

    citations: list[Citation]
    dropped: list[str]
    grounding: float
    claims: list[Claim] = field(default_factory=list)

    @property
    def flagged(self) -> list[Claim]:
        """The claims that cite nothing retrieved, or what they cite does not support."""
        return [c for c in self.claims if c.flag is not None]

    @property
    def grounded(self) -> bool:
        """True when a citation is valid, support reaches `GROUNDED_AT`, and no claim is
        flagged."""
        return bool(self.citations) and self.grounding >= GROUNDED_AT and not self.flagged


def content_words(text: str) -> set[str]:
    """Return the lowercase words of `text` that carry meaning (no stop words)."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


def stem(word: str) -> str:
    """A crude English stem (the longest listed suffix off a word of five letters or more),
    so that "eats", "eating" and "eat" count as one term."""
    if len(word) >= 5:
        for suffix in _SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                return word[: -len(suffix)]
    return word


def key_terms(text: str, *, besides: str = "") -> set[str]:
    """The stemmed content words of `text` that `besides` (the question) lacks; all of them
    when that leaves none."""
    own = {stem(w) for w in content_words(_CITE.sub(" ", text))}
    new = own - {stem(w) for w in content_words(besides)}
    return new or own


def claim_support(sentence: str, texts: Sequence[str], *, question: str = "") -> float:
    """Share of the sentence's key terms (see `key_terms`) found in `texts`."""
    terms = key_terms(sentence, besides=question)
    if not terms:
        return 1.0
    pool = {stem(w) for text in texts for w in content_words(text)}
    return len(terms & pool) / len(terms)


def sentences(text: str) -> list[str]:
    """Split text into sentences (on ., ! and ? followed by space)."""
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def _support(sentence: str, texts: Sequence[str]) -> float:
    words = content_words(_CITE.sub(" ", sentence))
    if not words:
        return 1.0  # nothing to support ("See above.")
    pool: set[str] = set()
    for text in texts:
        pool |= content_words(text)
    return len(words & pool) / len(words)


def best_quote(chunk: str, claim: str) -> str:
    """Return the chunk's sentence that shares the most content words with `claim`."""
    wanted = content_words(claim)
    candidates = sentences(chunk) or [chunk]
    return max(candidates, key=lambda s: len(content_words(s) & wanted))[:500]


def attach_citations(text: str) -> str:
    """Move citations written after a sentence's full stop ("x. [1]") before it ("x [1].")."""
    return _TRAILING.sub(lambda m: m.group(2) + m.group(1), text)


def relabel(text: str, passages: Sequence[Passage]) -> str:
    """Replace the short labels the model saw ([1]) with the chunk ids they stand for."""
    ids = {p.label: p.chunk_id for p in passages}

    def swap(match: re.Match[str]) -> str:
        keys = [k.strip() for k in re.split(r"[,;]", match.group(1))]
        return "[" + ", ".join(ids.get(k, k) for k in keys) + "]"

    return _CITE.sub(swap, text)


def check_answer(answer: str, passages: Sequence[Passage], *, question: str = "") -> Checked:
    """Resolve the answer's [label] or [chunk id] citations against the retrieved passages.

    A citation that names no retrieved passage is dropped and reported in `dropped`. Each
    sentence's support is measured against the passages it cites (a sentence without its own
    citation leans on the nearest cited sentence before it); grounding is the mean support.
    Each sentence is a claim too (`Claim`): one with content words and no citation of its own
    is flagged `uncited`, one whose key terms the passages it cites do not hold
    `unsupported`.
    """
    by_key = {p.label: p for p in passages} | {p.chunk_id: p for p in passages}
    cited: dict[str, Citation] = {}
    dropped: list[str] = []
    supports: list[float] = []
    claims: list[Claim] = []
    previous: list[Passage] = []
    for sentence in sentences(attach_citations(answer)):
        keys = [k.strip() for m in _CITE.findall(sentence) for k in re.split(r"[,;]\s*", m)]
        own = []
        for key in keys:
            passage = by_key.get(key)
            if passage is None:
                if key not in dropped:
                    dropped.append(key)
                continue
            own.append(passage)
            if passage.chunk_id not in cited:
                cited[passage.chunk_id] = Citation(
                    chunk_id=passage.chunk_id,
                    source=passage.source,
                    score=round(passage.score, 6),
                    quote=best_quote(passage.text, sentence),
                )
        basis = own or previous
        supports.append(_support(sentence, [p.text for p in basis]) if basis else 0.0)
        previous = own or previous
        claims.append(_claim(sentence, own, question))
    grounding = sum(supports) / len(supports) if supports else 0.0
    return Checked(
        citations=list(cited.values()),
        dropped=dropped,
        grounding=round(grounding, 3),
        claims=claims,
    )


def _claim(sentence: str, own: list[Passage], question: str) -> Claim:
    if not content_words(_CITE.sub(" ", sentence)):
        return Claim(sentence=sentence, cited=[], support=1.0, flag=None)  # "See above."
    if not own:
        return Claim(sentence=sentence, cited=[], support=0.0, flag="uncited")
    support = round(claim_support(sentence, [p.text for p in own], question=question), 3)
    return Claim(
        sentence=sentence,
        cited=[p.chunk_id for p in own],
        support=support,
        flag=None if support >= SUPPORTED_AT else "unsupported",
    )


def extractive_answer(question: str, passages: Sequence[Passage], *, limit: int = 3) -> str:
    """Build an answer from the retrieved sentences closest to the question, each cited."""
    wanted = content_words(question)
    scored = [
        (len(content_words(s) & wanted), -rank, s, p)
        for rank, p in enumerate(passages)
        for s in sentences(p.text)
        if len(s) > 20
    ]
    scored.sort(key=lambda item: (item[0], item[1]), reverse=True)
    picked = scored[:limit] or [(0, 0, p.text[:300], p) for p in passages[:1]]
    return " ".join(f"{s.rstrip().rstrip('.')} [{p.label}]." for _, _, s, p in picked)
