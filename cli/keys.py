"""`agentgraph keys create | list | revoke`: the API keys of the HTTP API, in Postgres."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.errors import ConfigError
from app.settings import Settings
from app.spans import is_span, parse_span
from cli.documents import JsonOpt, RunFn
from cli.render import err, out, print_json

if TYPE_CHECKING:
    from app.auth import KeyInfo, Keys


def parse_expiry(text: str, *, now: datetime | None = None) -> datetime:
    """Read `--expires`: a span such as 30d, 12h, 90m or 2w, or an ISO date or time.

    Raises:
        ConfigError: neither, or a moment in the past.
    """
    now = now or datetime.now(UTC)
    if is_span(text):
        moment = now + parse_span(text, what="--expires")
    else:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ConfigError(
                f"bad --expires {text!r}: give a span (30d, 12h, 90m, 2w) or an ISO date"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    if moment <= now:
        raise ConfigError(f"--expires {text!r} is not in the future")
    return moment


def register(app: typer.Typer, run: RunFn) -> None:
    """Add the `keys` commands to the CLI."""
    keys = typer.Typer(help="API keys of the HTTP API (shown once, stored hashed).")
    app.add_typer(keys, name="keys", no_args_is_help=True)

    @keys.command("create")
    def create(
        tenant: Annotated[str, typer.Option(help="The tenant the key acts for.")],
        scopes: Annotated[
            str, typer.Option(help="Comma-separated: runs, approvals, admin.")
        ] = "runs,approvals",
        expires: Annotated[
            str | None, typer.Option(help="Span (30d, 12h) or ISO date; never when unset.")
        ] = None,
        rate: Annotated[
            int | None,
            typer.Option(min=1, help="Requests a minute the key may make; no limit when unset."),
        ] = None,
        concurrent: Annotated[
            int | None,
            typer.Option(min=1, help="Runs the key may have in flight at once; no limit if unset."),
        ] = None,
        daily_tokens: Annotated[
            int | None,
            typer.Option(
                min=1, help="Tokens the key's runs may spend a day (UTC); no limit if unset."
            ),
        ] = None,
        daily_cost: Annotated[
            float | None,
            typer.Option(
                min=0.000001,
                help="Cost the key's runs may spend a day (UTC, AGENTGRAPH_PRICES); unset: none.",
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Make a key; its secret is printed once and not stored."""

        async def make(settings: Settings) -> int:
            from app.auth import KeyLimits, parse_scopes

            chosen = parse_scopes(scopes)
            moment = parse_expiry(expires) if expires else None
            async with _keys(settings) as store:
                info, secret = await store.create(
                    tenant,
                    chosen,
                    expires_at=moment,
                    limits=KeyLimits(rate, concurrent, daily_tokens, daily_cost),
                )
            if as_json:
                print_json({**_row(info), "key": secret})
                return 0
            out.print(secret, markup=False)
            err.print(
                f"key {info.id} for tenant {info.tenant!r}, scopes {', '.join(info.scopes)}"
                + (f", expires {info.expires_at.isoformat()}" if info.expires_at else "")
                + "".join(f", {limit}" for limit in info.limits.described())
                + ". This is the only time it is shown.",
                markup=False,
            )
            return 0

        run(make)

    @keys.command("list")
    def listed(as_json: JsonOpt = False) -> None:
        """List the keys (never their secrets)."""

        async def show(settings: Settings) -> int:
            async with _keys(settings) as store:
                infos = await store.listed()
            if as_json:
                print_json({"keys": [_row(k) for k in infos]})
                return 0
            for k in infos:
                state = "revoked" if k.revoked_at else "live"
                said = [f"expires {k.expires_at.isoformat()}"] if k.expires_at else []
                said += k.limits.described()
                out.print(
                    f"{k.id}  {k.tenant}  {','.join(k.scopes)}  {state}"
                    + "".join(f", {s}" for s in said),
                    markup=False,
                )
            return 0

        run(show)

    @keys.command("revoke")
    def revoke(
        key_id: Annotated[str, typer.Argument(help="The key's id (from 'keys list').")],
    ) -> None:
        """Revoke a key: every server refuses it within seconds."""

        async def drop(settings: Settings) -> int:
            async with _keys(settings) as store:
                done = await store.revoke(key_id)
            if not done:
                err.print(f"error: no live key {key_id!r}", markup=False)
                return 1
            out.print(f"revoked {key_id}", markup=False)
            return 0

        run(drop)


def _row(info: "KeyInfo") -> dict[str, Any]:
    return {
        "id": info.id,
        "tenant": info.tenant,
        "scopes": info.scopes,
        "created_at": info.created_at.isoformat(),
        "expires_at": info.expires_at.isoformat() if info.expires_at else None,
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
        **asdict(info.limits),
    }


@asynccontextmanager
async def _keys(settings: Settings) -> AsyncIterator["Keys"]:
    """The key store on the settings' database, set up, for one command."""
    from app.auth import Keys
    from app.db import open_database

    async with open_database(settings) as db:
        store = Keys(db.pool)
        await store.setup()
        yield store
