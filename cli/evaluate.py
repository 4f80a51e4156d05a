"""`agentgraph eval runs DATASET.jsonl`: run a dataset's questions and score the answers
(`graphs.run_eval`), for one configuration or two side by side."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from app.errors import ConfigError
from app.settings import Settings
from cli.documents import RunFn
from cli.render import err, out, print_json

FIGURES = (
    ("correctness", "correctness"),
    ("judged_correct", "judged correct"),
    ("grounding", "grounding"),
    ("citations_valid", "citations valid"),
    ("cites_expected", "cites the expected source"),
    ("tokens_mean", "tokens a run"),
    ("cost_total", "cost"),
    ("latency_s_mean", "latency s (mean)"),
    ("latency_s_p50", "latency s (median)"),
    ("done", "runs done"),
    ("failed", "runs failed"),
)
"""The summary's figures, as the report names them."""


def parse_options(pairs: Sequence[str], *, what: str) -> dict[str, Any]:
    """Read run options given as NAME=VALUE (the value as JSON when it parses: 3, true,
    else as text).

    Raises:
        ConfigError: a pair has no '='.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"bad {what} {pair!r}: give NAME=VALUE, e.g. planner=llm")
        try:
            options[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[name.strip()] = value
    return options


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_report(dataset: Path, runs: Mapping[str, dict[str, Any]]) -> str:
    """A Markdown report: the summary of each configuration side by side, then each case."""
    names = list(runs)
    lines = [f"# Run evaluation of `{dataset.name}`", ""]
    for name in names:
        options = runs[name]["options"] or {}
        shown = ", ".join(f"{k}={v}" for k, v in options.items()) or "the defaults"
        lines.append(f"- **{name}**: {shown}")
    lines += ["", "| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in FIGURES:
        row = " | ".join(_cell(runs[n]["summary"][key]) for n in names)
        lines.append(f"| {label} | {row} |")
    lines += ["", "## Cases", ""]
    lines.append(
        "| case | " + " | ".join(f"{n}: status | {n}: correct | {n}: tokens" for n in names) + " |"
    )
    lines.append("|---|" + "---|---|---|" * len(names))
    by_case = {n: {r["case_id"]: r for r in runs[n]["results"]} for n in names}
    for case_id in by_case[names[0]]:
        cells: list[str] = []
        for name in names:
            result = by_case[name].get(case_id, {})
            cells += [
                _cell(result.get("status")),
                _cell(result.get("correctness")),
                _cell(result.get("tokens")),
            ]
        lines.append(f"| {case_id} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer, run: RunFn) -> None:
    """Add the `eval` commands to the CLI."""
    evaluation = typer.Typer(help="Evaluate runs against a dataset.", no_args_is_help=True)
    app.add_typer(evaluation, name="eval")

    @evaluation.command("runs")
    def eval_runs(
        dataset: Annotated[Path, typer.Argument(help="Cases, one JSON object a line.")],
        option: Annotated[
            list[str] | None,
            typer.Option("--option", "-o", metavar="NAME=VALUE", help="A run option."),
        ] = None,
        against: Annotated[
            list[str] | None,
            typer.Option(
                metavar="NAME=VALUE",
                help="Also run every case with these options instead, and compare.",
            ),
        ] = None,
        judge: Annotated[
            str | None,
            typer.Option(metavar="MODEL", help="A model that judges each answer ('local', …)."),
        ] = None,
        limit: Annotated[int | None, typer.Option(min=1, help="Only the first N cases.")] = None,
        out_dir: Annotated[
            Path, typer.Option("--out", help="Where eval.json and eval.md are written.")
        ] = Path("eval-out"),
        as_json: Annotated[
            bool, typer.Option("--json", help="Print the JSON report on stdout.")
        ] = False,
    ) -> None:
        """Run each question of DATASET and score the answers: correctness (facts, a
        reference answer, or a judge model), grounding, citations, tokens, cost, latency."""
        base = parse_options(option or [], what="--option")
        configs = {"baseline": base}
        if against is not None:
            configs["against"] = {**base, **parse_options(against, what="--against")}

        async def go(settings: Settings) -> int:
            from app.models import get_chat_model
            from graphs.locks import OwnConnectionLocks
            from graphs.run_eval import (
                CaseResult,
                evaluate,
                ingest_documents,
                load_cases,
                summarize,
            )
            from graphs.service import open_agent

            cases = load_cases(dataset, limit=limit)
            judge_model = get_chat_model(judge, settings=settings) if judge else None
            if not as_json:
                err.print(f"[dim]{len(cases)} case(s); ingesting their documents…[/dim]")
            await ingest_documents(settings, cases)
            runs: dict[str, dict[str, Any]] = {}
            async with open_agent(settings) as agent:
                locks = OwnConnectionLocks(agent.db.url)
                for name, options in configs.items():

                    def show(result: CaseResult, name: str = name) -> None:
                        if not as_json:
                            err.print(
                                f"{escape(name)} {escape(result.case_id)}: {result.status}, "
                                f"correct {_cell(result.correctness)}, {result.tokens} tokens, "
                                f"{result.latency_s:.1f} s"
                            )

                    results = await evaluate(
                        agent,
                        locks,
                        settings,
                        cases,
                        options=options,
                        judge_model=judge_model,
                        on_case=show,
                    )
                    runs[name] = {
                        "options": options,
                        "summary": summarize(results),
                        "results": [r.as_json() for r in results],
                    }
            document = {"dataset": str(dataset), "judge": judge, "configurations": runs}
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "eval.json").write_text(json.dumps(document, indent=2, default=str))
            (out_dir / "eval.md").write_text(markdown_report(dataset, runs))
            if as_json:
                print_json(document)
            else:
                out.print(markdown_report(dataset, runs), markup=False)
                out.print(f"written: {out_dir / 'eval.json'}, {out_dir / 'eval.md'}", markup=False)
            return 0

        run(go)
