"""Alert grouping, storms and durability against `warroom serve` (a real subprocess on the embedded default)
and the Slack stand-in (the real slack_sdk inside serve; a per-channel token bucket answering 429 with
Retry-After, early retries recorded as violations).

Alertmanager re-sends a group's whole alert list every time the group changes: the payloads here do the same,
a group's alert set growing one alert per notification, some groups resolving at the end."""
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.served import Served
from tests.slack_standin import SlackStandIn

CHANNEL = "C0ALERTSTORM"
GROUPS = 20
NOTIFICATIONS = 25          # per group: 20 × 25 = 500 webhooks
RESOLVING = range(15, 20)   # these groups grow to 20 alerts, then resolve over their last 5 notifications
STARTS = "2026-11-25T00:{:02d}:{:02d}.000Z"


def _alert(group: int, i: int, status: str, name: str) -> dict:
    labels = {"alertname": name, "service": f"svc-{group % 5}", "env": "prod", "severity": "warning",
              "instance": f"host-{i:03d}"}
    return {"status": status, "labels": labels,
            "annotations": {"summary": f"{name} on host-{i:03d}", "description": "error budget burning"},
            "startsAt": STARTS.format(group, i), "endsAt": "0001-01-01T00:00:00Z" if status == "firing"
            else STARTS.format(group, i + 1).replace(":00.000Z", ":30.000Z"),
            "generatorURL": "http://prometheus.internal:9090/graph", "fingerprint": f"{group:04x}{i:012x}"}


def notification(group: int, firing: int, resolved: int = 0, *, name: str | None = None) -> bytes:
    """An Alertmanager v4 notification for `group`: its first `resolved` alerts resolved, the next ones up to
    `firing` alerts in all still firing (the shape of webhooks/alertmanager/zulip/alert.json)."""
    name = name or f"StormGroup{group:02d}"
    alerts = [_alert(group, i, "resolved" if i < resolved else "firing", name) for i in range(firing)]
    status = "resolved" if resolved >= firing else "firing"
    return json.dumps({
        "version": "4", "groupKey": f'{{}}:{{alertname="{name}"}}', "truncatedAlerts": 0, "status": status,
        "receiver": "warroom", "groupLabels": {"alertname": name},
        "commonLabels": {"alertname": name, "service": f"svc-{group % 5}", "env": "prod", "severity": "warning"},
        "commonAnnotations": {}, "externalURL": "http://alertmanager.internal:9093", "alerts": alerts}).encode()


def group_history(group: int) -> list[bytes]:
    """The group's notifications in the order Alertmanager sends them."""
    if group in RESOLVING:
        grow = NOTIFICATIONS - 5
        return [notification(group, k) for k in range(1, grow + 1)] + [
            notification(group, grow, resolved=4 * j) for j in range(1, 6)]
    return [notification(group, k) for k in range(1, NOTIFICATIONS + 1)]


def post_bursts(served: Served, histories: list[list[bytes]], per_burst: int) -> list[int]:
    """Each burst: the next `per_burst` notifications of every group, all POSTed at once (a group's own
    notifications may overtake each other, as concurrent deliveries do). Returns every status."""
    statuses = []
    longest = max(len(h) for h in histories)
    with ThreadPoolExecutor(max_workers=64) as pool:
        for start in range(0, longest, per_burst):
            bodies = [body for h in histories for body in h[start:start + per_burst]]
            statuses += list(pool.map(lambda b: served.post("/hooks/alertmanager", b)[0], bodies))
    return statuses


def text(message: dict) -> str:
    return json.dumps(message.get("blocks") or message.get("text") or "", ensure_ascii=False)


def parents(standin: SlackStandIn) -> list[dict]:
    return [m for m in standin.messages(CHANNEL) if not m.get("thread_ts")]


def replies(standin: SlackStandIn, parent: dict) -> list[dict]:
    return [m for m in standin.messages(CHANNEL) if m.get("thread_ts") == parent["ts"]]


def settled(served: Served) -> bool:
    """Every alert annotated and every message delivered (nothing pending, nothing parked)."""
    return served.query("SELECT count(*) FROM alerts WHERE annotated_at IS NULL") == [(0,)] and \
        served.query("SELECT count(*) FROM outbox WHERE status <> 'sent'") == [(0,)]


def serve(root: Path, standin: SlackStandIn, config: str, **env: str) -> Served:
    (root / "warroom.yml").write_text(config)
    return Served(root / "data", WARROOM_CONFIG=str(root / "warroom.yml"), SLACK_BOT_TOKEN=standin.bot_token,
                  SLACK_SIGNING_SECRET="storm-test-secret", SLACK_API_URL=standin.url, **env)


# --- 1. the acceptance test: 500 notifications, 20 groups, a Slack that pushes back ------------------------


