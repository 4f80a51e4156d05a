"""Ingestion and hybrid search on the real embedded Postgres with the real embedding model."""

import uuid
from pathlib import Path

import pytest

from app.errors import RetrievalError
from app.settings import Settings
from retrievers import search as search_sql
from retrievers.connect import open_store
from retrievers.ingest import ingest
from retrievers.service import open_collection, search
from tests.pdf import write_pdf

from .conftest import Cli

DOCS = {
    "pandas.md": "# Giant pandas\n\nThe giant panda eats bamboo almost exclusively, "
    "about twelve kilograms a day.\n",
    "postgres.txt": "PostgreSQL stores rows in heap pages. The pgvector extension adds "
    "HNSW indexes for approximate nearest-neighbour search.\n",
    "tea.html": "<html><head><title>Green tea</title></head><body><p>Green tea is rich in "
    "catechins such as epigallocatechin gallate.</p></body></html>",
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.fixture
def collection() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


async def _ingest(settings: Settings, url: str, collection: str, *paths: Path):  # type: ignore[no-untyped-def]
    async with open_collection(settings, collection, create=True, url=url) as (store, embedder):
        report = await ingest(store, embedder, list(paths), chunk_size=400, chunk_overlap=40)
        return report, await store.count()


@pytest.mark.parametrize(
    ("mode", "query", "expected"),
    [
        ("dense", "what food do pandas live on", "pandas.md"),
        ("fulltext", "catechins", "tea.html"),
        ("hybrid", "approximate nearest neighbour index in Postgres", "postgres.txt"),
    ],
)
async def test_search_finds_the_expected_chunk_in_each_mode(
    settings: Settings, embedded_url: str, folder: Path, collection: str, mode, query, expected
) -> None:
    report, (sources, chunks) = await _ingest(settings, embedded_url, collection, folder)
    assert sorted(Path(s).name for s in report.added) == sorted(DOCS)
    assert (sources, chunks) == (3, report.chunks)
    async with open_collection(settings, collection, url=embedded_url) as (store, embedder):
        hits = await search(store, embedder, query, k=3, mode=mode)
    assert hits
    assert Path(hits[0].source).name == expected
    assert hits == sorted(hits, key=lambda h: -h.score)


async def test_reingest_adds_nothing_and_a_changed_file_replaces_its_chunks(
    settings: Settings, embedded_url: str, folder: Path, collection: str
) -> None:
    _first, counts = await _ingest(settings, embedded_url, collection, folder)
    again, counts_again = await _ingest(settings, embedded_url, collection, folder)
    assert again.added == []
    assert again.replaced == []
    assert again.chunks == 0
    assert len(again.unchanged) == 3
    assert counts_again == counts

    changed = folder / "pandas.md"
    changed.write_text("# Red pandas\n\nThe red panda sleeps in trees during the day.\n")
    third, counts_third = await _ingest(settings, embedded_url, collection, folder)
    assert third.replaced == [str(changed)]
    assert len(third.unchanged) == 2
    assert counts_third[0] == 3
    async with open_collection(settings, collection, url=embedded_url) as (store, embedder):
        hits = await search(store, embedder, "bamboo", k=10, mode="fulltext")
        assert hits == []  # the old text is gone
        hits = await search(store, embedder, "red panda sleeps in trees", k=1, mode="hybrid")
    assert hits[0].source == str(changed)
    assert "sleeps in trees" in hits[0].content


async def test_delete_removes_a_source_and_a_source_filter_restricts_results(
    settings: Settings, embedded_url: str, folder: Path, collection: str
) -> None:
    sub = folder / "sub"
    sub.mkdir()
    (sub / "more.md").write_text("Giant pandas also eat bamboo shoots in spring.\n")
    await _ingest(settings, embedded_url, collection, folder)
    async with open_collection(settings, collection, url=embedded_url) as (store, embedder):
        everywhere = await search(store, embedder, "pandas bamboo", k=10, mode="hybrid")
        assert {Path(h.source).name for h in everywhere} >= {"pandas.md", "more.md"}
        only_sub = await search(store, embedder, "pandas bamboo", k=10, source=str(sub))
        assert only_sub
        assert all(h.source.startswith(str(sub) + "/") for h in only_sub)
        dense_sub = await search(
            store, embedder, "pandas bamboo", k=10, mode="dense", source=str(sub)
        )
        assert [h.source for h in dense_sub] == [str(sub / "more.md")]

        gone = await store.delete_sources(str(folder / "pandas.md"))
        assert gone == [str(folder / "pandas.md")]
        assert (await store.count())[0] == 3
        after = await search(store, embedder, "pandas bamboo", k=10, mode="hybrid")
    assert str(folder / "pandas.md") not in {h.source for h in after}


async def test_an_unreadable_file_is_reported_and_the_rest_goes_in(
    settings: Settings, embedded_url: str, folder: Path, collection: str
) -> None:
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 truncated garbage")
    (folder / "empty.md").write_text("   \n")
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    report, (sources, _) = await _ingest(settings, embedded_url, collection, folder)
    assert sources == 3
    assert len(report.added) == 3
    skipped = {Path(s.source).name: s.reason for s in report.skipped}
    assert set(skipped) == {"broken.pdf", "empty.md", "photo.jpg"}
    assert skipped["broken.pdf"].startswith("unreadable PDF")


async def test_a_collection_refuses_an_embedding_model_of_another_dimension(
    settings: Settings, embedded_url: str, folder: Path, collection: str
) -> None:
    _, counts = await _ingest(settings, embedded_url, collection, folder)
    with pytest.raises(RetrievalError, match="384-dimensional"):
        async with open_store(embedded_url, collection, embedding_model="other", dim=8):
            pass
    async with open_collection(settings, collection, url=embedded_url) as (store, _):
        assert await store.count() == counts


def test_cli_ingest_search_and_delete(cli: Cli, folder: Path, collection: str) -> None:
    (folder / "broken.pdf").write_bytes(b"not a pdf at all")
    ingested = cli.json("ingest", str(folder), "--collection", collection)
    assert ingested["_exit_code"] == 0
    assert len(ingested["added"]) == 3
    assert [Path(s["source"]).name for s in ingested["skipped"]] == ["broken.pdf"]

    found = cli.json("search", "giant panda bamboo", "--collection", collection, "--k", "2")
    assert found["_exit_code"] == 0
    assert Path(found["hits"][0]["source"]).name == "pandas.md"
    assert len(found["hits"]) == 2

    deleted = cli.json("ingest", "--delete", str(folder / "pandas.md"), "-c", collection)
    assert deleted["deleted"] == [str(folder / "pandas.md")]
    again = cli.json("search", "giant panda bamboo", "--collection", collection, "--mode", "dense")
    assert "pandas.md" not in {Path(h["source"]).name for h in again["hits"]}

    missing = cli.run("search", "x", "--collection", "no_such_collection")
    assert missing.returncode == 1
    assert "no collection 'no_such_collection'" in missing.stderr


async def test_a_pdf_is_read_split_and_found_with_its_title(
    settings: Settings, embedded_url: str, tmp_path: Path, collection: str
) -> None:
    pdf = tmp_path / "otters.pdf"
    write_pdf(
        pdf,
        "Sea otters",
        [
            "Sea otters float on their backs and crack shellfish open with stones.",
            "They hold hands while sleeping so that they do not drift apart.",
        ],
    )
    report, (sources, chunks) = await _ingest(settings, embedded_url, collection, tmp_path)
    assert [Path(s).name for s in report.added] == ["otters.pdf"], report.skipped
    assert (sources, chunks) == (1, report.chunks)
    async with open_collection(settings, collection, url=embedded_url) as (store, embedder):
        hits = await search(store, embedder, "which animal uses stones as tools", k=1)
    assert hits[0].source == str(pdf)
    assert hits[0].title == "Sea otters"
    assert "crack shellfish open with stones" in hits[0].content


async def _terms_are_current(url: str, collection: str) -> None:
    """The collection's term statistics equal what its chunks hold now."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        kept = dict(
            await (
                await conn.execute(f'SELECT term, df FROM "rag_terms_{collection}" WHERE df > 0')
            ).fetchall()
        )
        counted = dict(
            await (
                await conn.execute(
                    f'SELECT word, count(*)::int FROM "rag_chunks_{collection}",'
                    " unnest(tsvector_to_array(tsv)) AS word GROUP BY word"
                    f" UNION ALL SELECT '', count(*)::int FROM \"rag_chunks_{collection}\""
                    " UNION ALL SELECT ' ', sum(length(tsv))::int"
                    f' FROM "rag_chunks_{collection}"'
                )
            ).fetchall()
        )
        postings = await (
            await conn.execute(f'SELECT term, chunk, tf, dl FROM "rag_postings_{collection}"')
        ).fetchall()
        expected = await (
            await conn.execute(
                "SELECT u.lexeme, c.id, cardinality(u.positions), length(c.tsv)"
                f' FROM "rag_chunks_{collection}" c, unnest(c.tsv) AS u'
            )
        ).fetchall()
    assert kept == {k: v for k, v in counted.items() if v}
    assert sorted(postings) == sorted(expected)
    assert postings


async def test_term_statistics_follow_every_write_and_are_made_for_an_older_collection(
    settings: Settings, embedded_url: str, folder: Path, collection: str
) -> None:
    import psycopg

    await _ingest(settings, embedded_url, collection, folder)
    await _terms_are_current(embedded_url, collection)
    (folder / "pandas.md").write_text("# Red pandas\n\nThe red panda sleeps in trees.\n")
    await _ingest(settings, embedded_url, collection, folder)  # replaces one source
    await _terms_are_current(embedded_url, collection)
    async with open_collection(settings, collection, url=embedded_url) as (store, _):
        assert await store.delete_sources(str(folder / "tea.html"))
    await _terms_are_current(embedded_url, collection)

    # A collection from before term statistics: they are made when it is opened.
    async with await psycopg.AsyncConnection.connect(embedded_url, autocommit=True) as conn:
        await conn.execute(f'DROP TABLE "rag_terms_{collection}"')
    async with open_collection(settings, collection, url=embedded_url) as (store, embedder):
        hits = await search(store, embedder, "red panda trees", k=1, mode="fulltext")
    assert Path(hits[0].source).name == "pandas.md"
    await _terms_are_current(embedded_url, collection)

    # Statistics from before the lexeme count and the postings: both are made when the
    # collection is opened.
    async with await psycopg.AsyncConnection.connect(embedded_url, autocommit=True) as conn:
        await conn.execute(f"DELETE FROM \"rag_terms_{collection}\" WHERE term = ' '")
        await conn.execute(f'DROP TABLE "rag_postings_{collection}"')
    async with open_collection(settings, collection, url=embedded_url):
        pass
    await _terms_are_current(embedded_url, collection)


async def test_full_text_ranks_by_bm25(
    settings: Settings, embedded_url: str, tmp_path: Path, collection: str
) -> None:
    filler = " ".join(f"Unrelated sentence number {n} about weather and tides." for n in range(6))
    texts = {
        "once.txt": "Lichens grow on bare rock.",
        "often.txt": "Lichens grow on rock. Lichens survive drought. Lichens feed reindeer.",
        "long.txt": f"Lichens grow on bare rock. {filler}",
        "other.txt": "Mosses grow on damp soil.",
    }
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    await _ingest(settings, embedded_url, collection, tmp_path)
    async with open_collection(settings, collection, url=embedded_url) as (store, _):
        hits = await store.fulltext("lichens", limit=10)
        # The rarer word wins, unless the query repeats the other.
        said_once = await store.fulltext("bare mosses", limit=10)
        repeated = await store.fulltext("bare bare bare mosses", limit=10)
        unnormalised = await search_sql.fulltext(store.conn, collection, "lichens", limit=10, b=0.0)
    # More occurrences rank higher; the same words in a longer chunk rank lower.
    assert [Path(h.source).name for h in hits] == ["often.txt", "once.txt", "long.txt"]
    assert Path(said_once[0].source).name == "other.txt"
    assert Path(repeated[0].source).name == "once.txt"
    # Without length normalisation (b = 0) the short and the long chunk holding the word once
    # score alike.
    score = {Path(h.source).name: h.score for h in hits}
    flat = {Path(h.source).name: h.score for h in unnormalised}
    assert score["once.txt"] > score["long.txt"]
    assert flat["once.txt"] == pytest.approx(flat["long.txt"])
    assert flat["often.txt"] > flat["once.txt"]
