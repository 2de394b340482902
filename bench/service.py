"""Service benchmarks of `warroom serve` (issue 9), each beside a baseline measured in the same run:

1. ack latency of signed slash commands and button clicks at fixed rates, open-loop, against a bare slack-bolt
   AsyncApp that only acks (bench/bare_apps.py, its own process);
2. webhook ingestion: alerts/s durably written and latency, against one INSERT+COMMIT per request into the same
   PostgreSQL (bench/bare_apps.py);
3. alert received -> first annotation posted in the alert's thread (offline LLM provider), beside the outbox
   path alone (`/warroom help` -> its ephemeral reaching Slack);
4. Approve click -> step started on the worker, beside a bare RQ enqueue -> job start (bench/rq_floor.py);
5. resident memory of serve idle and under load, beside the bare bolt app.

    .venv/bin/python -m bench.service --runs 3 --json /tmp/service.json      # the full measurement (~25 min)
    .venv/bin/python -m bench.service --quick                                # ~3 min, for development

See bench/README.md for what the numbers mean."""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from bench.common import ROOT, log, machine, median, percentile
from bench.serve_common import (ALERTS, APPROVER, SECRET, USERS, BareApp, Stack, dump, git_state, rss_mb, wait_idle)
from tests.http_helpers import texts_in
from tests.slack_standin import block_action, sign, slash_command

ZULIP_ALERT = ROOT.parent / "shared" / "corpora" / "webhooks" / "alertmanager" / "zulip" / "alert.json"
# What people type, in these proportions: the engine's work after each ack competes for the CPU.
COMMANDS = ["status", "help", "diagnose payments-api 500s", "status", "help", "diagnose payments-api 500s",
            "status", "help", "status", "diagnose payments-api is returning 500s"]
LOAD_CHANNELS = 100


# --------------------------------------------------------------------------- helpers

def text_of(message: dict) -> str:
    return "\n".join([message.get("text") or "", *texts_in(message.get("blocks") or [])])


def approve_button(message: dict) -> tuple[str, str] | None:
    for block in message.get("blocks") or []:
        for element in block.get("elements") or [] if block.get("type") == "actions" else []:
            if element.get("action_id", "").startswith("warroom_approve_"):
                return element["action_id"], element.get("value", "")
    return None


def stats(latencies_s: list[float]) -> dict:
    ms = [v * 1000 for v in latencies_s]
    return {"n": len(ms), "p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99),
            "max": max(ms) if ms else float("nan")}


def run_load(base_url: str, requests: list[dict], *, rate: float | None = None,
             concurrency: int | None = None) -> dict:
    """bench.load in its own process; returns its per-request results and elapsed time."""
    with tempfile.TemporaryDirectory(prefix="warroom-bench-load-") as tmp:
        req_path, out_path = Path(tmp) / "requests.json", Path(tmp) / "out.json"
        req_path.write_text(json.dumps(requests))
        mode = ["--rate", str(rate)] if rate else ["--concurrency", str(concurrency)]
        subprocess.run([sys.executable, "-m", "bench.load", str(req_path), str(out_path), "--base-url", base_url,
                        *mode], cwd=ROOT, check=True, timeout=600)
        return json.loads(out_path.read_text())