@pytest.fixture(scope="module")
def storm(tmp_path_factory):
    """One `warroom serve`; its stand-in allows a little under one message a second per channel (ours paces
    at one), so 429s happen and must be honoured. The storm threshold is above 20 groups: each gets a parent."""
    root = tmp_path_factory.mktemp("alert-storm")
    standin = SlackStandIn(rate_per_s=0.8, burst=2, retry_after=1).start()
    served = serve(root, standin, f"slack:\n  alert_channel: {CHANNEL}\nalerts:\n  storm_new_groups_per_minute: 50\n")
    yield served, standin
    served.stop()
    standin.stop()


def test_500_notifications_for_20_groups_give_one_parent_and_one_annotation_per_group(storm):
    served, standin = storm
    histories = [group_history(g) for g in range(GROUPS)]
    assert sum(len(h) for h in histories) == 500
    statuses = post_bursts(served, histories, per_burst=5)
    assert statuses == [202] * 500  # every webhook accepted

    def final_cards_shown() -> bool:
        shown = {name: text(p) for p in parents(standin) for name in [_group_name(p)] if name}
        return settled(served) and len(shown) == GROUPS and all(
            _final_state(g) in shown.get(f"StormGroup{g:02d}", "") for g in range(GROUPS))

    standin.wait_for(final_cards_shown, timeout=240)
    posts = [c for c in standin.calls_to("chat.postMessage") if c.ok]
    top = [c for c in posts if not c.params.get("thread_ts")]
    assert sorted(_group_name({"blocks": c.params.get("blocks"), "text": c.params.get("text")}) for c in top) \
        == [f"StormGroup{g:02d}" for g in range(GROUPS)]  # exactly one parent message per group
    for parent in parents(standin):
        assert len(replies(standin, parent)) == 1, _group_name(parent)  # one annotation in each thread
        assert "warroom on" in text(replies(standin, parent)[0])
    # redrawn in place and coalesced: far fewer updates than changes (how many depends on how far the annotator
    # lags the bursts; in-place updates of a parent are proven in the next test)
    assert len([c for c in standin.calls_to("chat.update") if c.ok]) < 100
    # nothing lost: every alert state is stored, in one group per alert name, and resolved groups are closed
    assert served.query("SELECT count(*) FROM alerts") == [(15 * 25 + 5 * 40,)]
    assert served.query("SELECT count(DISTINCT group_id), count(*) FILTER (WHERE group_id IS NULL) FROM alerts") \
        == [(GROUPS, 0)]
    assert served.query("SELECT count(*) FROM alert_groups WHERE status = 'resolved' AND closed_at IS NOT NULL") \
        == [(len(RESOLVING),)]
    assert served.query("SELECT count(*) FROM alert_groups WHERE investigated_at IS NOT NULL") == [(GROUPS,)]
    # every 429 honoured: there were some, no call came before its Retry-After, nothing broke Block Kit
    assert standin.rate_limited, "the stand-in is a little stricter than our pacing: 429s were expected"
    assert standin.early_retries == []
    assert standin.violations == []


def _group_name(message: dict) -> str | None:
    body = text(message)
    found = [f"StormGroup{g:02d}" for g in range(GROUPS) if f"StormGroup{g:02d}" in body]
    return found[0] if len(found) == 1 else None


def _final_state(group: int) -> str:
    return "0 firing · 20 resolved" if group in RESOLVING else f"{NOTIFICATIONS} firing · 0 resolved"


def test_a_retried_notification_creates_nothing_new(storm):
    served, standin = storm
    body = notification(35, 3, name="RetriedDelivery")
    assert served.post("/hooks/alertmanager", body)[0] == 202
    standin.wait_for(lambda: settled(served) and any("RetriedDelivery" in text(p) for p in parents(standin)),
                     timeout=120)
    before = [served.query(f"SELECT count(*) FROM {table}") for table in ("alerts", "alert_groups", "outbox")]
    status, answer = served.post("/hooks/alertmanager", body)  # Alertmanager retrying the same delivery
    assert status == 202 and len(json.loads(answer)["alert_ids"]) == 3
    assert settled(served)
    assert [served.query(f"SELECT count(*) FROM {table}") for table in ("alerts", "alert_groups", "outbox")] \
        == before
    assert served.query("SELECT max(notifications) FROM alerts WHERE name = 'RetriedDelivery'") == [(2,)]
    # a new alert joining the group redraws its one parent in place
    [parent] = [p for p in parents(standin) if "RetriedDelivery" in text(p)]
    assert served.post("/hooks/alertmanager", notification(35, 4, name="RetriedDelivery"))[0] == 202
    standin.wait_for(lambda: settled(served) and "4 firing · 0 resolved" in text(
        [p for p in parents(standin) if p["ts"] == parent["ts"]][0]), timeout=120)
    assert len([p for p in parents(standin) if "RetriedDelivery" in text(p)]) == 1
    assert any(c.ok and c.params.get("ts") == parent["ts"] for c in standin.calls_to("chat.update"))
    assert len(replies(standin, parent)) == 1


