"""Alert threads annotated by the bot: persist first, then annotate each new alert exactly once."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from engine.cards import alert_card, alert_group_card, noise_card, notice, storm_card
from engine.log_context import bind, log_context
from engine.models import Alert, Annotation
from engine.noise import NoiseScore
from engine.noise import score as noise_score
from engine.plans import store_annotation_plan
from handlers.annotate import annotate
from handlers.dispatch import auto_run
from handlers.services import Services
from storage import alerts as alert_store
from storage import audit
from storage import incidents as incident_store
from storage import noise as noise_store
from storage import outbox

log = logging.getLogger(__name__)

INCIDENT_SEVERITIES = {"critical", "page", "p1", "sev1"}  # a firing alert this severe opens an incident


def receive(services: Services, alerts: list[Alert]) -> list[int]:
    """Write a whole notification durably in one transaction (before the webhook answers 2xx), each new alert
    state in its group. A retried or repeated notification only bumps counters: nothing new to annotate."""
    window = services.config.alerts.group_window_minutes
    dumped = [alert.model_dump(mode="json") for alert in alerts]
    by_key: dict[str, list[int]] = {}
    for i, alert in enumerate(dumped):
        by_key.setdefault(alert_store.group_key_of(alert), []).append(i)
    ids: list[int] = [0] * len(alerts)
    with services.pool.connection() as conn, conn.transaction():
        for key in sorted(by_key):  # one lock order for every writer: no deadlock between webhooks
            group_id, created = alert_store.open_group(conn, key, window_minutes=window,
                                                       workspace=services.workspace)
            new = []
            for i in by_key[key]:
                ids[i], inserted = alert_store.insert_alert(conn, alert=dumped[i], workspace=services.workspace)
                if inserted:
                    new.append(ids[i])
            if new:
                alert_store.attach(conn, group_id, new)
            elif created:
                alert_store.drop_empty_group(conn, group_id)
    return ids


def receive_from_chat(services: Services, alerts: list[Alert], *, platform: str, channel: str,
                      message_id: str, permalink: str | None = None) -> list[int]:
    """Alerts another integration posted in a channel: stored with that message as their thread, so the
    annotation goes into *its* thread. A re-post of an alert already firing (Alertmanager's repeat_interval,
    a PagerDuty update) is counted, not annotated again. Returns the ids of new alert states."""
    new = []
    with services.pool.connection() as conn, conn.transaction():
        for alert in alerts:
            latest = alert_store.latest_for_fingerprint(conn, alert.fingerprint, workspace=services.workspace)
            if latest is not None and latest["status"] == alert.status:
                alert_store.bump_notifications(conn, latest["id"])
                continue
            alert_id, inserted = alert_store.insert_alert(conn, alert=alert.model_dump(mode="json"),
                                                          workspace=services.workspace)
            if not inserted:
                continue
            outbox.remember_message(conn, key=f"alert:{alert_id}", platform=platform, channel=channel,
                                    message_id=message_id, permalink=permalink)
            new.append(alert_id)
    return new


def destinations(services: Services) -> list[tuple[str, str]]:
    out = []
    if services.config.slack.alert_channel:
        out.append(("slack", services.config.slack.alert_channel))
    if services.config.teams.alert_conversation:
        out.append(("teams", services.config.teams.alert_conversation))
    return out


def annotate_pending(services: Services, *, limit: int = 50) -> int:
    """Publish what is not yet published: groups with new alerts (new ones, and any left over by a crash or
    a restart), and alerts other integrations posted. Returns how many groups/alerts were published."""
    with services.pool.connection() as conn:
        work = alert_store.pending_work(conn, limit=limit)
    done = 0
    for item in work:
        # Log lines of this piece of work name its (first new) alert: the correlation id while it is annotated.
        with log_context(correlation_id=f"alert-{item['first']}", alert_id=item["first"], group_id=item["group_id"]):
            log.info("publishing new alerts (group %s)", item["group_id"])
            try:
                if item["group_id"] is not None:
                    done += annotate_group(services, item["group_id"])
                else:
                    with services.pool.connection() as conn:
                        row = alert_store.get_alert(conn, item["alert_id"])
                    done += _annotate_single(services, row)
            except Exception:  # one bad group must not starve the others; it stays pending and is retried
                log.exception("annotating %s failed", item)
    return done


def annotate_alert(services: Services, row: dict[str, Any]) -> bool:
    """Publish the alert's group (or, for an alert another integration posted, the alert itself); False when
    there was nothing left to do (another process got there first)."""
    if row.get("group_id") is not None:
        return annotate_group(services, row["group_id"])
    return _annotate_single(services, row)


# --- groups ----------------------------------------------------------------------------------------------


def annotate_group(services: Services, group_id: int) -> bool:
    with log_context(group_id=group_id):  # ids bound while publishing it (its incident's) end with it
        return _annotate_group(services, group_id)


def _annotate_group(services: Services, group_id: int) -> bool:
    """Bring a group's chat presence up to date with its alerts, at-least-once made effectively-once: the
    alerts are claimed in the same transaction that queues the messages, so a crash before the commit leaves
    them pending (redone after a restart) and a second annotator finds nothing left to claim.

    First time: a parent card (or a storm-summary line) and the group's one investigation in its thread.
    Later: the card redrawn in place, coalesced with any update still queued. All resolved: closed."""
    if _held_by_silence(services, group_id):
        return True
    group = _place(services, group_id)
    lead_row = noise = None
    if _wants_investigation(group):
        with services.pool.connection() as conn:
            lead_row = alert_store.first_firing(conn, group_id)
            noise = _noise(services, conn, lead_row) if lead_row else None
    # The expensive part (retrieval, LLM) runs outside any transaction; its result is used only if the group
    # still has not been investigated when we commit. A noisy alert gets a short note instead.
    investigation = annotate(services, alert=Alert.model_validate(lead_row["payload"]),
                             alert_id=lead_row["id"]) if lead_row and not (noise and noise.noisy) else None
    queued: list[int] = []
    with services.pool.connection() as conn, conn.transaction():
        group = conn.execute("SELECT * FROM alert_groups WHERE id = %s FOR UPDATE", (group_id,)).fetchone()
        if not alert_store.claim_group_alerts(conn, group_id):
            return False
        states = alert_store.group_states(conn, group_id)
        alerts = [Alert.model_validate(r["payload"]) for r in states]
        firing = [r for r in states if r["status"] == "firing"]
        if group["placement"] is not None:
            _show_group(services, conn, group, alerts)
        if investigation and lead_row and group["investigated_at"] is None:
            queued = _post_investigation(services, conn, group, lead_row, *investigation)
        elif noise and noise.noisy and lead_row and group["investigated_at"] is None:
            _post_noise(services, conn, group, lead_row, noise)
        if firing and group["incident_id"] is None and group["channel"]:
            _open_group_incident(services, conn, group, firing[0])
        if not firing:  # every alert of the group resolved: marked on the card, and later alerts start anew
            alert_store.update_group(conn, group_id, status="resolved", resolved_at=datetime.now(timezone.utc),
                                     closed_at=datetime.now(timezone.utc))
        if group["annotated_at"] is None:
            alert_store.update_group(conn, group_id, annotated_at=datetime.now(timezone.utc))
    for step_id in queued:
        services.dispatch(step_id)
    return True


def _place(services: Services, group_id: int) -> dict[str, Any]:
    """Decide once where the group is shown. A group that fired and resolved before the annotator got to it
    (a backlog, a restart) is still shown, as resolved, and investigated."""
    cfg = services.config.alerts
    targets = destinations(services)
    with services.pool.connection() as conn, conn.transaction():
        group = conn.execute("SELECT * FROM alert_groups WHERE id = %s FOR UPDATE", (group_id,)).fetchone()
        if group["placement"] is not None:
            return group
        if alert_store.first_firing(conn, group_id) is None:
            return group  # only resolutions (of alerts we never saw firing): nothing to show
        if not targets:  # no chat configured: nothing to show, but the investigation (plan) is still made
            alert_store.update_group(conn, group_id, placement="parent", investigate=True,
                                     placed_at=datetime.now(timezone.utc))
            return {**group, "placement": "parent", "investigate": True}
        platform, channel = targets[0]
        return alert_store.place_group(conn, group_id, platform=platform, channel=channel,
                                       threshold=cfg.storm_new_groups_per_minute, budget=cfg.storm_investigations,
                                       window_minutes=cfg.group_window_minutes, workspace=services.workspace)


def _held_by_silence(services: Services, group_id: int) -> bool:
    """A new group whose alert is silenced is stored and claimed but never shown (decided before it is placed,
    once, and audited); a group already shown when the silence began is kept up to date as before."""
    now = datetime.now(timezone.utc)
    with services.pool.connection() as conn, conn.transaction():
        group = conn.execute("SELECT * FROM alert_groups WHERE id = %s FOR UPDATE", (group_id,)).fetchone()
        if group["placement"] is not None:
            return False
        if not group["silenced"]:
            lead = alert_store.first_firing(conn, group_id)
            silence = lead and noise_store.active_silence(conn, lead["fingerprint"], now=now,
                                                          workspace=services.workspace)
            if not silence:
                return False
            alert_store.update_group(conn, group_id, silenced=True, annotated_at=now)
            audit.append(conn, actor="warroom", action="alert.silenced", subject=f"alert:{lead['id']}",
                         detail={"silence": silence["id"], "until": silence["ends_at"], "by": silence["actor"]},
                         workspace=services.workspace)
        alert_store.claim_group_alerts(conn, group_id)
        return True


def _noise(services: Services, conn, lead_row: dict[str, Any]) -> NoiseScore:
    cfg = services.config.alerts.noise
    facts = noise_store.facts(conn, lead_row, cfg, now=datetime.now(timezone.utc), workspace=services.workspace)
    return noise_score(facts, cfg)


def _post_noise(services: Services, conn, group: dict[str, Any], lead_row: dict[str, Any], noise: NoiseScore) -> None:
    """The group's note instead of an investigation: why it looks like noise, and what to do about it."""
    alert = Alert.model_validate(lead_row["payload"])
    card = noise_card(alert, group_id=group["id"], score=noise.score, reasons=noise.reasons, tuning=noise.tuning,
                      silence_hours=services.config.alerts.noise.silence_hours)
    for platform, channel in destinations(services):
        outbox.enqueue(conn, platform=platform, channel=channel, op="post", thread_key=group_thread_key(group),
                       message_key=f"noise:group:{group['id']}", card=json.loads(card.model_dump_json()))
    alert_store.update_group(conn, group["id"], investigated_at=datetime.now(timezone.utc), noise_score=noise.score)
    audit.append(conn, actor="warroom", action="alert.noise", subject=f"alert:{lead_row['id']}",
                 detail={"score": noise.score, "reasons": noise.reasons, "group": group["id"]},
                 workspace=services.workspace)


