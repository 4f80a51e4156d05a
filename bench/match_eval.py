"""Measure how well a step is matched to an ingested collection (the planner's rag routing).

A step becomes a rag step when its closest chunk in some collection is at least as similar
(cosine) as `AGENTGRAPH_MATCH_THRESHOLD`. This benchmark scores that rule on a BEIR dataset
that `bench.retrieval_eval` has ingested (SciFact by default):

- positives: the split's queries, which the collection answers, both as they are and in the
  form the rule planner gives a single question's first step;
- negatives: everyday questions the collection does not cover (bench/data/offtopic_questions.txt;
  every other one for train, the others for test).

It prints, per threshold, the share of positives matched (true positives) and of negatives
matched (false positives), and the figures at the configured threshold. Tune on train; report
test. Run from the repository root, after `python -m bench.retrieval_eval`:

    python -m bench.match_eval [--split test] [--json] [--collection scifact]
                               [--data-dir DIR] [--database-url URL]
"""

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: import from the repository, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.errors import AgentGraphError
from app.settings import Settings, get_settings
from bench.retrieval_eval import DEFAULT_DATASET, load_queries
from nodes.plans import rule_plan

logger = logging.getLogger("bench.match_eval")

NEGATIVES = Path(__file__).resolve().parent / "data" / "offtopic_questions.txt"
THRESHOLDS = [round(0.20 + 0.05 * i, 2) for i in range(11)]


def offtopic_questions(split: str) -> list[str]:
    """Return the split's negatives: every other question for train, the rest for any other
    split, so that the threshold is not tuned on the questions it is reported on."""
    lines = NEGATIVES.read_text(encoding="utf-8").splitlines()
    questions = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return questions[0::2] if split == "train" else questions[1::2]


def first_step(question: str) -> str:
    """The instruction the rule planner gives a single question's first step."""
    return rule_plan(question, max_steps=8)["steps"][0]["instruction"]


async def similarities(
    settings: Settings, collection: str, url: str | None, texts: list[str]
) -> list[float]:
    """Return each text's cosine similarity to its closest chunk in `collection`, 0 for a
    text that shares no word with the collection (the planner does not compare those)."""
    from retrievers.service import open_collection

    async with open_collection(settings, collection, url=url) as (store, embedder):
        vectors = await asyncio.to_thread(lambda: [embedder.embed_query(t) for t in texts])
        best = []
        for text, vector in zip(texts, vectors, strict=True):
            hits = await store.dense(vector, limit=1) if await store.mentions(text) else []
            best.append(hits[0].score if hits else 0.0)
    return best


def rate(values: list[float], threshold: float) -> float:
    """Share of `values` at or above `threshold`."""
    return sum(v >= threshold for v in values) / len(values)


async def measure(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Score the positives and negatives and return the figures."""
    queries, _ = load_queries(args.dataset.resolve(), args.split)
    claims = list(queries.values())
    negatives = offtopic_questions(args.split)
    groups = {
        "positives": claims,
        "positives_as_first_step": [first_step(q) for q in claims],
        "negatives": negatives,
        "negatives_as_first_step": [first_step(q) for q in negatives],
    }
    scores = {
        name: await similarities(settings, args.collection, args.database_url, texts)
        for name, texts in groups.items()
    }
    sweep = [
        {
            "threshold": t,
            **{name: round(rate(values, t), 4) for name, values in scores.items()},
        }
        for t in THRESHOLDS
    ]
    configured = settings.match_threshold
    return {
        "dataset": str(args.dataset.resolve()),
        "split": args.split,
        "collection": args.collection,
        "positives": len(claims),
        "negatives": len(negatives),
        "threshold": configured,
        "at_threshold": {name: round(rate(v, configured), 4) for name, v in scores.items()},
        "sweep": sweep,
    }


def render(figures: dict[str, Any]) -> str:
    """Return the figures as a readable table."""
    names = ["positives", "positives_as_first_step", "negatives", "negatives_as_first_step"]
    heads = ["TP raw", "TP step", "FP raw", "FP step"]
    lines = [
        f"{figures['dataset']} ({figures['split']}): {figures['positives']} queries of "
        f"collection {figures['collection']!r} vs {figures['negatives']} off-topic questions",
        "",
        f"{'threshold':>9}" + "".join(f"{h:>9}" for h in heads),
    ]
    for row in figures["sweep"]:
        lines.append(f"{row['threshold']:>9.2f}" + "".join(f"{row[n]:>9.1%}" for n in names))
    at = figures["at_threshold"]
    lines += [
        "",
        f"at the configured threshold {figures['threshold']}: "
        + ", ".join(f"{h} {at[n]:.1%}" for h, n in zip(heads, names, strict=True)),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.match_eval",
        description="How well steps are matched to an ingested collection.",
    )
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="BEIR folder")
    parser.add_argument("--split", default="test", help="qrels split (tune on train)")
    parser.add_argument("--collection", default="scifact", help="the ingested collection")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--database-url", default=None, help="Postgres instead of the embedded")
    parser.add_argument("--data-dir", type=Path, default=None, help="embedded cluster's data dir")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    settings = get_settings()
    if args.data_dir is not None:
        settings = settings.model_copy(update={"data_dir": args.data_dir})
    try:
        figures = asyncio.run(measure(args, settings))
    except AgentGraphError as exc:
        logger.error("%s (ingest it first: python -m bench.retrieval_eval)", exc)
        return 1
    sys.stdout.write((json.dumps(figures) if args.json else render(figures)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
