"""Load generator, run as its own process so its CPU does not share an event loop with what it measures:

    python -m bench.load REQUESTS.json OUT.json --base-url http://127.0.0.1:P --rate 100
    python -m bench.load REQUESTS.json OUT.json --base-url http://127.0.0.1:P --concurrency 8

REQUESTS.json is a list of {"path", "body" (text), "headers"}. With --rate the load is open-loop: request i is
sent at start + i/rate whether or not earlier ones were answered, so a slow server cannot slow the clock down
and hide its latency. With --concurrency it is closed-loop (that many in flight, as fast as answered): the most
the server can take. OUT.json gets, per request, the wall-clock send time, the latency in seconds (from the
scheduled send time, so time spent queued in this client counts against the server too) and the status."""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp

TIMEOUT_S = 30


async def _one(session: aiohttp.ClientSession, base: str, req: dict, scheduled: float) -> tuple[float, int]:
    try:
        async with session.post(base + req["path"], data=req["body"].encode(), headers=req["headers"]) as resp:
            await resp.read()
            return time.perf_counter() - scheduled, resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return time.perf_counter() - scheduled, 0


async def open_loop(base: str, requests: list[dict], rate: float) -> list[dict]:
    out: list[dict] = [{} for _ in requests]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        start = time.perf_counter() + 0.2
        wall_start = time.time() + 0.2
        tasks = []

        async def fire(i: int, req: dict) -> None:
            scheduled = start + i / rate
            latency, status = await _one(session, base, req, scheduled)
            out[i] = {"sent": wall_start + i / rate, "latency": latency, "status": status}

        for i, req in enumerate(requests):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire(i, req)))
        await asyncio.gather(*tasks)
    return out


async def closed_loop(base: str, requests: list[dict], concurrency: int) -> list[dict]:
    out: list[dict] = [{} for _ in requests]
    queue = list(enumerate(requests))[::-1]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        async def worker() -> None:
            while queue:
                i, req = queue.pop()
                sent, scheduled = time.time(), time.perf_counter()
                latency, status = await _one(session, base, req, scheduled)
                out[i] = {"sent": sent, "latency": latency, "status": status}

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("requests", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--base-url", required=True)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--concurrency", type=int, help="closed loop: requests in flight")
    args = ap.parse_args()
    requests = json.loads(args.requests.read_text())
    started = time.perf_counter()
    if args.rate:
        results = asyncio.run(open_loop(args.base_url, requests, args.rate))
    else:
        results = asyncio.run(closed_loop(args.base_url, requests, args.concurrency))
    args.out.write_text(json.dumps({"results": results, "elapsed": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
