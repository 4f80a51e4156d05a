"""What `bench.fusion_eval` computes beside the shipped fusion."""

import json
from pathlib import Path

import pytest

from bench.fusion_eval import _unit, pseudo_queries


def test_unit_vectors() -> None:
    assert _unit([3.0, 4.0]) == pytest.approx([0.6, 0.8])
    assert _unit([0.0, 0.0]) == [0.0, 0.0]


def test_pseudo_queries_ask_for_their_own_document_by_title_or_first_sentence(
    tmp_path: Path,
) -> None:
    documents = [
        {"_id": f"d{n}", "title": f"Title {n}", "text": f"First of {n}. Second of {n}!"}
        for n in range(5)
    ] + [{"_id": "untitled", "title": "", "text": "No title here."}]
    with (tmp_path / "corpus.jsonl").open("w") as f:
        f.writelines(json.dumps(d) + "\n" for d in documents)

    titles, qrels = pseudo_queries(tmp_path, "title", count=3)
    firsts, same = pseudo_queries(tmp_path, "first", count=3)

    assert len(titles) == len(qrels) == 3
    assert same == qrels  # one seeded sample, whichever the kind
    for qid, relevant in qrels.items():
        [(doc, grade)] = relevant.items()
        n = doc.removeprefix("d")
        assert (titles[qid], firsts[qid], grade) == (f"Title {n}", f"First of {n}.", 1)
    assert len(pseudo_queries(tmp_path, "title", count=100)[0]) == 5  # titled ones only
