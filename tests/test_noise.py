"""Noise: an alert that flaps and goes away by itself, or that people called noise, gets a short note in its
thread instead of an investigation, with Silence and Investigate-anyway buttons; silences hold new firings
back from the channel. On real storage, through the real annotator and handlers."""
import json
from datetime import datetime, timedelta, timezone

import pytest

from engine.config import NoiseConfig, WarroomConfig
from engine.models import Actor, Alert
from engine.noise import NoiseFacts, score
from handlers.alert import annotate_pending, receive
from handlers.noise import alert_action
from storage import incidents as incident_store
from tests.conftest import make_services

CHANNEL = "C0NOISE"
BOB = Actor(id="U0BOB", platform="slack", name="bob", email="bob@example.com")       # an approver
ALICE = Actor(id="U0ALICE", platform="slack", name="alice", email="alice@example.com")
T0 = datetime.now(timezone.utc)


# --- the score ------------------------------------------------------------------------------------------------

def test_flapping_that_goes_away_by_itself_is_noise_but_flapping_people_handle_is_not():
    cfg = NoiseConfig()
    flappy = score(NoiseFacts(firings=5, past_episodes=4, quick_untouched=4, durations_s=[60, 90, 120, 75]), cfg)
    assert flappy.noisy and flappy.score == 1.0
    assert "fired 5 times in the last 24 h" in flappy.reasons[0]
    assert flappy.tuning and "`for: 3m`" in flappy.tuning  # longest episode 120 s: wait a little longer
    handled = score(NoiseFacts(firings=5, past_episodes=4, quick_untouched=0, durations_s=[60] * 4), cfg)
    assert not handled.noisy and handled.score == 0.5 and handled.tuning is None
    first = score(NoiseFacts(firings=1, past_episodes=0, quick_untouched=0), cfg)
    assert first.score == 0 and not first.noisy and first.reasons == []


def test_people_have_the_last_word():
    cfg = NoiseConfig()
    marked = score(NoiseFacts(firings=1, past_episodes=0, quick_untouched=0, mark="noise", marked_by="bob"), cfg)
    assert marked.noisy and "marked as noise by bob" in marked.reasons[-1]
    vouched = score(NoiseFacts(firings=9, past_episodes=8, quick_untouched=8, mark="signal", marked_by="bob"), cfg)
    assert not vouched.noisy and vouched.score < cfg.threshold


# --- through the annotator ------------------------------------------------------------------------------------

@pytest.fixture
def noisy(pool, embedder, redis_url):
    config = WarroomConfig.model_validate({"slack": {"alert_channel": CHANNEL},
                                           "policy": {"approvers": ["U0BOB"], "auto_run_read_only": False}})
    return make_services(pool, embedder, config, redis_url)


def _alert(fingerprint: str, status: str, started_min_ago: float, lasted_min: float | None = None,
           name: str = "DiskLatencyHigh", severity: str = "warning") -> Alert:
    starts = T0 - timedelta(minutes=started_min_ago)
    return Alert(source="alertmanager", fingerprint=fingerprint, status=status, name=name, severity=severity,
                 service="payments-api", environment="prod", summary=f"{name} on payments-api",
                 starts_at=starts, ends_at=starts + timedelta(minutes=lasted_min) if lasted_min is not None else None)


def _fire(services, alert: Alert) -> int:
    [alert_id] = receive(services, [alert])
    annotate_pending(services)
    return alert_id


def _episode(services, fingerprint: str, started_min_ago: float, lasted_min: float, **kw) -> int:
    """One firing and its resolution, each annotated as they come; returns the firing's alert id."""
    alert_id = _fire(services, _alert(fingerprint, "firing", started_min_ago, **kw))
    _fire(services, _alert(fingerprint, "resolved", started_min_ago, lasted_min, **kw))
    return alert_id


def _group_of(pool, alert_id: int) -> dict:
    with pool.connection() as conn:
        return conn.execute("SELECT g.* FROM alert_groups g JOIN alerts a ON a.group_id = g.id WHERE a.id = %s",
                            (alert_id,)).fetchone()


def _thread(pool, group: dict) -> list[dict]:
    with pool.connection() as conn:
        return conn.execute("SELECT message_key, card FROM outbox WHERE thread_key = %s ORDER BY id",
                            (f"alert:{group['first_alert_id']}",)).fetchall()


def _card_text(card: dict) -> str:
    return json.dumps(card)