def investigate_anyway(services: Services, group_id: int) -> bool:
    """The investigation a noise note stood in for, on request; False when someone already asked for it. The
    request is recorded first (under the group's lock) so two clicks start one investigation."""
    with services.pool.connection() as conn, conn.transaction():
        group = conn.execute("SELECT * FROM alert_groups WHERE id = %s FOR UPDATE", (group_id,)).fetchone()
        if group is None or group["noise_overridden_at"] is not None:
            return False
        alert_store.update_group(conn, group_id, noise_overridden_at=datetime.now(timezone.utc))
        lead_row = alert_store.first_firing(conn, group_id)
    if lead_row is None:
        return False
    try:
        investigation = annotate(services, alert=Alert.model_validate(lead_row["payload"]), alert_id=lead_row["id"])
        with services.pool.connection() as conn, conn.transaction():
            group = conn.execute("SELECT * FROM alert_groups WHERE id = %s FOR UPDATE", (group_id,)).fetchone()
            queued = _post_investigation(services, conn, group, lead_row, *investigation)
    except Exception:
        with services.pool.connection() as conn:  # let the next click try again
            alert_store.update_group(conn, group_id, noise_overridden_at=None)
        raise
    for step_id in queued:
        services.dispatch(step_id)
    return True


def _wants_investigation(group: dict[str, Any]) -> bool:
    return group["placement"] is not None and group["investigate"] and group["investigated_at"] is None


