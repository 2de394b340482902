"""Scale-out as production runs it: two `warroom serve` replicas and two `warroom worker` processes against one
PostgreSQL and one Redis. Every request below is sent to both replicas, or alternately to each, the way a load
balancer spreads them; what must hold is that each thing still happens exactly once."""
import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import ROOT, TEMPLATE, RecordingTarget, runbook_yaml, warroom
from tests.http_helpers import texts_in
from tests.served import Served
from tests.slack_standin import SlackStandIn, app_mention_event, block_action, event, sign, slash_command

SECRET = "4b1c0ffee5ca1e0ut5ecret0f7e5t5aa"
ALERTS = "C0SCALEALERTS"
USERS = {"U0ALICE": {"name": "alice", "email": "alice@example.com"},
         "U0BOB": {"name": "bob", "email": "bob@example.com"}}
CONFIG = f"""
slack:
  alert_channel: {ALERTS}
policy:
  approvers: [U0BOB]
  auto_run_read_only: true
"""


class Cluster:
    def __init__(self, database_url: str, replicas: list[Served], standin: SlackStandIn, target: RecordingTarget):
        self.database_url = database_url
        self.replicas = replicas
        self.standin = standin
        self.target = target

    def query(self, sql: str, params=()) -> list[dict]:
        with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
            return conn.execute(sql, params).fetchall()

    def post_slack(self, replica: int, body: bytes, content_type: str, headers: dict | None = None):
        status, answer = self.replicas[replica].request(
            "POST", "/slack/events", body, {"Content-Type": content_type, **sign(SECRET, body), **(headers or {})})
        assert status == 200, answer
        return answer

    def on_both_at_once(self, body: bytes, content_type: str, headers: list[dict | None]):
        """The same request to both replicas together, as a double delivery spread by a load balancer."""
        start = threading.Barrier(2)

        def send(replica: int):
            start.wait()
            return self.post_slack(replica, body, content_type, headers[replica])

        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(send, (0, 1)))

    def bot_messages(self, channel: str, predicate=lambda m: True) -> list[dict]:
        return [m for m in self.standin.messages(channel) if m.get("bot_id") and predicate(m)]

    def wait_for_message(self, channel: str, predicate, timeout: float = 90) -> dict:
        self.standin.wait_for(lambda: bool(self.bot_messages(channel, predicate)), timeout=timeout)
        return self.bot_messages(channel, predicate)[0]


def _text_of(message: dict) -> str:
    return "\n".join([message.get("text") or "", *texts_in(message.get("blocks") or [])])


def _approve_button(message: dict) -> tuple[str, str]:
    for block in message.get("blocks") or []:
        for element in block.get("elements") or [] if block.get("type") == "actions" else []:
            if element["action_id"].startswith("warroom_approve_"):
                return element["action_id"], element["value"]
    raise AssertionError(f"no Approve button on {_text_of(message)[:300]}")


@pytest.fixture(scope="module")
def cluster(pg_server, redis_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    name = f"scale_out_{os.getpid()}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    database_url = pg_server.get_uri(database=name)
    redis_server.flushall()
    redis_url = f"unix://{redis_server.socket_file}"
    shared = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "WARROOM_CONFIG": str(root / "warroom.yml")}
    (root / "warroom.yml").write_text(CONFIG)
    with RecordingTarget() as target, SlackStandIn(users=USERS) as standin:
        (root / "runbook.yaml").write_text(runbook_yaml(target.url("/health")))
        ingested = warroom("ingest", str(root / "runbook.yaml"), env=shared)
        assert ingested.returncode == 0, ingested.stderr
        workers = [_start_worker(root / f"worker-{i}.log", shared) for i in range(2)]
        replicas = []
        try:
            for i in range(2):
                replicas.append(Served(root / f"replica-{i}", **shared, SLACK_BOT_TOKEN=standin.bot_token,
                                       SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=standin.url))
            yield Cluster(database_url, replicas, standin, target)
        finally:
            for replica in replicas:
                replica.stop()
            for proc, log in workers:
                proc.send_signal(signal.SIGTERM)  # RQ's warm shutdown
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                log.close()