def test_a_flapping_alert_gets_a_noise_note_instead_of_an_investigation(noisy, pool):
    first = _episode(noisy, "fp-flap", 50, 2)
    second = _episode(noisy, "fp-flap", 40, 1.5)
    third = _fire(noisy, _alert("fp-flap", "firing", 30))
    for investigated in (first, second):  # the record was too short to call it noise: investigated
        keys = [r["message_key"] or "" for r in _thread(pool, _group_of(pool, investigated))]
        assert any(k.startswith(("plan:", "annotation:")) for k in keys), keys
    group = _group_of(pool, third)
    thread = _thread(pool, group)
    assert [r["message_key"] for r in thread] == [f"noise:group:{group['id']}"]
    note = _card_text(thread[0]["card"])
    assert "Probably noise: DiskLatencyHigh" in note and "fired 3 times in the last 24 h" in note
    assert "2 of 2 earlier firing(s) resolved on their own within 10 min" in note
    assert "`for: 3m`" in note                                   # the tuning suggestion, from the 2-minute episode
    assert '"actions": ["silence", "investigate"]' in note
    assert group["noise_score"] == pytest.approx(0.75) and group["investigated_at"] is not None
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM plans WHERE alert_id = %s", (third,)).fetchone()["n"] == 0
        audited = conn.execute("SELECT detail FROM audit_log WHERE action = 'alert.noise' AND subject = %s",
                               (f"alert:{third}",)).fetchone()
    assert audited["detail"]["score"] == pytest.approx(0.75)

    # "Investigate anyway": the investigation it stood in for, once however many clicks, and a verdict remembered
    said = alert_action(noisy, action="investigate", group_id=group["id"], actor=ALICE)
    assert "answer is in the thread" in said
    again = alert_action(noisy, action="investigate", group_id=group["id"], actor=BOB)
    assert "already being investigated" in again
    keys = [r["message_key"] or "" for r in _thread(pool, group)]
    assert sum(1 for k in keys if k.startswith(("plan:", "annotation:"))) == 1
    # the team vouched for it: its next firing is investigated, flapping or not
    _fire(noisy, _alert("fp-flap", "resolved", 30, 1))
    fourth = _fire(noisy, _alert("fp-flap", "firing", 20))
    keys = [r["message_key"] or "" for r in _thread(pool, _group_of(pool, fourth))]
    assert any(k.startswith(("plan:", "annotation:")) for k in keys) and not any(k.startswith("noise:") for k in keys)


def test_flapping_that_people_act_on_is_not_noise(noisy, pool):
    for started in (50, 40):
        alert_id = _fire(noisy, _alert("fp-handled", "firing", started, severity="critical"))
        with pool.connection() as conn, conn.transaction():  # someone acknowledged each incident it opened
            incident = conn.execute("SELECT id FROM incidents WHERE alert_id = %s", (alert_id,)).fetchone()
            assert incident_store.advance(conn, incident["id"], from_=["DETECTED"], to="ACKNOWLEDGED",
                                          actor="bob@example.com") is not None
        _fire(noisy, _alert("fp-handled", "resolved", started, 2, severity="critical"))
    third = _fire(noisy, _alert("fp-handled", "firing", 30, severity="critical"))
    keys = [r["message_key"] or "" for r in _thread(pool, _group_of(pool, third))]
    assert not any(k.startswith("noise:") for k in keys) and any(k.startswith(("plan:", "annotation:")) for k in keys)


def test_marked_noise_then_silenced_by_an_approver(noisy, pool):
    first = _fire(noisy, _alert("fp-mark", "firing", 60, name="QueueDepthHigh"))
    group = _group_of(pool, first)
    with pool.connection() as conn:
        parent = conn.execute("SELECT card FROM outbox WHERE message_key = %s AND op = 'post'",
                              (f"alert:{first}",)).fetchone()
    assert '"actions": ["noise"]' in _card_text(parent["card"])  # the parent offers "Mark as noise"
    said = alert_action(noisy, action="noise", group_id=group["id"], actor=ALICE)
    assert said.startswith("Recorded: QueueDepthHigh is noise")
    _fire(noisy, _alert("fp-mark", "resolved", 60, 30, name="QueueDepthHigh"))   # a long episode, handled or not
    second = _fire(noisy, _alert("fp-mark", "firing", 20, name="QueueDepthHigh"))
    noisy_group = _group_of(pool, second)
    note = _card_text(_thread(pool, noisy_group)[0]["card"])
    assert "Probably noise" in note and "marked as noise by alice@example.com" in note

    # silencing hides firings from the channel: approvers only
    refused = alert_action(noisy, action="silence", group_id=noisy_group["id"], actor=ALICE)
    assert "Only approvers" in refused
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM alert_silences").fetchone()["n"] == 0
    done = alert_action(noisy, action="silence", group_id=noisy_group["id"], actor=BOB)
    assert done == "Silenced QueueDepthHigh for 24 h."
    assert "already silenced" in alert_action(noisy, action="silence", group_id=noisy_group["id"], actor=BOB)
    told = [_card_text(r["card"]) for r in _thread(pool, noisy_group)]
    assert any("Silenced: QueueDepthHigh" in t and "bob@example.com silenced it for 24 h" in t for t in told)

    _fire(noisy, _alert("fp-mark", "resolved", 20, 5, name="QueueDepthHigh"))
    with pool.connection() as conn:
        before = conn.execute("SELECT count(*) AS n FROM outbox").fetchone()["n"]
    held = _fire(noisy, _alert("fp-mark", "firing", 5, name="QueueDepthHigh"))
    held_group = _group_of(pool, held)
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM outbox").fetchone()["n"] == before  # nothing posted
        stored = conn.execute("SELECT annotated_at FROM alerts WHERE id = %s", (held,)).fetchone()
        audited = conn.execute("SELECT actor, detail FROM audit_log WHERE action = 'alert.silenced' "
                               "AND subject = %s", (f"alert:{held}",)).fetchall()
    assert held_group["silenced"] and held_group["placement"] is None
    assert stored["annotated_at"] is not None and len(audited) == 1 and audited[0]["detail"]["by"] == "bob@example.com"
    assert annotate_pending(noisy) == 0  # claimed: nothing left pending, nothing posted later either


def test_unknown_groups_and_actions_change_nothing(noisy, pool):
    assert "no longer known" in alert_action(noisy, action="noise", group_id=424242, actor=BOB)
    assert alert_action(noisy, action="delete", group_id=1, actor=BOB) == "Unknown alert action 'delete'."
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM alert_verdicts").fetchone()["n"] == 0
