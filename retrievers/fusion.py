"""Fusing ranked lists: hybrid search's document-level convex combination, and reciprocal rank
fusion.

Hybrid search fuses its dense and full-text lists by `document_fusion`: each list's scores are
min-max scaled to [0, 1], a document scores its best chunk's scaled score in each list (0 in a
list that lacks it), and the two count equally. Nothing is tuned to a collection. Measured on
three collections of different domains and query styles (SciFact, Cranfield, CISI:
`bench/fusion_eval.py`, train splits, full text by BM25), equal weights did as well as any
fixed weight from 0.4 to 0.6 and better than weights set per query by how much the two lists
agree, or than RRF; scoring documents rather than chunks lets a document whose best passage
for the words and best passage for the meaning differ count both.
"""

from collections.abc import Sequence

RRF_K = 10
"""RRF's constant when a search asks for RRF without one."""
HYBRID_CANDIDATES = 100
"""Chunks of each list a hybrid search fuses (at least the chunks asked for): the scaling is
by each list's minimum, so fewer candidates compress the lists' heads."""
LATER_CHUNK = 0.5
"""What each further chunk of a document counts, against the one before it."""

Candidate = tuple[str, str, float]
"""A chunk a list found: its id, its document (source) and its score in that list."""


def document_fusion(
    lists: Sequence[Sequence[Candidate]],
    *,
    weights: Sequence[float] | None = None,
    lows: Sequence[float | None] | None = None,
) -> list[tuple[str, float]]:
    """Fuse scored chunk lists at the document level.

    Each list's scores are min-max scaled (all 1 when they are all equal), from the list's
    lower bound in `lows` where one is given instead of its last candidate's score (for
    benchmarks comparing scalings); a document's score
    in a list is its best chunk's there, and its fused score the weighted sum of those (equal
    weights by default). A document's best chunk (by the chunks' own fused scores) takes its
    document's score, and each further one `LATER_CHUNK` of the one before, so that one
    document's chunks do not crowd the next documents out of the first places.

    Returns:
        (chunk id, score) pairs, best first; ties keep the order in which chunks were first
        seen.
    """
    weights = weights or [1.0 / len(lists)] * len(lists)
    lows = lows or [None] * len(lists)
    chunk_score: dict[str, float] = {}
    doc_score: dict[str, float] = {}
    document: dict[str, str] = {}
    for items, weight, bound in zip(lists, weights, lows, strict=True):
        if not items:
            continue
        low = min(score for _, _, score in items) if bound is None else bound
        span = max(score for _, _, score in items) - low
        best: dict[str, float] = {}
        for chunk, doc, score in items:
            # A list whose scores are all equal (one item, say) has nothing but best ones.
            scaled = weight * ((score - low) / span if span else 1.0)
            chunk_score[chunk] = chunk_score.get(chunk, 0.0) + scaled
            best[doc] = max(best.get(doc, 0.0), scaled)
            document[chunk] = doc
        for doc, score in best.items():
            doc_score[doc] = doc_score.get(doc, 0.0) + score
    taken: dict[str, int] = {}
    fused = []
    for chunk in sorted(chunk_score, key=lambda c: -chunk_score[c]):
        doc = document[chunk]
        fused.append((chunk, doc_score[doc] * LATER_CHUNK ** taken.get(doc, 0)))
        taken[doc] = taken.get(doc, 0) + 1
    return sorted(fused, key=lambda pair: -pair[1])


def rrf(
    rankings: Sequence[Sequence[str]], *, k: int = RRF_K, weights: Sequence[float] | None = None
) -> list[tuple[str, float]]:
    """Fuse ranked id lists: each id scores sum(weight / (k + rank)), rank starting at 1.

    Returns:
        (id, score) pairs, best first; ties keep the order in which ids were first seen.
    """
    weights = weights or [1.0] * len(rankings)
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])