# --- 2. storm mode ---------------------------------------------------------------------------------------


def test_past_the_threshold_new_groups_go_into_one_storm_summary_with_bounded_investigations(tmp_path):
    standin = SlackStandIn().start()
    served = serve(tmp_path, standin, f"slack:\n  alert_channel: {CHANNEL}\nalerts:\n"
                                      "  storm_new_groups_per_minute: 3\n  storm_investigations: 2\n")
    try:
        names = [f"Flood{g:02d}" for g in range(10)]
        assert post_bursts(served, [[notification(40 + g, 2, name=n)] for g, n in enumerate(names)], 1) \
            == [202] * 10
        standin.wait_for(lambda: settled(served) and len(parents(standin)) == 4, timeout=120)
        storms = [p for p in parents(standin) if "[STORM]" in text(p)]
        assert len(storms) == 1  # one summary for the storm
        own = [p for p in parents(standin) if "[STORM]" not in text(p)]
        assert len(own) == 3  # parents only up to the threshold
        listed = [n for n in names if n in text(storms[0])]
        assert len(listed) == 7 and not any(n in text(p) for p in own for n in listed)
        # the storm's investigations stay within its budget, and the summary says which groups had one
        assert len(replies(standin, storms[0])) == 2
        assert text(storms[0]).count("investigated in this thread") == 2
        assert text(storms[0]).count("not investigated (storm budget)") == 5
        assert served.query("SELECT count(*) FROM alert_groups WHERE investigated_at IS NOT NULL") == [(5,)]
        # more alerts for the storm's groups: the summary is redrawn in place, never posted again
        assert post_bursts(served, [[notification(40 + names.index(n), 4, name=n)] for n in listed], 1) \
            == [202] * 7
        standin.wait_for(lambda: settled(served) and "7 alert groups" in text(
            [p for p in parents(standin) if "[STORM]" in text(p)][0]) and "4/4 firing" in text(
            [p for p in parents(standin) if "[STORM]" in text(p)][0]), timeout=120)
        assert len([c for c in standin.calls_to("chat.postMessage")
                    if c.ok and "[STORM]" in json.dumps(c.params.get("blocks"), ensure_ascii=False)]) == 1
        assert any(c.ok and c.params.get("ts") == storms[0]["ts"] for c in standin.calls_to("chat.update"))
        assert len(replies(standin, storms[0])) == 2  # no new investigation for groups already listed
        assert standin.early_retries == [] and standin.violations == []
    finally:
        served.stop()
        standin.stop()


# --- 3. durability: kill -9 after the webhooks were accepted, before the annotations went out -------------


def _processes_of(data_dir: Path) -> list[int]:
    """Every process started for this data directory (serve, its worker, embedded Postgres and Redis: the
    daemons are re-parented to init, so the process tree does not find them; they inherit the env, or — Redis,
    started with a clean env — run from inside the directory)."""
    marker = f"WARROOM_DATA_DIR={data_dir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if (marker in (proc / "environ").read_bytes().split(b"\0")
                        or (proc / "cwd").resolve().is_relative_to(data_dir.resolve())):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_alerts_accepted_before_a_crash_are_annotated_exactly_once_after_a_restart(tmp_path):
    standin = SlackStandIn().start()
    # 12 groups in a minute is past the default storm threshold (10): raise it, this test is about the crash.
    config = f"slack:\n  alert_channel: {CHANNEL}\nalerts:\n  storm_new_groups_per_minute: 50\n"
    first = serve(tmp_path, standin, config)
    names = [f"Crash{g:02d}" for g in range(12)]
    standin.fail_next("chat.postMessage", status=503, count=100000)  # Slack down: nothing goes out yet
    second = None
    try:
        histories = [[notification(20 + g, k, name=n) for k in (1, 2, 3)] for g, n in enumerate(names)]
        assert post_bursts(served=first, histories=histories, per_burst=3) == [202] * 36
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=30)
        first._log.close()
        assert not settled(first)  # the crash came before the annotations went out
        assert first.query("SELECT count(*) FROM alerts") == [(36,)]  # but every accepted alert was stored
        with standin._lock:  # Slack is back
            standin._failures.clear()
        second = serve(tmp_path, standin, config)
        standin.wait_for(lambda: settled(second) and len(parents(standin)) == len(names), timeout=180)
        for parent in parents(standin):
            assert len(replies(standin, parent)) == 1  # annotated exactly once across the crash
            assert "3 firing · 0 resolved" in text(parent)
        assert sorted(n for p in parents(standin) for n in names if n in text(p)) == names
        assert standin.early_retries == [] and standin.violations == []
    finally:
        if second is not None:
            second.stop()
        if first._pg is not None:
            first._pg = None  # the second server owns the embedded Postgres now
        standin.stop()
        for pid in _processes_of(tmp_path / "data"):  # what the SIGKILL orphaned and no one stopped
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