class RssSampler:
    """Peak VmRSS of a process (and of its tree) while a load runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.peak_tree = pid, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self.peak_tree = max(self.peak_tree, rss_mb(self.pid, children=True))
            self._stop.wait(0.25)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def make_cards(stack: Stack, channels: list[str], timeout: float = 120) -> list[dict]:
    """A plan card with an Approve button in each channel, asked for the way a person does."""
    for channel in channels:
        body, content_type = slash_command("diagnose payments-api is returning 500s", channel=channel,
                                           user="U0ALICE", user_name="alice",
                                           response_url=stack.standin.response_url(f"card-{channel}"))
        status, answer = stack.post_signed(body, content_type)
        if status != 200:
            raise RuntimeError(f"diagnose in {channel} answered {status}: {answer[:200]!r}")
    cards: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(cards) < len(channels):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(cards)} of {len(channels)} plan cards appeared within {timeout:g}s")
        for channel in channels:
            if channel not in cards:
                found = [m for m in stack.standin.messages(channel)
                         if m.get("bot_id") and "warroom on" in text_of(m) and approve_button(m)]
                if found:
                    cards[channel] = {**found[0], "channel": channel}
        time.sleep(0.1)
    return [cards[c] for c in channels]


# --------------------------------------------------------------------------- 1. ack latency

def ack_requests(stack: Stack, kind: str, n: int, cards: list[dict], tag: str) -> list[dict]:
    out = []
    users = list(USERS)
    for i in range(n):
        if kind == "command":
            channel = f"C0LOAD{i % LOAD_CHANNELS:03d}"
            user = users[i % len(users)]
            body, content_type = slash_command(COMMANDS[i % len(COMMANDS)], channel=channel, user=user,
                                               user_name=USERS[user]["name"],
                                               response_url=stack.standin.response_url(f"{tag}-{i}"))
        else:
            card = cards[i % len(cards)]
            user = users[(i // len(cards)) % len(users)]
            action_id, value = approve_button(card)
            body, content_type = block_action(action_id, value, channel=card["channel"], message_ts=card["ts"],
                                              user=user, user_name=USERS[user]["name"], message=card)
        out.append({"path": "/slack/events", "body": body.decode(),
                    "headers": {"Content-Type": content_type, **sign(SECRET, body)}})
    return out


def bench_ack(stack: Stack, bolt: BareApp, rates: list[int], seconds: float, run: int, cards: list[dict]) -> dict:
    arms = {"warroom": (stack.url, stack.pid), "bare_bolt": (bolt.url, bolt.pid)}
    out: dict = {}
    turn = run
    if run == 0:  # warm-up, not timed: first requests pay imports, connection set-up and caches
        for kind in ("command", "click"):
            for arm, (url, _pid) in arms.items():
                run_load(url, ack_requests(stack, kind, 40, cards, f"warm-{kind}-{arm}"), rate=20)
        wait_idle(stack.pid)
    for rate in rates:
        for kind in ("command", "click"):
            order = list(arms) if turn % 2 == 0 else list(arms)[::-1]
            turn += 1
            for arm in order:
                url, pid = arms[arm]
                requests = ack_requests(stack, kind, int(rate * seconds), cards, f"r{run}-{rate}-{kind}-{arm}")
                calls_before = len(stack.standin.calls)
                with RssSampler(pid) as rss:
                    result = run_load(url, requests, rate=rate)
                rows = result["results"]
                ok = [r["latency"] for r in rows if r["status"] == 200]
                waited = wait_idle(stack.pid)
                # what serve did after its acks (replies, cards, updates), so the work is seen to be real
                web_api_calls = len(stack.standin.calls) - calls_before
                res = {**stats(ok), "errors": len(rows) - len(ok), "rss_peak_mb": rss.peak,
                       "rss_peak_tree_mb": rss.peak_tree, "idle_wait_s": waited, "web_api_calls": web_api_calls}
                out[f"{kind}@{rate}/{arm}"] = res
                log(f"  ack {kind:7s} {rate:3d}/s {arm:9s} p50 {res['p50']:7.1f} ms  p99 {res['p99']:7.1f} ms  "
                    f"errors {res['errors']}  peak RSS {rss.peak:.0f} MiB  (then idle after {waited:.1f}s; "
                    f"{web_api_calls} Web API calls)")
    return out


# --------------------------------------------------------------------------- 3. alert -> annotation

def alert_payload(template: dict, tag: str, *, alertname: str, service: str | None, severity: str = "warning") -> bytes:
    """One Alertmanager v4 notification with one alert, distinct from every other (labels, fingerprint, groupKey)."""
    payload = json.loads(json.dumps(template))
    alert = payload["alerts"][0]
    labels = {"alertname": alertname, "host": f"node-{tag}", "instance": f"10.1.0.{hash(tag) % 250}:9100",
              "severity": severity}
    if service:
        labels["service"] = service
    alert["labels"] = labels
    alert["fingerprint"] = f"{abs(hash(('bench', tag))):016x}"[:16]
    alert["startsAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    alert["annotations"] = {"summary": f"{alertname} on node-{tag}", "description": f"bench alert {tag}"}
    payload.update(alerts=[alert], groupKey=f'{{}}:{{host="node-{tag}"}}', commonLabels=labels,
                   groupLabels={"host": f"node-{tag}"}, commonAnnotations=alert["annotations"])
    return json.dumps(payload).encode()


def _first_call(stack: Stack, since: float, predicate) -> float | None:
    for call in stack.standin.calls:
        if call.at >= since and call.ok and predicate(call):
            return call.at
    return None


def bench_annotation(stack: Stack, n: int, gap: float, run: int, template: dict, timeout: float = 60) -> dict:
    """Alerts one at a time, `gap` seconds apart, alternating with the floor (`help` -> its ephemeral)."""
    to_parent, to_annotation, floor = [], [], []
    seen = {m["ts"] for m in stack.standin.messages(ALERTS)}
    for i in range(n):
        tag = f"{run}-{i}-{time.time_ns() % 10**9}"
        body = alert_payload(template, tag, alertname="PaymentsHighErrorRate", service="payments-api")
        sent = time.monotonic()
        status, answer = stack.served.post("/hooks/alertmanager", body)
        if status != 202:
            raise RuntimeError(f"alert webhook answered {status}: {answer[:200]!r}")
        parent = None
        deadline = sent + timeout
        while time.monotonic() < deadline:
            parents = [m for m in stack.standin.messages(ALERTS) if m["ts"] not in seen and not m.get("thread_ts")]
            if parents:
                parent = parents[0]
                posted = _first_call(stack, sent, lambda c: c.method == "chat.postMessage"
                                     and c.params.get("channel") == ALERTS
                                     and c.params.get("thread_ts") == parent["ts"])
                if posted is not None:
                    break
            time.sleep(0.02)
        else:
            raise RuntimeError(f"alert {tag}: no annotation in its thread within {timeout:g}s")
        seen.add(parent["ts"])
        parent_at = _first_call(stack, sent, lambda c: c.method == "chat.postMessage"
                                and c.params.get("channel") == ALERTS and not c.params.get("thread_ts"))
        to_parent.append(parent_at - sent)
        to_annotation.append(posted - sent)

        # the floor: a command whose reply takes the same outbox to Slack, without reasoning. Sent at a random
        # moment: right after the annotation it would always find the dispatcher at the start of its 200 ms poll.
        time.sleep(random.uniform(0.5, 1.5))
        channel = f"C0FLOOR{run}{i:02d}"
        body, content_type = slash_command("help", channel=channel, user="U0ALICE", user_name="alice",
                                           response_url=stack.standin.response_url(f"floor-{tag}"))
        sent_floor = time.monotonic()
        stack.post_signed(body, content_type)
        while (at := _first_call(stack, sent_floor, lambda c: c.method == "chat.postEphemeral"
                                 and c.params.get("channel") == channel)) is None:
            if time.monotonic() > sent_floor + timeout:
                raise RuntimeError(f"no help reply in {channel} within {timeout:g}s")
            time.sleep(0.01)
        floor.append(at - sent_floor)
        log(f"  alert {i + 1}/{n}: parent {to_parent[-1] * 1000:.0f} ms, annotation {to_annotation[-1] * 1000:.0f} ms;"
            f" floor (help -> ephemeral) {floor[-1] * 1000:.0f} ms")
        time.sleep(max(0.0, sent + gap - time.monotonic()))
    return {"alert_to_annotation": stats(to_annotation), "alert_to_parent": stats(to_parent),
            "floor_help_to_ephemeral": stats(floor)}


# --------------------------------------------------------------------------- 4. approve -> step started

def bench_approve(stack: Stack, n: int, run: int, db_url: str, redis_url: str, timeout: float = 60) -> dict:
    from redis import Redis
    from rq import Queue

    from bench.rq_floor import QUEUE, started

    queue = Queue(QUEUE, connection=Redis.from_url(redis_url))
    approve, floor = [], []
    cards = make_cards(stack, [f"C0APPR{run}{i:02d}" for i in range(n)])
    wait_idle(stack.pid)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i, card in enumerate(cards):
            action_id, step_id = approve_button(card)
            body, content_type = block_action(action_id, step_id, channel=card["channel"], message_ts=card["ts"],
                                              user=APPROVER, user_name=USERS[APPROVER]["name"], message=card)
            headers = {"Content-Type": content_type, **sign(SECRET, body)}
            clicked = time.time()
            status, _ = stack.served.request("POST", "/slack/events", body, headers)
            if status != 200:
                raise RuntimeError(f"click answered {status}")
            deadline = time.monotonic() + timeout
            while True:
                row = conn.execute("SELECT started_at, queued_at FROM plan_steps WHERE id = %s",
                                   (int(step_id),)).fetchone()
                if row and row[0] is not None:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"step {step_id} did not start within {timeout:g}s")
                time.sleep(0.005)
            approve.append(row[0].timestamp() - clicked)

            enqueued = time.time()
            job = queue.enqueue(started)
            while (value := job.return_value(refresh=True)) is None:
                if time.time() > enqueued + timeout:
                    raise RuntimeError("the floor RQ job did not run")
                time.sleep(0.005)
            floor.append(value - enqueued)
            log(f"  approve {i + 1}/{n}: click -> step started {approve[-1] * 1000:.0f} ms "
                f"(queued after {(row[1].timestamp() - clicked) * 1000:.0f} ms); bare RQ enqueue -> start "
                f"{floor[-1] * 1000:.0f} ms")
            time.sleep(0.5)  # let the step finish and its card update go out before the next click
    return {"click_to_step_started": stats(approve), "floor_rq_enqueue_to_start": stats(floor)}


# --------------------------------------------------------------------------- 2. webhooks

def webhook_requests(template: dict, n: int, tag: str) -> list[dict]:
    return [{"path": "/hooks/alertmanager", "headers": {"Content-Type": "application/json"},
             "body": alert_payload(template, f"{tag}-{i}", alertname=f"BenchNodeHighCpu{i % 20}",
                                   service=None).decode()}
            for i in range(n)]


def bench_webhooks(stack: Stack, floor: BareApp, rates: list[int], seconds: float, concurrency: int,
                   saturate_n: int, run: int, db_url: str, template: dict) -> dict:
    arms = {"warroom": stack.url, "insert_floor": floor.url}
    out: dict = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        def stored(arm: str) -> int:
            table = "alerts" if arm == "warroom" else "bench_webhook_floor"
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

        if run == 0:  # warm-up, not timed
            for url in arms.values():
                run_load(url, webhook_requests(template, 40, f"warm-{time.time_ns()}"), rate=20)
            wait_idle(stack.pid)
        loads = [(f"open@{rate}", {"rate": rate}, int(rate * seconds)) for rate in rates]
        loads.append((f"closed@c{concurrency}", {"concurrency": concurrency}, saturate_n))
        for turn, (name, mode, n) in enumerate(loads):
            order = list(arms) if (turn + run) % 2 == 0 else list(arms)[::-1]
            for arm in order:
                before = stored(arm)
                requests = webhook_requests(template, n, f"{run}-{name}-{arm}-{time.time_ns()}")
                result = run_load(arms[arm], requests, **mode)
                rows = result["results"]
                ok = [r for r in rows if r["status"] == 202]
                written = stored(arm) - before
                span = max(r["sent"] + r["latency"] for r in rows) - min(r["sent"] for r in rows)
                res = {**stats([r["latency"] for r in ok]), "errors": len(rows) - len(ok), "written": written,
                       "alerts_per_s": written / span, "offered_per_s": mode.get("rate")}
                waited = wait_idle(stack.pid)
                res["idle_wait_s"] = waited
                out[f"{name}/{arm}"] = res
                log(f"  webhook {name:12s} {arm:12s} {res['alerts_per_s']:6.1f} alerts/s written ({written} of {n}), "
                    f"p50 {res['p50']:7.1f} ms  p99 {res['p99']:7.1f} ms  errors {res['errors']}  "
                    f"(then idle after {waited:.1f}s)")
    return out


# --------------------------------------------------------------------------- summary

def summarise(runs: list[dict]) -> dict:
    """Median across runs of every number measured."""
    def walk(items: list):
        first = items[0]
        if isinstance(first, dict):
            return {k: walk([it[k] for it in items if k in it]) for k in first}
        if isinstance(first, (int, float)) and first is not None:
            return median([float(v) for v in items if v is not None])
        return first
    return walk(runs)


def rounded(value):
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return round(value, 1) if isinstance(value, float) else value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs; every arm takes its turn in each")
    ap.add_argument("--rates", type=int, nargs="+", default=[50, 100, 200], help="ack load rates (requests/s)")
    ap.add_argument("--seconds", type=float, default=6.0, help="seconds of load per rate and arm")
    ap.add_argument("--alerts", type=int, default=8, help="alerts per run for alert -> annotation")
    ap.add_argument("--alert-gap", type=float, default=7.0,
                    help="seconds between those alerts: under the storm threshold (10 new groups a minute) and "
                         "the Slack pacing of the alert channel (1 message/s, burst 3; each alert posts 2)")
    ap.add_argument("--approvals", type=int, default=8, help="Approve clicks per run")
    ap.add_argument("--webhook-rates", type=int, nargs="+", default=[50, 100], help="open-loop webhook rates")
    ap.add_argument("--concurrency", type=int, default=8, help="closed-loop webhook requests in flight")
    ap.add_argument("--saturate", type=int, default=600, help="webhook requests in the closed-loop pass")
    ap.add_argument("--sections", nargs="+", default=["annotation", "approve", "ack", "webhooks"],
                    choices=["annotation", "approve", "ack", "webhooks"])
    ap.add_argument("--json", type=Path, help="write all results as JSON here")
    ap.add_argument("--quick", action="store_true", help="1 run, 2 s per rate, 3 alerts, 3 approvals (~3 min)")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.seconds, args.alerts, args.approvals, args.saturate = 1, 2.0, 3, 3, 200
    template = json.loads(ZULIP_ALERT.read_text())
    results: dict = {"machine": machine(), "git": git_state(), "args": {k: str(v) for k, v in vars(args).items()},
                     "loadavg_before": Path("/proc/loadavg").read_text().strip(), "runs": []}
    log(f"load average before: {results['loadavg_before']}")
    runs: list[dict] = [{} for _ in range(args.runs)]

    if {"annotation", "approve", "ack"} & set(args.sections):
        with Stack() as stack:
            env = stack.worker_env()
            bolt = BareApp("bolt", {"SLACK_SIGNING_SECRET": SECRET, "BARE_BOLT_TOKEN": stack.standin.bot_token,
                                    "SLACK_API_URL": stack.standin.url})
            try:
                rq_floor = subprocess.Popen([sys.executable, "-m", "bench.rq_floor", env["REDIS_URL"]], cwd=ROOT)
            except BaseException:
                bolt.stop()
                raise
            try:
                wait_idle(stack.pid, timeout=120)
                results["rss_idle_mb"] = {"serve": rss_mb(stack.pid), "serve_tree": rss_mb(stack.pid, children=True),
                                          "bare_bolt": rss_mb(bolt.pid)}
                log(f"idle RSS: {json.dumps({k: round(v) for k, v in results['rss_idle_mb'].items()})}")
                cards = make_cards(stack, [f"C0CLICK{i:02d}" for i in range(20)]) if "ack" in args.sections else []
                for run in range(args.runs):
                    log(f"run {run + 1}/{args.runs}")
                    if "annotation" in args.sections:
                        runs[run]["annotation"] = bench_annotation(stack, args.alerts, args.alert_gap, run, template)
                    if "approve" in args.sections:
                        runs[run]["approve"] = bench_approve(stack, args.approvals, run, env["DATABASE_URL"],
                                                             env["REDIS_URL"])
                    if "ack" in args.sections:
                        runs[run]["ack"] = bench_ack(stack, bolt, args.rates, args.seconds, run, cards)
                results["rss_after_mb"] = {"serve": rss_mb(stack.pid), "serve_tree": rss_mb(stack.pid, children=True),
                                           "bare_bolt": rss_mb(bolt.pid)}
            finally:
                bolt.stop()
                rq_floor.terminate()
                rq_floor.wait(30)

    if "webhooks" in args.sections:
        with Stack() as stack:
            env = stack.worker_env()
            floor = BareApp("insert", None, "--database-url", env["DATABASE_URL"])
            try:
                wait_idle(stack.pid, timeout=120)
                for run in range(args.runs):
                    log(f"webhooks run {run + 1}/{args.runs}")
                    runs[run]["webhooks"] = bench_webhooks(stack, floor, args.webhook_rates, args.seconds,
                                                           args.concurrency, args.saturate, run, env["DATABASE_URL"],
                                                           template)
            finally:
                floor.stop()

    results["runs"] = runs
    results["summary"] = summarise(runs)
    results["loadavg_after"] = Path("/proc/loadavg").read_text().strip()
    log(f"load average after: {results['loadavg_after']}")
    log("summary (median of runs): " + json.dumps(rounded(results["summary"])))
    if args.json:
        dump(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
