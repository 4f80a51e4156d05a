"""`bench.protocols` against a real `bench.served` server: each surface's runs end well (the
benchmark checks every stream's end) and the figures name every surface and level."""

import argparse

from bench.protocols import SURFACES, measure
from tests.integration.conftest import Cli


async def test_every_surface_streams_whole_runs(cli: Cli, bench_servers: tuple[str, str]) -> None:
    args = argparse.Namespace(runs=4, warmup=1, clients=[1, 2], blocks=2)
    figures = await measure(args, bench_servers[0], cli.env["DATABASE_URL"])

    assert [lv["clients"] for lv in figures["levels"]] == [1, 2]
    for lv in figures["levels"]:
        for name in SURFACES:
            assert lv[name]["runs"] == 4, (name, lv)
            assert lv[name]["p50_ms"] > 0
        assert set(lv["chat_completions"]) >= {"p50_overhead", "throughput_ratio"}
