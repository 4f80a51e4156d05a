"""Loaders and splitting: what each file type yields, stable chunk ids, skip reasons."""

import json
from pathlib import Path

from retrievers.ingest import chunk_document, make_splitter, split_evenly
from retrievers.loaders import Document, Skipped, content_hash, discover, load_file
from tests.pdf import write_pdf


def _one(path: Path) -> Document | Skipped:
    items = list(load_file(path))
    assert len(items) == 1
    return items[0]


def test_markdown_title_is_the_first_heading(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("# Giant pandas\n\nThey eat bamboo.\n")
    doc = _one(path)
    assert isinstance(doc, Document)
    assert doc.title == "Giant pandas"
    assert doc.source == str(path)
    assert doc.content_hash == content_hash(doc.text)


def test_html_drops_scripts_and_keeps_the_title(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>Tea</title><style>p{}</style></head>"
        "<body><p>Green tea contains catechins.</p><script>var x = 1;</script></body></html>"
    )
    doc = _one(path)
    assert isinstance(doc, Document)
    assert doc.title == "Tea"
    assert doc.text == "Green tea contains catechins."


def test_bad_inputs_are_skipped_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "broken.pdf").write_bytes(b"this is not a pdf")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    reasons = {}
    for path in discover([tmp_path])[0]:
        item = _one(path)
        assert isinstance(item, Skipped)
        reasons[Path(item.source).name] = item.reason
    assert reasons["broken.pdf"].startswith("unreadable PDF")
    assert reasons["empty.txt"] == "empty file"
    assert "unknown file type '.png'" in reasons["image.png"]
    assert reasons["latin1.txt"] == "not UTF-8 text"
    _, missing = discover([tmp_path / "nope"])
    assert missing[0].reason == "no such file or directory"


def test_beir_corpus_yields_one_document_per_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": "d1", "title": "First", "text": "Alpha text."},
        {"_id": "d2", "title": "", "text": ""},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    items = list(load_file(path))
    assert isinstance(items[0], Document)
    assert items[0].source == f"{path}#d1"
    assert (items[0].title, items[0].text) == ("First", "Alpha text.")
    assert isinstance(items[1], Skipped)
    assert items[1].reason == "empty document"
    assert isinstance(items[2], Skipped)
    assert items[2].source == f"{path}:3"


def test_chunk_ids_are_stable_and_change_with_the_content() -> None:
    size = {"chunk_size": 100, "chunk_overlap": 10}
    text = " ".join(f"Sentence number {i} is here." for i in range(20))
    doc = Document("/x.txt", "x", text, content_hash(text))
    first = chunk_document(doc, **size)
    assert len(first) > 1
    assert [c.position for c in first] == list(range(len(first)))
    assert all(len(c.content) <= 100 for c in first)
    assert [c.chunk_id for c in chunk_document(doc, **size)] == [c.chunk_id for c in first]
    changed = Document("/x.txt", "x", text + " More.", content_hash(text + " More."))
    assert chunk_document(changed, **size)[0].chunk_id != first[0].chunk_id


def test_a_document_within_the_chunk_size_stays_whole() -> None:
    text = "Short documents are not split. " * 3
    assert split_evenly(text, chunk_size=len(text), chunk_overlap=10) == [text]


def test_a_document_a_little_over_the_size_splits_into_halves_not_a_sliver() -> None:
    text = " ".join(f"Sentence {i:02} of the text." for i in range(44))  # 1,099 characters
    greedy = make_splitter(chunk_size=1000, chunk_overlap=150).split_text(text)
    even = split_evenly(text, chunk_size=1000, chunk_overlap=150)
    assert len(even) == len(greedy) == 2
    assert min(len(p) for p in greedy) < 300  # what the greedy splitter leaves at the end
    assert all(500 <= len(p) <= 1000 for p in even)
    assert " ".join(even).split()[-5:] == text.split()[-5:]  # nothing lost at the end


def test_even_pieces_are_never_more_than_the_greedy_splitter_makes() -> None:
    for n in (30, 75, 160, 400):
        text = " ".join(f"Word{i} and a few more words. " for i in range(n))
        greedy = make_splitter(chunk_size=400, chunk_overlap=40).split_text(text)
        even = split_evenly(text, chunk_size=400, chunk_overlap=40)
        assert len(even) <= len(greedy)
        assert all(len(p) <= 400 for p in even)


def test_pdf_text_and_title_come_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "otters.pdf"
    write_pdf(path, "Sea otters", ["Sea otters crack shellfish with stones.", "They float."])
    doc = _one(path)
    assert isinstance(doc, Document)
    assert doc.title == "Sea otters"
    assert doc.text.splitlines() == ["Sea otters crack shellfish with stones.", "They float."]
