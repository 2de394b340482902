"""The baselines the service benchmark measures warroom against, each run in its own process like `warroom serve`:

    python -m bench.bare_apps bolt --port P      # slack-bolt AsyncApp that only acks (SLACK_SIGNING_SECRET)
    python -m bench.bare_apps insert --port P --database-url URL   # one INSERT + COMMIT per request

`bolt` is the floor for an ack: the same signature check and bolt dispatch as warroom, nothing after the ack.
`insert` is the floor for a durable webhook: read the body, one row written and committed, answer 202."""
from __future__ import annotations

import argparse
import os
import re

from aiohttp import web


def bolt_app() -> web.Application:
    from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
    from slack_bolt.app.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    # The client points at the Slack stand-in, like serve's, so bolt's one auth.test goes there, not to Slack.
    client = AsyncWebClient(token=os.environ["BARE_BOLT_TOKEN"], base_url=os.environ["SLACK_API_URL"])
    bolt = AsyncApp(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"], process_before_response=False)

    async def ack_only(ack) -> None:
        await ack()

    bolt.command(re.compile(r"^/"))(ack_only)
    bolt.action(re.compile(r".*"))(ack_only)

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    app = web.Application()
    app.router.add_post("/slack/events", events)
    app.router.add_get("/healthz", lambda request: _ok())
    return app


async def _ok() -> web.Response:
    return web.json_response({"status": "ok"})


def insert_app(database_url: str) -> web.Application:
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(database_url, min_size=4, max_size=10, open=False)

    async def lifecycle(app: web.Application):
        await pool.open(wait=True)
        async with pool.connection() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS bench_webhook_floor "
                               "(id bigserial PRIMARY KEY, body jsonb NOT NULL, at timestamptz DEFAULT now())")
        yield
        await pool.close()

    async def hook(request: web.Request) -> web.Response:
        body = await request.text()
        async with pool.connection() as conn:  # the block commits on exit: one INSERT, one COMMIT
            row = await (await conn.execute("INSERT INTO bench_webhook_floor (body) VALUES (%s::jsonb) RETURNING id",
                                            (body,))).fetchone()
        return web.json_response({"accepted": 1, "id": row[0]}, status=202)

    app = web.Application(client_max_size=10 * 1024 * 1024)
    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/hooks/alertmanager", hook)
    app.router.add_get("/healthz", lambda request: _ok())
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["bolt", "insert"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--database-url")
    args = ap.parse_args()
    app = bolt_app() if args.kind == "bolt" else insert_app(args.database_url)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
