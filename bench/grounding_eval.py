"""How often the grounding check catches a wrong citation: SciFact claims and their abstracts.

For each claim of the split with an evidence abstract in its qrels, the claim is written as a
one-sentence answer citing one passage, three times:

- **right**: the abstract the qrels name (the check should accept it);
- **hard**: the non-evidence abstract that shares the most stemmed words with the claim, as
  a retriever would rank it (the check should flag it);
- **random**: a non-evidence abstract drawn at random (seeded);

and as two-sentence answers whose first sentence cites the claim's evidence rightly:

- **mixed**: the second sentence is another claim citing that same passage (a wrong
  citation among right ones);
- **uncited**: the second sentence is another claim citing nothing.

Two rules are scored: the answer-level word-overlap grounding (`grounding >= GROUNDED_AT`,
the rule before claims were checked one by one) and the claim check (`Claim.flag`, key terms
at `SUPPORTED_AT`), and a sweep of the claim threshold on the split, to tune on train.

    python -m bench.grounding_eval [--split train|test] [--limit N] [--json]
"""

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: import from the repository, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.retrieval_eval import DEFAULT_DATASET, load_queries
from nodes.grounding import GROUNDED_AT, SUPPORTED_AT, Passage, check_answer, content_words, stem

THRESHOLDS = [round(0.1 * i, 1) for i in range(1, 10)]


def load_corpus(dataset: Path) -> dict[str, str]:
    """Document id -> title and text."""
    corpus: dict[str, str] = {}
    with (dataset / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            corpus[row["_id"]] = f"{row.get('title', '')}. {row['text']}"
    return corpus


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Check every claim against its right, hard and random passage, under both rules."""
    corpus = load_corpus(args.dataset)
    queries, qrels = load_queries(args.dataset, args.split)
    stems = {doc: {stem(w) for w in content_words(text)} for doc, text in corpus.items()}
    rng = random.Random(7)
    ids = sorted(corpus)
    cases: list[tuple[str, dict[str, str]]] = []
    for qid, claim in list(queries.items())[: args.limit]:
        evidence = [d for d in qrels[qid] if d in corpus]
        if not evidence:
            continue
        words = {stem(w) for w in content_words(claim)}
        others = [d for d in ids if d not in qrels[qid]]
        hard = max(others, key=lambda d: len(words & stems[d]))
        cases.append((claim, {"right": evidence[0], "hard": hard, "random": rng.choice(others)}))
    # The second sentence of a two-sentence answer: the next case's claim.
    seconds = [cases[(i + 1) % len(cases)][0] for i in range(len(cases))]

    def checks(claim: str, doc: str) -> tuple[bool, float, str | None]:
        # A claim written as one answer citing the passage; a claim the splitter cuts in two
        # ("e.g. ...") cites it in its last sentence, as a model would.
        checked = check_answer(f"{claim} [1].", [Passage("1", doc, doc, 1.0, corpus[doc])])
        last = checked.claims[-1]
        return checked.grounding >= GROUNDED_AT, last.support, last.flag

    outcomes = {kind: [checks(claim, docs[kind]) for claim, docs in cases] for kind in
                ("right", "hard", "random")}  # fmt: skip

    def two(claim: str, second: str, doc: str, *, cite: bool) -> tuple[bool, bool]:
        answer = f"{claim.rstrip('.')} [1]. {second.rstrip('.')}{' [1]' if cite else ''}."
        checked = check_answer(answer, [Passage("1", doc, doc, 1.0, corpus[doc])])
        return checked.grounding >= GROUNDED_AT and bool(checked.citations), bool(checked.flagged)

    mixed = [two(c, s2, d["right"], cite=True) for (c, d), s2 in zip(cases, seconds, strict=True)]
    uncited = [
        two(c, s2, d["right"], cite=False) for (c, d), s2 in zip(cases, seconds, strict=True)
    ]

    def rate(values: list[bool]) -> float:
        return round(sum(values) / len(values), 3) if values else 0.0

    figures: dict[str, Any] = {
        "split": args.split,
        "claims": len(cases),
        "grounded_at": GROUNDED_AT,
        "supported_at": SUPPORTED_AT,
        "word_overlap": {
            "accepted_right": rate([ok for ok, _, _ in outcomes["right"]]),
            "caught_hard": rate([not ok for ok, _, _ in outcomes["hard"]]),
            "caught_random": rate([not ok for ok, _, _ in outcomes["random"]]),
            "caught_mixed": rate([not ok for ok, _ in mixed]),
            "caught_uncited": rate([not ok for ok, _ in uncited]),
        },
        "claim_check": {
            "accepted_right": rate([flag is None for _, _, flag in outcomes["right"]]),
            "caught_hard": rate([flag is not None for _, _, flag in outcomes["hard"]]),
            "caught_random": rate([flag is not None for _, _, flag in outcomes["random"]]),
            "caught_mixed": rate([flagged for _, flagged in mixed]),
            "caught_uncited": rate([flagged for _, flagged in uncited]),
        },
        "both": {  # what `Checked.grounded` applies: grounding >= GROUNDED_AT and no flag
            "accepted_right": rate([ok and f is None for ok, _, f in outcomes["right"]]),
            "caught_hard": rate([not ok or f is not None for ok, _, f in outcomes["hard"]]),
            "caught_random": rate([not ok or f is not None for ok, _, f in outcomes["random"]]),
            "caught_mixed": rate([not ok or flagged for ok, flagged in mixed]),
            "caught_uncited": rate([not ok or flagged for ok, flagged in uncited]),
        },
        "sweep": [
            {
                "supported_at": t,
                "accepted_right": rate([s >= t for _, s, _ in outcomes["right"]]),
                "caught_hard": rate([s < t for _, s, _ in outcomes["hard"]]),
                "caught_random": rate([s < t for _, s, _ in outcomes["random"]]),
            }
            for t in THRESHOLDS
        ],
    }
    return figures


def render(f: dict[str, Any]) -> str:
    """The figures as a table."""
    lines = [
        f"SciFact {f['split']}: {f['claims']} claims, each cited to its evidence abstract "
        "(right), the closest other one (hard) and a random one",
        f"{'rule':<34}{'accepts right':>14}{'catches hard':>13}{'random':>8}{'mixed':>8}"
        f"{'uncited':>9}",
    ]
    for name, label in (
        ("word_overlap", f"answer word overlap >= {f['grounded_at']}"),
        ("claim_check", f"claim key terms >= {f['supported_at']}"),
        ("both", "both (what the rag worker applies)"),
    ):
        r = f[name]
        lines.append(
            f"{label:<34}{r['accepted_right']:>14.3f}{r['caught_hard']:>13.3f}"
            f"{r['caught_random']:>8.3f}{r['caught_mixed']:>8.3f}{r['caught_uncited']:>9.3f}"
        )
    lines.append("")
    lines.append("claim threshold sweep (tune on train):")
    for row in f["sweep"]:
        lines.append(
            f"  {row['supported_at']:.1f}: accepts {row['accepted_right']:.3f}, "
            f"catches hard {row['caught_hard']:.3f}, random {row['caught_random']:.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation and print its figures."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.grounding_eval",
        description="How often the grounding check catches a wrong citation (SciFact).",
    )
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="BEIR folder")
    parser.add_argument("--split", default="test", help="qrels split (tune on train)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many claims")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    figures = measure(args)
    print(json.dumps(figures) if args.json else render(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