def group_thread_key(group: dict[str, Any]) -> str:
    """The message the group's conversation hangs off: its parent, or the storm summary it is listed in."""
    if group["placement"] == "storm":
        return f"storm:{group['storm_id']}"
    return f"alert:{group['first_alert_id']}"


def _show_group(services: Services, conn, group: dict[str, Any], alerts: list[Alert]) -> None:
    if group["placement"] == "storm":
        _show_storm(services, conn, group["storm_id"])
    else:
        card = json.loads(alert_group_card(alerts, group_id=group["id"]).model_dump_json())
        key = group_thread_key(group)
        for platform, channel in destinations(services):
            if group["posted_at"] is None:
                outbox.enqueue(conn, platform=platform, channel=channel, op="post", message_key=key, card=card)
            else:
                outbox.enqueue_latest(conn, platform=platform, channel=channel, message_key=key, card=card)
    if group["posted_at"] is None:
        alert_store.update_group(conn, group["id"], posted_at=datetime.now(timezone.utc))


def _show_storm(services: Services, conn, storm_id: int) -> None:
    """Post the storm summary once, then redraw it in place; serialised per storm so two annotators
    publishing two of its groups never both post it."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"storm-message:{storm_id}",))
    groups = [{"name": g["name"], "service": g["service"], "firing": g["firing"], "total": g["total"],
               "investigated": g["investigate"]} for g in alert_store.storm_groups(conn, storm_id)]
    card = json.loads(storm_card(groups, threshold=services.config.alerts.storm_new_groups_per_minute)
                      .model_dump_json())
    key = f"storm:{storm_id}"
    for platform, channel in destinations(services):
        if outbox.find_message(conn, key, platform) or outbox.is_pending(conn, key, platform=platform, op="post"):
            outbox.enqueue_latest(conn, platform=platform, channel=channel, message_key=key, card=card)
        else:
            outbox.enqueue(conn, platform=platform, channel=channel, op="post", message_key=key, card=card)


def _post_investigation(services: Services, conn, group: dict[str, Any], lead_row: dict[str, Any],
                        annotation: Annotation, runbook_row) -> list[int]:
    """The group's one annotation, in its thread; returns the steps auto-run queued."""
    alert = Alert.model_validate(lead_row["payload"])
    thread = group_thread_key(group)
    targets = destinations(services)
    platform, channel = targets[0] if targets else (None, None)
    plan_id, card = store_annotation_plan(
        conn, annotation, runbook_pk=runbook_row["id"] if runbook_row else None, alert_id=lead_row["id"],
        requested_by=None, platform=platform, channel=channel, thread=thread, environment=alert.environment,
        workspace=services.workspace)
    for platform_name, channel_id in targets:
        outbox.enqueue(conn, platform=platform_name, channel=channel_id, op="post", thread_key=thread,
                       message_key=f"plan:{plan_id}" if plan_id else f"annotation:group:{group['id']}",
                       card=json.loads(card.model_dump_json()))
    alert_store.update_group(conn, group["id"], investigated_at=datetime.now(timezone.utc))
    return auto_run(conn, plan_id, services) if plan_id else []


