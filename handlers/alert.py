"""Alert threads annotated by the bot: persist first, then annotate each new alert exactly once."""
from __future__ import annotations

import json
import logging
from typing import Any

from engine.cards import alert_card, notice
from engine.models import Alert, Annotation
from engine.plans import store_annotation_plan
from handlers.annotate import annotate
from handlers.dispatch import auto_run
from handlers.services import Services
from storage import alerts as alert_store
from storage import incidents as incident_store
from storage import outbox

log = logging.getLogger(__name__)

INCIDENT_SEVERITIES = {"critical", "page", "p1", "sev1"}  # a firing alert this severe opens an incident


def receive(services: Services, alerts: list[Alert]) -> list[int]:
    """Write a whole notification durably in one transaction (before the webhook answers 2xx)."""
    ids = []
    with services.pool.connection() as conn, conn.transaction():
        for alert in alerts:
            alert_id, _ = alert_store.insert_alert(conn, alert=alert.model_dump(mode="json"),
                                                   workspace=services.workspace)
            ids.append(alert_id)
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
    """Annotate alerts not yet annotated (new ones, and any left over by a crash). Returns how many."""
    with services.pool.connection() as conn:
        rows = alert_store.pending_alerts(conn, limit=limit)
    done = 0
    for row in rows:
        try:
            if annotate_alert(services, row):
                done += 1
        except Exception:  # one bad alert must not starve the others; it stays pending and is retried
            log.exception("annotating alert %s failed", row["id"])
    return done


def annotate_alert(services: Services, row: dict[str, Any]) -> bool:
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