def _start_worker(log_path, env: dict):
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env={**os.environ, **env}, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def test_clicks_delivered_to_both_replicas_dispatch_each_step_once(cluster):
    channels = [f"C0SCALE{i}" for i in range(4)]
    for i, channel in enumerate(channels):  # the commands themselves spread over the replicas
        body, content_type = slash_command("diagnose payments-api is returning 500s", channel=channel,
                                           user="U0ALICE", user_name="alice",
                                           response_url=cluster.standin.response_url(f"{channel}-cmd"))
        cluster.post_slack(i % 2, body, content_type)
    steps = []
    for channel in channels:
        card = cluster.wait_for_message(channel, lambda m: "warroom on" in _text_of(m))
        action_id, step_id = _approve_button(card)
        body, content_type = block_action(action_id, step_id, channel=channel, message_ts=card["ts"],
                                          user="U0BOB", user_name="bob")
        # the click on one replica and Slack's retry of it on the other, at the same moment
        cluster.on_both_at_once(body, content_type,
                                [None, {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}])
        # and the same click again, fresh (a double click), on each replica together
        cluster.on_both_at_once(body, content_type, [None, None])
        steps.append(int(step_id))

    def all_done() -> bool:
        rows = cluster.query("SELECT status FROM plan_steps WHERE id = ANY(%s)", (steps,))
        return len(rows) == len(steps) and all(r["status"] == "succeeded" for r in rows)

    cluster.standin.wait_for(all_done, timeout=120)
    plans = [r["plan_id"] for r in cluster.query("SELECT plan_id FROM plan_steps WHERE id = ANY(%s)", (steps,))]
    every_step = cluster.query("SELECT id, status, attempts FROM plan_steps WHERE plan_id = ANY(%s)", (plans,))
    assert len(every_step) == 2 * len(channels)  # the read-only check and the restart, per plan
    cluster.standin.wait_for(lambda: all(r["status"] == "succeeded" for r in cluster.query(
        "SELECT status FROM plan_steps WHERE plan_id = ANY(%s)", (plans,))))
    assert {r["attempts"] for r in cluster.query(
        "SELECT attempts FROM plan_steps WHERE plan_id = ANY(%s)", (plans,))} == {1}
    # each step was started once, by one worker, whichever replica took the click
    started = cluster.query("SELECT subject, count(*) AS n FROM audit_log WHERE action = 'step.started' "
                            "AND subject = ANY(%s) GROUP BY subject", ([f"step:{r['id']}" for r in every_step],))
    assert sorted(r["n"] for r in started) == [1] * len(every_step)
    approvals = cluster.query("SELECT count(*) AS n FROM approvals WHERE step_id = ANY(%s) GROUP BY step_id",
                              (steps,))
    assert sorted(r["n"] for r in approvals) == [1] * len(steps)
    # and the target saw exactly one restart per plan and one health check per plan
    paths = cluster.target.paths()
    assert paths.count("/health?restart=1") == len(channels)
    assert paths.count("/health") == len(channels)