def _open_group_incident(services: Services, conn, group: dict[str, Any], lead_row: dict[str, Any]) -> None:
    """A group with a severe firing alert opens one incident, in the group's thread."""
    alert = Alert.model_validate(lead_row["payload"])
    if alert.severity not in INCIDENT_SEVERITIES:
        return
    incident_id = incident_store.open_incident(
        conn, title=f"{alert.name}: {alert.summary}"[:200], service=alert.service, environment=alert.environment,
        severity=alert.severity, alert_id=lead_row["id"], channel=group["channel"], thread=group_thread_key(group),
        workspace=services.workspace)
    alert_store.update_group(conn, group["id"], incident_id=incident_id)
    bind(incident_id=incident_id)  # the rest of this group's log lines name it (undone by annotate_group)
    log.info("opened incident %s", incident_id)


# --- alerts other integrations posted: annotated one by one in their own message's thread -----------------


def _annotate_single(services: Services, row: dict[str, Any]) -> bool:
    """Build and publish one alert's annotation; False when another process got there first."""
    alert = Alert.model_validate(row["payload"])
    targets = destinations(services)
    if alert.status == "resolved":
        return _publish_resolved(services, row, alert, targets)
    annotation, runbook_row = annotate(services, alert=alert, alert_id=row["id"])
    platform, channel = targets[0] if targets else (None, None)
    with services.pool.connection() as conn, conn.transaction():
        if not alert_store.mark_annotated(conn, row["id"]):
            return False  # another replica annotated it; nothing was written here
        plan_id, card = store_annotation_plan(
            conn, annotation, runbook_pk=runbook_row["id"] if runbook_row else None, alert_id=row["id"],
            requested_by=None, platform=platform, channel=channel, thread=f"alert:{row['id']}",
            environment=alert.environment, workspace=services.workspace)
        for platform_name, channel_id in targets:
            _post_alert(conn, platform_name, channel_id, row["id"], annotation, plan_id, card)
        if alert.severity in INCIDENT_SEVERITIES and channel:
            incident_store.open_incident(conn, title=f"{alert.name}: {alert.summary}"[:200], service=alert.service,
                                         environment=alert.environment, severity=alert.severity,
                                         alert_id=row["id"], channel=channel, thread=f"alert:{row['id']}",
                                         workspace=services.workspace)
        queued = auto_run(conn, plan_id, services) if plan_id else []
    for step_id in queued:
        services.dispatch(step_id)
    return True


