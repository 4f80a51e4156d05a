"""Read documents from files: Markdown, text, HTML, PDF, and BEIR-layout `corpus.jsonl`."""

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

TEXT_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".text", ".rst"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
PDF_SUFFIXES = frozenset({".pdf"})
SUPPORTED = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | {".jsonl"}


@dataclass(frozen=True)
class Document:
    """One source's text, with what identifies it and its content hash."""

    source: str
    title: str
    text: str
    content_hash: str


@dataclass(frozen=True)
class Skipped:
    """A file (or corpus line) that could not be read, and why."""

    source: str
    reason: str


def content_hash(text: str) -> str:
    """Return the hash that decides whether a source changed."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _HtmlText(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template"})
    _BLOCK = frozenset({"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "pre"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skipping = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag == "title":
            self._in_title = False
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skipping:
            self.parts.append(data)


def _html(raw: str) -> tuple[str, str]:
    parser = _HtmlText()
    parser.feed(raw)
    parser.close()
    text = re.sub(r"[ \t]+", " ", "".join(parser.parts))
    text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
    return parser.title.strip(), text


def _pdf(path: Path) -> tuple[str, str]:
    """Return the PDF's title (from its metadata, else the file name) and its text."""
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    # pypdf logs a warning per defect; the skip reason reported to the user says it once.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(path)
        text = "\n\n".join((page.extract_text() or "") for page in reader.pages).strip()
        title = (reader.metadata.title if reader.metadata else None) or ""
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable PDF ({exc})") from None
    return str(title).strip()[:200] or path.stem, text


def _first_heading(text: str, fallback: str) -> str:
    for line in text.splitlines():
        stripped = line.strip().lstrip("#").strip()
        if stripped:
            return stripped[:200]
    return fallback


def _corpus(path: Path) -> Iterator[Document | Skipped]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id = str(row["_id"])
                title = str(row.get("title") or "")
                body = str(row.get("text") or "")
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                yield Skipped(f"{path}:{number}", f"not a BEIR corpus line ({exc})")
                continue
            # The title travels separately: it is indexed and embedded with every chunk.
            text = body.strip() or title.strip()
            if not text:
                yield Skipped(f"{path}#{doc_id}", "empty document")
                continue
            yield Document(f"{path}#{doc_id}", title or doc_id, text, content_hash(text))


def load_file(path: Path) -> Iterator[Document | Skipped]:
    """Yield the documents of one file (several for a corpus), or why it was skipped."""
    source = str(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        yield Skipped(source, f"unknown file type {suffix or '(no suffix)'!r}")
        return
    try:
        if suffix == ".jsonl":
            yield from _corpus(path)
            return
        if suffix in PDF_SUFFIXES:
            title, text = _pdf(path)
        else:
            raw = path.read_text(encoding="utf-8")
            if suffix in HTML_SUFFIXES:
                html_title, text = _html(raw)
                title = html_title or path.stem
            else:
                text = raw.strip()
                title = _first_heading(text, path.stem)
    except UnicodeDecodeError:
        yield Skipped(source, "not UTF-8 text")
        return
    except OSError as exc:
        yield Skipped(source, f"cannot read: {exc.strerror or exc}")
        return
    except ValueError as exc:
        yield Skipped(source, str(exc))
        return
    if not text:
        yield Skipped(source, "empty file" if suffix not in PDF_SUFFIXES else "no text in PDF")
        return
    yield Document(source, title, text, content_hash(text))


def discover(paths: list[Path]) -> tuple[list[Path], list[Skipped]]:
    """Expand directories into the files under them, sorted; report paths that do not exist."""
    files: list[Path] = []
    missing: list[Skipped] = []
    for given in paths:
        path = given.resolve()
        if path.is_dir():
            files.extend(
                p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")
            )
        elif path.is_file():
            files.append(path)
        else:
            missing.append(Skipped(str(path), "no such file or directory"))
    return files, missing
