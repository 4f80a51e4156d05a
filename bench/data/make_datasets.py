"""Make the Cranfield and CISI test collections in BEIR layout, beside SciFact, for tuning
retrieval on other domains and query styles than SciFact's.

- Cranfield: 1,400 aerodynamics abstracts (1950s-60s), 225 judged queries, one-sentence
  technical questions;
- CISI: 1,460 library and information science abstracts, 76 judged queries, long,
  multi-sentence information needs.

Both are classic test collections distributed freely for research by the Information
Retrieval Group of the University of Glasgow. The copies read here are two public
repositories that carry them unchanged in their usual formats (see SOURCE.md in each output
folder for the exact files and their SHA-256). Run with the folders of those files:

    python bench/data/make_datasets.py --cranfield DIR_WITH_cran_*.json --cisi DIR_WITH_CISI.*

Each collection gets `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` and
`qrels/train.tsv` and `qrels/test.tsv`: the queries are split in half by a hash of their id,
so that tuning on train never sees a test query. Grades: Cranfield's positions 1 (a complete
answer) to 4 (minimum interest) become 4 to 1, its -1 (no interest) is left out; CISI's
judgements are all 1.
"""

import argparse
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _split(query_id: str) -> str:
    return "train" if hashlib.sha256(query_id.encode()).digest()[0] % 2 == 0 else "test"


def write_beir(
    out: Path,
    corpus: Iterable[tuple[str, str, str]],
    queries: dict[str, str],
    qrels: Iterable[tuple[str, str, int]],
    *,
    source: str,
) -> dict[str, int]:
    """Write a BEIR folder; return its counts."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    docs = 0
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for doc_id, title, text in corpus:
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
            docs += 1
    judged: dict[str, list[tuple[str, int]]] = {}
    for qid, doc_id, grade in qrels:
        judged.setdefault(qid, []).append((doc_id, grade))
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for qid in sorted(judged, key=int):
            f.write(json.dumps({"_id": qid, "text": queries[qid]}) + "\n")
    counts = {"documents": docs, "queries": len(judged)}
    for split in ("train", "test"):
        rows = [
            (qid, doc_id, grade)
            for qid in sorted(judged, key=int)
            if _split(qid) == split
            for doc_id, grade in sorted(dict(judged[qid]).items(), key=lambda x: int(x[0]))
        ]
        with (out / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{q}\t{d}\t{g}\n" for q, d, g in rows)
        counts[f"{split}_queries"] = len({q for q, _, _ in rows})
    (out / "SOURCE.md").write_text(source, encoding="utf-8")
    return counts


def _digests(paths: Iterable[Path]) -> str:
    return "\n".join(
        f"- `{p.name}`: sha256 `{hashlib.sha256(p.read_bytes()).hexdigest()}`" for p in paths
    )


def cranfield(src: Path, out: Path) -> dict[str, int]:
    """Cranfield from `cran_docs.json`, `cran_queries.json`, `cran_qrels.json`."""
    files = [src / f"cran_{name}.json" for name in ("docs", "queries", "qrels")]
    docs = json.loads(files[0].read_text(encoding="utf-8"))
    raw_queries = json.loads(files[1].read_text(encoding="utf-8"))
    # The queries are numbered in the file by their position (1..225), as the qrels are.
    queries = {str(i): q["query"].strip() for i, q in enumerate(raw_queries, 1)}
    qrels = [
        (str(r["query_num"]), str(r["id"]), 5 - int(r["position"]))
        for r in json.loads(files[2].read_text(encoding="utf-8"))
        if 1 <= int(r["position"]) <= 4
    ]
    corpus = (
        (str(d["id"]), (d.get("title") or "").strip(), (d.get("body") or "").strip()) for d in docs
    )
    source = f"""# Cranfield in BEIR layout

Made by `bench/data/make_datasets.py` from the Cranfield collection (1,400 aerodynamics
abstracts, 225 queries, graded judgements), distributed freely for research by the
Information Retrieval Group of the University of Glasgow
(ir.dcs.gla.ac.uk/resources/test_collections/cran). Read from the JSON copy in the public
repository Subhankar48/CS6370-Natural-Language-Processing (`Assignment_1/cranfield`, commit
8237a9dd07d5d050418e37ce0e1daa3458fd4945):

{_digests(files)}

Grades: positions 1 to 4 of the judgements become 4 to 1; -1 (no interest) is left out.
Queries are split into train and test by a hash of their id.
"""
    return write_beir(out, corpus, queries, qrels, source=source)


def _fields(text: str) -> Iterator[dict[str, str]]:
    """Records of the SMART format: `.I id`, then fields `.T`, `.A`, `.W`, `.X`, ..."""
    record: dict[str, str] | None = None
    field = None
    for line in text.splitlines():
        if m := re.match(r"^\.I\s+(\d+)", line):
            if record is not None:
                yield record
            record, field = {"I": m.group(1)}, None
        elif m := re.match(r"^\.([A-Z])\s*$", line):
            field = m.group(1)
        elif record is not None and field is not None:
            record[field] = (record.get(field, "") + " " + line.strip()).strip()
    if record is not None:
        yield record


def cisi(src: Path, out: Path) -> dict[str, int]:
    """CISI from `CISI.ALL`, `CISI.QRY`, `CISI.REL`."""
    files = [src / f"CISI.{ext}" for ext in ("ALL", "QRY", "REL")]
    docs = list(_fields(files[0].read_text(encoding="latin-1")))
    queries = {r["I"]: r.get("W", "") for r in _fields(files[1].read_text(encoding="latin-1"))}
    qrels = []
    for line in files[2].read_text(encoding="latin-1").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            qrels.append((str(int(parts[0])), str(int(parts[1])), 1))
    corpus = ((d["I"], d.get("T", ""), d.get("W", "")) for d in docs)
    source = f"""# CISI in BEIR layout

Made by `bench/data/make_datasets.py` from the CISI collection (1,460 library and information
science abstracts, 112 queries of which 76 are judged), collected by the Centre for Inventions
and Scientific Information and distributed freely for research by the Information Retrieval
Group of the University of Glasgow. Read from the public repository
GianRomani/CISI-project-MLOps (commit 2873ca579829e023f29a1b7f2e8afbf8c083ac36):

{_digests(files)}

Only the title (`.T`) and abstract (`.W`) of a document are kept; every judgement is grade 1.
Queries are split into train and test by a hash of their id.
"""
    return write_beir(out, corpus, queries, qrels, source=source)


def main(argv: list[str] | None = None) -> int:
    """Make both collections under bench/data/."""
    parser = argparse.ArgumentParser(prog="python bench/data/make_datasets.py")
    parser.add_argument("--cranfield", type=Path, required=True, help="folder of cran_*.json")
    parser.add_argument("--cisi", type=Path, required=True, help="folder of CISI.ALL/QRY/REL")
    parser.add_argument("--out", type=Path, default=HERE, help="where the folders go")
    args = parser.parse_args(argv)
    print("cranfield", cranfield(args.cranfield, args.out / "cranfield"))
    print("cisi", cisi(args.cisi, args.out / "cisi"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