def _post_alert(conn, platform: str, channel: str, alert_id: int, annotation: Annotation, plan_id: int | None,
                card) -> None:
    parent_key = f"alert:{alert_id}"
    if outbox.find_message(conn, parent_key, platform) is None:  # else another integration posted it already
        outbox.enqueue(conn, platform=platform, channel=channel, op="post", message_key=parent_key,
                       card=json.loads(alert_card(annotation).model_dump_json()))
    outbox.enqueue(conn, platform=platform, channel=channel, op="post", thread_key=parent_key,
                   message_key=f"plan:{plan_id}" if plan_id else f"annotation:{alert_id}",
                   card=json.loads(card.model_dump_json()))


def _publish_resolved(services: Services, row: dict[str, Any], alert: Alert, targets) -> bool:
    with services.pool.connection() as conn, conn.transaction():
        if not alert_store.mark_annotated(conn, row["id"]):
            return False
        firing = conn.execute(
            "SELECT id FROM alerts WHERE workspace = %s AND fingerprint = %s AND status = 'firing' "
            "ORDER BY id DESC LIMIT 1", (services.workspace, alert.fingerprint)).fetchone()
        if firing:
            card = notice(f"Resolved: {alert.name}", alert.summary, style="success")
            for platform, channel in targets:
                outbox.enqueue(conn, platform=platform, channel=channel, op="post", thread_key=f"alert:{firing['id']}",
                               card=json.loads(card.model_dump_json()))
    return True
