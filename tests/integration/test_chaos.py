"""The server killed with SIGKILL mid-run, ten times (`bench.chaos`, which does it a hundred
times): every cut-off run finishes when continued on a new server, no finished step is lost,
and only steps under way at a kill run twice."""

from bench.chaos import measure
from tests.integration.conftest import Cli


async def test_ten_kills_lose_no_finished_step(cli: Cli) -> None:
    figures = await measure(cli.env, kills=10, runs=4, delay_s=0.05, seed=7)

    assert figures["failures"] == []
    assert figures["cut_off"] > 0, figures  # the kills did cut runs off
    assert figures["finished_after_continue"] == figures["cut_off"], figures
    assert figures["finished_steps_lost"] == 0, figures
    assert figures["steps_run_twice_not_under_way"] == 0, figures
    assert figures["steps_run_twice"] <= figures["steps_under_way_at_kill"], figures
