"""Citations and grounding for RAG answers: parse cited ids, check them, score support.

Pure functions over the answer text and the retrieved chunks, so the rule is testable without
a model: a citation counts only when it names a retrieved chunk, and a sentence is supported by
the share of its content words found in the chunks it cites.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk as the worker shows it to the model: a short label and its id."""

    label: str
    chunk_id: str
    source: str
    score: float
    text: str


@dataclass(frozen=True)
class Checked:
    """An answer's citations after checking, and how well its sentences are supported."""

    citations: list[Citation]
    dropped: list[str]
    grounding: float

    @property
    def grounded(self) -> bool:
        """True when at least one citation is valid and support reaches `GROUNDED_AT`."""
        return bool(self.citations) and self.grounding >= GROUNDED_AT


def content_words(text: str) -> set[str]:
    """Return the lowercase words of `text` that carry meaning (no stop words)."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


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


def check_answer(answer: str, passages: Sequence[Passage]) -> Checked:
    """Resolve the answer's [label] or [chunk id] citations against the retrieved passages.

    A citation that names no retrieved passage is dropped and reported in `dropped`. Each
    sentence's support is measured against the passages it cites (a sentence without its own
    citation leans on the nearest cited sentence before it); grounding is the mean support.
    """
    by_key = {p.label: p for p in passages} | {p.chunk_id: p for p in passages}
    cited: dict[str, Citation] = {}
    dropped: list[str] = []
    supports: list[float] = []
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
    grounding = sum(supports) / len(supports) if supports else 0.0
    return Checked(citations=list(cited.values()), dropped=dropped, grounding=round(grounding, 3))


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