def test_a_slack_retry_landing_on_the_other_replica_is_answered_once(cluster):
    channel = "C0SCALERETRY"
    text = "<@U0WARROOM> why is payments-api returning 500s?"
    said = cluster.standin.add_message(channel, text=text, user="U0ALICE")
    body, content_type = event(app_mention_event(channel, text, user="U0ALICE", ts=said["ts"]),
                               event_id="Ev0SCALERETRY")
    cluster.post_slack(0, body, content_type)
    cluster.post_slack(1, body, content_type, {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    cluster.post_slack(1, body, content_type, {"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"})
    cluster.wait_for_message(channel, lambda m: "warroom on" in _text_of(m))
    _settle(cluster)
    answers = cluster.bot_messages(channel, lambda m: "warroom on" in _text_of(m))
    assert len(answers) == 1 and answers[0]["thread_ts"] == said["ts"]
    assert cluster.query("SELECT count(*) AS n FROM plans WHERE channel = %s", (channel,)) == [{"n": 1}]


def test_alerts_spread_over_replicas_are_stored_grouped_and_announced_once(cluster):
    sample = json.loads((ROOT / "examples/alerts/payments-high-error-rate-firing.json").read_text())
    notifications = []
    for i in range(5):  # five distinct groups (below the storm threshold), one parent and annotation each
        n = copy.deepcopy(sample)
        n["groupKey"] = f'{{}}:{{alertname="ScaleOutAlert{i}"}}'
        for alert in n["alerts"]:
            alert["labels"]["alertname"] = f"ScaleOutAlert{i}"
            alert["fingerprint"] = f"5ca1e0u7{i:08x}"
        notifications.append(json.dumps(n).encode())

    def deliver(args):
        replica, body = args
        return cluster.replicas[replica].post("/hooks/alertmanager", body)[0]

    # Alertmanager in HA sends every notification from each of its instances: here to each replica, together.
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(deliver, [(r, body) for body in notifications for r in (0, 1)]))
    assert codes == [202] * 10
    assert cluster.query("SELECT count(*) AS n FROM alerts WHERE name LIKE 'ScaleOutAlert%%'") \
        == [{"n": 5}]

    def parents() -> list[dict]:
        return cluster.bot_messages(ALERTS, lambda m: "ScaleOutAlert" in _text_of(m) and m.get("thread_ts") is None)

    cluster.standin.wait_for(lambda: len(parents()) >= 5, timeout=120)
    for parent in parents():  # each parent gets its annotation in its thread
        cluster.standin.wait_for(lambda: bool(cluster.standin.thread(ALERTS, parent["ts"])[1:]), timeout=120)
    _settle(cluster)
    assert len(parents()) == 5
    for parent in parents():
        replies = [m for m in cluster.standin.thread(ALERTS, parent["ts"])[1:] if m.get("bot_id")]
        annotations = [m for m in replies if "warroom on" in _text_of(m)]
        assert len(annotations) == 1, [_text_of(m)[:120] for m in replies]


def test_the_outbox_was_drained_exactly_once_by_the_two_dispatchers(cluster):
    """Runs last: everything the earlier tests made the bot say went out once, whichever replica sent it."""
    _settle(cluster)
    rows = cluster.query("SELECT op, status, count(*) AS n FROM outbox WHERE platform = 'slack' GROUP BY op, status")
    by = {(r["op"], r["status"]): r["n"] for r in rows}
    assert by.get(("post", "pending"), 0) == by.get(("update", "pending"), 0) == 0
    assert by.get(("post", "dead"), 0) == by.get(("update", "dead"), 0) == 0
    delivered = {method: sum(1 for c in cluster.standin.calls_to(method) if c.ok)
                 for method in ("chat.postMessage", "chat.update", "chat.postEphemeral")}
    assert delivered["chat.postMessage"] == by.get(("post", "sent"), 0) > 0
    assert delivered["chat.update"] == by.get(("update", "sent"), 0) > 0
    assert delivered["chat.postEphemeral"] == by.get(("ephemeral", "sent"), 0)
    assert cluster.standin.violations == []


def _settle(cluster: Cluster, timeout: float = 120) -> None:
    """Wait until nothing is left to send and no step is in flight, then a little longer for stragglers."""
    def quiet() -> bool:
        pending = cluster.query("SELECT count(*) AS n FROM outbox WHERE status = 'pending'")[0]["n"]
        busy = cluster.query("SELECT count(*) AS n FROM plan_steps WHERE status IN ('queued', 'running')")[0]["n"]
        unannotated = cluster.query("SELECT count(*) AS n FROM alerts WHERE annotated_at IS NULL")[0]["n"]
        return pending == busy == unannotated == 0

    cluster.standin.wait_for(quiet, timeout=timeout)
    time.sleep(3)  # a duplicate would be sent within a dispatcher poll or two of the original
    cluster.standin.wait_for(quiet, timeout=timeout)

