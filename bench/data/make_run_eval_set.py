"""Make the run-evaluation dataset `bench/data/scifact_runs/` from SciFact's test split, for
`agentgraph eval runs`.

Each case is a SciFact test claim asked as a question ("Is it true that ...?"), answered from a
small collection: the abstracts that support the claims, and four times as many distractor
abstracts drawn from the rest of the corpus. A case's `sources` is its supporting abstract (a
good answer cites it); its `reference` is the abstract's sentence that shares the most content
words with the claim (what a good answer says). Claims with one supporting abstract are
taken in the order of their ids, so the dataset is the same at every run:

    python bench/data/make_run_eval_set.py [--cases 20] [--scifact ../shared/datasets/scifact]
"""

import argparse
import hashlib
import json
from pathlib import Path

from nodes.grounding import best_quote

HERE = Path(__file__).resolve().parent
SCIFACT = HERE.parents[1].parent / "shared" / "datasets" / "scifact"
OUT = HERE / "scifact_runs"
COLLECTION = "scifact_runs"


def _read_jsonl(path: Path) -> dict[str, dict[str, str]]:
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line)
    return {str(row["_id"]): row for row in rows}


def _supporting(qrels: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in qrels.read_text(encoding="utf-8").splitlines()[1:]:
        query_id, doc_id, _ = line.split("\t")
        found.setdefault(query_id, []).append(doc_id)
    return found


def _question(claim: str) -> str:
    claim = claim.strip().rstrip(".")
    return f"Is it true that {claim[0].lower()}{claim[1:]}?"


def make(scifact: Path, cases: int) -> None:
    """Write the dataset's cases, corpus and source note under `OUT`."""
    corpus = _read_jsonl(scifact / "corpus.jsonl")
    queries = _read_jsonl(scifact / "queries.jsonl")
    support = _supporting(scifact / "qrels" / "test.tsv")
    chosen = [q for q in sorted(support, key=int) if len(support[q]) == 1][:cases]
    wanted = {support[q][0] for q in chosen}
    # Distractors: the abstracts whose id hashes lowest, so that they are the same each time.
    others = sorted(
        (d for d in corpus if d not in wanted),
        key=lambda d: hashlib.sha256(d.encode()).hexdigest(),
    )[: 4 * len(wanted)]
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for doc_id in sorted(wanted | set(others), key=int):
            doc = corpus[doc_id]
            out.write(json.dumps({"_id": doc_id, "title": doc["title"], "text": doc["text"]}))
            out.write("\n")
    with (OUT / "cases.jsonl").open("w", encoding="utf-8") as out:
        for query_id in chosen:
            claim = queries[query_id]["text"]
            doc_id = support[query_id][0]
            case = {
                "id": f"scifact-{query_id}",
                "question": _question(claim),
                "reference": best_quote(corpus[doc_id]["text"], claim),
                "collection": COLLECTION,
                "documents": "corpus.jsonl",
                "sources": [f"#{doc_id}"],
            }
            out.write(json.dumps(case) + "\n")
    (OUT / "SOURCE.md").write_text(
        f"# scifact_runs\n\n{len(chosen)} SciFact test claims asked as questions, and a "
        f"collection of {len(wanted)} supporting abstracts with {len(others)} distractors, "
        "made by `bench/data/make_run_eval_set.py` from SciFact in BEIR layout.\n\n"
        'License: CC BY-NC 2.0 (SciFact). Citation: Wadden et al., "Fact or Fiction: '
        'Verifying Scientific Claims", EMNLP 2020.\n',
        encoding="utf-8",
    )


def main() -> None:
    """Read the options and make the dataset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scifact", type=Path, default=SCIFACT)
    parser.add_argument("--cases", type=int, default=20)
    args = parser.parse_args()
    make(args.scifact, args.cases)
    print(f"written: {OUT}")


if __name__ == "__main__":
    main()
