"""Fusing ranked lists: a convex combination of normalised scores (hybrid search's), and
reciprocal rank fusion.

Hybrid search fuses its dense and full-text lists by `convex`: each list's scores are scaled
to [0, 1] by their minimum and maximum, and a chunk scores their weighted sum (0 from a list
that lacks it). The weights come from the query's own lists (`agreement_weights`): a list
whose best documents the other list also finds counts more, one whose best documents the
other does not find counts less. Nothing is tuned to a collection. Measured on three
collections of different domains and query styles (SciFact, Cranfield, CISI:
`bench/fusion_eval.py`, train splits), this and the plain equal-weight mean were the only
fusions that beat RRF on all three; the agreement weights kept more of a margin over the
better single list where one list is much weaker (CISI's full text), where RRF had barely
any. Fixed weights of 0.6 or 0.7 on dense did better on two collections and worse on SciFact.

Past the first `HEAD` chunks, what a rag step or a search page shows, the rest of the ranking
is the lists' reciprocal rank fusion (`hybrid_fusion`): a deep ranking by RRF finds more of the
relevant documents (Recall@100) than by scores.
"""

from collections.abc import Sequence

RRF_K = 10
"""Tuned on SciFact train (nDCG@10 of hybrid: k=60 0.716, k=20 0.722, k=10 0.725)."""
HYBRID_CANDIDATES = 100
"""Chunks of each list a hybrid search fuses (at least the chunks asked for): the scaling is
by each list's minimum, so fewer candidates compress the lists' heads (50: nDCG@10 about
0.01 lower on all three collections)."""


HEAD = 20
"""Chunks ranked by the convex combination; deeper ones by RRF (`hybrid_fusion`)."""


def hybrid_fusion(
    ranks: Sequence[Sequence[str]],
    sources: Sequence[Sequence[str]],
    scored: Sequence[Sequence[tuple[str, float]]],
) -> list[tuple[str, float]]:
    """Fuse hybrid search's lists (chunk ids best first, their documents, their scores): the
    first `HEAD` by the agreement-weighted convex combination, the rest by RRF.

    Returns:
        (chunk id, score) pairs, best first; a tail score is its RRF score, scaled below the
        head's last.
    """
    weights = [w / len(ranks) for w in agreement_weights(sources)]
    head = convex(scored, weights=weights)[:HEAD]
    taken = {item for item, _ in head}
    floor = head[-1][1] if head else 1.0
    tail = [(item, score) for item, score in rrf(ranks) if item not in taken]
    top = tail[0][1] if tail else 1.0
    return head + [(item, floor * score / top * 0.999) for item, score in tail]


def convex(
    lists: Sequence[Sequence[tuple[str, float]]], *, weights: Sequence[float] | None = None
) -> list[tuple[str, float]]:
    """Fuse scored lists of (id, score): scores min-max scaled per list, weighted (equally by
    default) and summed; an id a list lacks gets 0 from it.

    Returns:
        (id, score) pairs, best first; ties keep the order in which ids were first seen.
    """
    weights = weights or [1.0 / len(lists)] * len(lists)
    fused: dict[str, float] = {}
    for items, weight in zip(lists, weights, strict=True):
        if not items:
            continue
        low = min(score for _, score in items)
        span = (max(score for _, score in items) - low) or 1.0
        for item, score in items:
            fused[item] = fused.get(item, 0.0) + weight * (score - low) / span
    return sorted(fused.items(), key=lambda pair: -pair[1])


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


def document_ranking(chunks: Sequence[tuple[str, str]]) -> list[str]:
    """The documents of a ranked list of (chunk id, document) pairs, each at its first chunk."""
    seen: dict[str, None] = {}
    for _, doc in chunks:
        seen.setdefault(doc, None)
    return list(seen)


def agreement_weights(
    rankings: Sequence[Sequence[str]], *, top: int = 10, depth: int = 100, floor: float = 0.1
) -> list[float]:
    # The defaults were set before any measurement and not tuned afterwards.
    """Weight each ranked list by how many of its first `top` items the other lists hold in
    their first `depth`: a list whose best results nobody else finds counts less. Weights
    are at least `floor` and sum to the number of lists (all equal when nothing is known)."""
    scores = []
    for i, ranking in enumerate(rankings):
        others = set().union(*(r[:depth] for j, r in enumerate(rankings) if j != i))
        head = list(dict.fromkeys(ranking))[:top]
        scores.append(max(floor, len(others.intersection(head)) / max(1, len(head))))
    total = sum(scores)
    return [len(rankings) * s / total for s in scores]
