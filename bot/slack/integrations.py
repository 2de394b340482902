"""Alerts that *other* integrations post in the alert channel, parsed so warroom can annotate their thread.

Input is the inner ``event`` of a Slack Events API ``message`` event; the output is ``engine.models.Alert``s.
Where each shape below comes from (source files, templates, captured payloads) is recorded in
``tests/fixtures/slack_integrations/README.md``.

What is looked at
    Only messages a bot posted (``bot_id``, ``subtype: bot_message`` or a ``bot_profile``): a person pasting
    "[FIRING:1] ..." is a conversation, not an alert. ``message_changed`` events are unwrapped (PagerDuty
    updates its card in place; Alertmanager can edit its message, ``edit_messages``). Replies inside a thread
    (Grafana's image follow-ups, "acknowledged by" notes) are not new announcements and give nothing.
    A message is read as its legacy ``attachments`` (title, title_link, pretext, text, fallback, color,
    footer, fields, actions, and Block Kit ``blocks`` nested in an attachment) plus its own ``text`` and
    ``blocks`` (``rich_text``, ``section`` text and fields, ``header``, ``context``, ``actions``). Slack link
    markup ``<https://x|label>`` is unwrapped and ``&amp; &lt; &gt;`` are decoded.

Formats, and how each is recognised: by ``bot_profile.name`` / ``username`` (or ``APP_IDS``) when they name the
integration, otherwise by shape, because bot names are configurable:

alertmanager
    Prometheus Alertmanager ``slack_configs`` (``notify/slack/slack.go``): one attachment whose title is
    ``slack.default.title`` = ``[FIRING:<n>] <group label values> (<other common label values>)`` or
    ``[RESOLVED] ...``, title_link ``<external URL>/#/alerts?receiver=<receiver>``, fallback
    ``<title> | <title_link>``, color ``danger`` / ``good``, username ``AlertManager``. The default text is
    empty: the message is then one Alert for the group. Custom texts that range over ``.Alerts`` and list
    each alert's labels (``Labels:`` + `` - name = value`` lines as in ``__text_alert_list``, or the common
    ``*Details:*`` + ``• *name:* `value` `` bullets) give one Alert per listed alert. Shape: a
    ``[FIRING:n]`` / ``[RESOLVED]`` title without Grafana's markers, or a ``/#/alerts`` title link.
grafana
    Grafana-managed alerting's Slack contact point (``grafana/alerting`` ``receivers/slack``): same title
    (plus ``[FIRING:n, RESOLVED:m]``), footer ``Grafana v<version>``, color ``#D63232`` / ``#36a64f``,
    title_link the alerts' common generator URL or ``/alerting/list``, and text ``default.message``:
    ``**Firing**`` / ``**Resolved**`` sections, each alert as ``Value:``, ``Labels:`` and ``Annotations:``
    lists of `` - name = value``, then ``Source:`` / ``Silence:`` / ``Dashboard:`` / ``Panel:`` URLs.
pagerduty
    PagerDuty's Slack app: a card for incident ``#<number>`` linked to
    ``https://<account>.pagerduty.com/incidents/<ID>``, with Status (Triggered / Acknowledged / Resolved),
    Priority, Urgency, Service and Assigned fields and Acknowledge / Resolve buttons. Shape: a link to
    ``*.pagerduty.com/incidents/``.
datadog
    Datadog's Slack integration: the monitor event title, linked, e.g. ``[P2] [Triggered] <name>``,
    ``[Triggered on {service:x}] <name>``, ``[Recovered on {...}] <name>``, ``[Warn] ...`` (also accepted:
    ``Triggered: [P1] <name>``), then the monitor message converted to mrkdwn, ending with
    ``[Monitor Status] · [Edit Monitor]`` links to ``/monitors/<id>?group=<scope>``, and the monitor tags.
    Shape: such a title, or a ``datadoghq`` ``/monitors/<id>`` link.
opsgenie
    Opsgenie's Slack app: ``#<tinyId>: <message>`` linked to ``.../alert/detail/<id>``, a line saying what
    happened (created / acknowledged / closed ...), fields Priority, Source, Tags, Entity, Teams, and
    Ack / Close / Take Ownership buttons. Shape: an Opsgenie alert link, or a ``#<n>: `` title together with
    a P1-P5 Priority field, Ack/Close buttons or the word Opsgenie (a bare ``#123: title`` could be a pull
    request).

What is extracted
    status (firing / resolved: ``[RESOLVED]``, ``Recovered``, ``Resolved``, ``Closed``; the attachment color
    good/``2eb886``/``36a64f`` is only a fallback), name, severity (lowercase: P1/SEV1 -> critical, P2 -> high,
    P3 -> medium, P4 -> low, P5 -> info, words like ``crit``/``warn`` normalised; the original priority or
    urgency stays in ``labels``), service and environment (labels/tags as ``engine.alerts`` reads them),
    summary, description, labels, annotations, links (title_link -> ``Source``; runbooks -> ``Runbook``;
    dashboards -> ``Dashboard``; silences -> ``Silence``; others keep their label) and starts_at when stated.

Acknowledged is still firing: PagerDuty "Acknowledged" and Opsgenie "acknowledged" give ``status="firing"``
with ``labels["state"] = "acknowledged"`` and the same fingerprint, so the store sees an update of the open
alert. A PagerDuty / Opsgenie message that names no incident or alert (no ``#<n>`` and no link) gives ``[]``.

Fingerprints never use the Slack ``ts``; a firing and a resolved notification of one alert share one:
alertmanager (alert listed with its labels): Alertmanager's own label-set fingerprint (FNV-1a over the sorted
labels), so the same alert received by webhook and read from Slack is one alert; otherwise
``fingerprint_of`` over source plus: the group (the title without its status prefix) for an Alertmanager
group; labels for Grafana; the incident number for PagerDuty; monitor id and group for Datadog; the tinyId for
Opsgenie.

Left to the caller: skipping warroom's own posts (by its ``bot_id``) before calling, and deduplicating: an edited
message (``message_changed``, e.g. a link unfurl) yields the same alert again, with the same fingerprint and status.

Nothing here raises: odd input (missing keys, non-dict attachments, None, huge text) gives ``[]`` or the
alert with what is known. A message recognised as an alert but missing fields still gives an Alert named
from its title.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from engine.alerts import _ENV_LABELS, _SERVICE_LABELS, fingerprint_of, normalise_environment, parse_time
from engine.models import Alert, Link

log = logging.getLogger(__name__)

SOURCES = ("alertmanager", "grafana", "pagerduty", "datadog", "opsgenie")
# Slack app id -> source. App ids are per app and not guessable; fill this from configuration when known.
APP_IDS: dict[str, str] = {}

MAX_ALERTS = 100          # alerts taken from one message
MAX_TEXT = 40_000         # Slack's own limit for a message text; anything longer is cut before parsing
MAX_DESCRIPTION = 4_000
MAX_NAME = 500
MAX_PARTS = 20            # attachments / blocks looked at

# --- reading a Slack message ----------------------------------------------------------------------------


@dataclass
class _Part:
    """One visual unit: a legacy attachment, or the message's own text and blocks."""

    title: str = ""
    title_link: str = ""
    pretext: str = ""
    text: str = ""
    fallback: str = ""
    color: str = ""
    footer: str = ""
    footer_icon: str = ""
    fields: list[tuple[str, str]] = field(default_factory=list)     # (title, raw value)
    buttons: list[tuple[str, str]] = field(default_factory=list)    # (label, url or "")

    def raw(self) -> str:
        """Everything a reader sees, raw mrkdwn, one item per line (buttons excluded: verbs, not states)."""
        fields = "\n".join(f"{title}: {value}" for title, value in self.fields)
        return "\n".join(s for s in (self.pretext, self.title, self.text, fields, self.footer) if s)


@dataclass
class _Message:
    names: list[str]
    source_hint: str | None
    parts: list[_Part]

    def raw(self) -> str:
        return "\n".join(part.raw() for part in self.parts)

    def titles(self) -> list[str]:
        return [_plain(p.title).strip() for p in self.parts if p.title.strip()]


def _s(value: Any) -> str:
    """A string field: strings as they are (capped), numbers as text, anything else empty."""
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return ""


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list:
    return value[:MAX_PARTS * 5] if isinstance(value, list) else []


def _unwrap(event: Any) -> dict | None:
    """The message itself: `message_changed` carries the new version in `message`; deletions are nothing."""
    if not isinstance(event, dict):
        return None
    subtype = event.get("subtype")
    if subtype == "message_changed":
        inner = event.get("message")
        return {**inner, "channel": event.get("channel")} if isinstance(inner, dict) else None
    if subtype in ("message_deleted", "channel_join", "channel_leave", "channel_topic", "channel_purpose"):
        return None
    return event


def _is_bot(message: dict) -> bool:
    return bool(message.get("bot_id") or message.get("subtype") == "bot_message"
                or isinstance(message.get("bot_profile"), dict))


def _is_reply(message: dict) -> bool:
    thread_ts, ts = _s(message.get("thread_ts")), _s(message.get("ts"))
    return bool(thread_ts and ts and thread_ts != ts)


def _read(message: dict) -> _Message:
    profile = _d(message.get("bot_profile"))
    names = [n for n in (_s(profile.get("name")), _s(message.get("username"))) if n]
    app_id = _s(message.get("app_id")) or _s(profile.get("app_id"))
    parts = [_attachment_part(a) for a in _l(message.get("attachments"))[:MAX_PARTS] if isinstance(a, dict)]
    own = _Part(text=_s(message.get("text")))
    _add_blocks(own, message.get("blocks"))
    if own.text.strip() or own.title or own.fields:
        parts.append(own)
    return _Message(names=names, source_hint=APP_IDS.get(app_id), parts=parts)


def _attachment_part(att: dict) -> _Part:
    part = _Part(title=_s(att.get("title")), title_link=_s(att.get("title_link")), pretext=_s(att.get("pretext")),
                 text=_s(att.get("text")), fallback=_s(att.get("fallback")), color=_s(att.get("color")),
                 footer=_s(att.get("footer")), footer_icon=_s(att.get("footer_icon")))
    for f in _l(att.get("fields")):
        if isinstance(f, dict) and (_s(f.get("title")) or _s(f.get("value"))):
            part.fields.append((_s(f.get("title")), _s(f.get("value"))))
    for action in _l(att.get("actions")):
        if isinstance(action, dict):
            part.buttons.append((_s(action.get("text")) or _s(action.get("name")), _s(action.get("url"))))
    _add_blocks(part, att.get("blocks"))
    return part


def _add_blocks(part: _Part, blocks: Any) -> None:
    """Flatten Block Kit into the part: headers become its title, section fields its fields, buttons its
    buttons, every other text a line of its text."""
    lines: list[str] = []
    for block in _l(blocks)[:MAX_PARTS * 5]:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "header":
            header = _s(_d(block.get("text")).get("text"))
            if header and not part.title:
                part.title = header
            elif header:
                lines.append(header)
        elif kind == "section":
            text = _s(_d(block.get("text")).get("text"))
            if text:
                lines.append(text)
            for f in _l(block.get("fields")):
                title, _, value = _s(_d(f).get("text")).partition("\n")
                if value:
                    part.fields.append((_clean(_plain(title)).strip().rstrip(":").strip(), value.strip()))
                elif title:
                    lines.append(title)
            _add_button(part, _d(block.get("accessory")))
        elif kind == "context":
            texts = [_s(_d(e).get("text")) for e in _l(block.get("elements"))]
            if any(texts):
                lines.append(" ".join(t for t in texts if t))
        elif kind == "actions":
            for element in _l(block.get("elements")):
                _add_button(part, _d(element))
        elif kind == "rich_text":
            lines.append(_rich_text(_l(block.get("elements"))))
    if lines:
        part.text = "\n".join(s for s in [part.text, *lines] if s)[:MAX_TEXT]


def _add_button(part: _Part, element: dict) -> None:
    if element.get("type") == "button":
        part.buttons.append((_s(_d(element.get("text")).get("text")), _s(element.get("url"))))


def _rich_text(elements: list, depth: int = 0) -> str:
    """rich_text as mrkdwn-ish text: links keep their URL as <url|label> so they are found like the rest."""
    if depth > 5:
        return ""
    out: list[str] = []
    for element in elements:
        element = _d(element)
        kind = element.get("type")
        if kind == "text":
            out.append(_s(element.get("text")))
        elif kind == "link":
            url, label = _s(element.get("url")), _s(element.get("text"))
            out.append(f"<{url}|{label}>" if label else f"<{url}>")
        elif kind == "user":
            out.append(f"<@{_s(element.get('user_id'))}>")
        elif kind == "channel":
            out.append(f"<#{_s(element.get('channel_id'))}>")
        elif kind == "emoji":
            out.append(f":{_s(element.get('name'))}:")
        elif kind in ("rich_text_section", "rich_text_preformatted", "rich_text_quote"):
            out.append(_rich_text(_l(element.get("elements")), depth + 1) + "\n")
        elif kind == "rich_text_list":
            for item in _l(element.get("elements")):
                out.append("- " + _rich_text(_l(_d(item).get("elements")), depth + 1) + "\n")
    return "".join(out)


# --- text helpers ---------------------------------------------------------------------------------------

_SLACK_LINK = re.compile(r"<((?:https?|mailto):[^|<>\s]{1,2000})(?:\|([^<>]{0,1000}))?>")
_MD_LINK = re.compile(r"\[([^\[\]\n]{1,300})\]\((https?://[^()\s]{1,2000})\)")
_SPECIAL = re.compile(r"<([@#!])([^|<>\s]{0,200})(?:\|([^<>]{0,200}))?>")
_BARE_URL = re.compile(r"https?://[^\s<>|]{1,2000}")
_EMPHASIS = re.compile(r"(?<![\w*])\*+|\*+(?![\w*])|`+|~(?=\S)|(?<=\S)~")


def _unescape(text: str) -> str:
    """Slack escapes exactly these three in message text."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _special(match: re.Match) -> str:
    sigil, target, label = match.group(1), match.group(2), match.group(3)
    if sigil == "!" and target.startswith("date^"):
        return label or ""
    return sigil.replace("!", "@") + (label or target)


def _plain(raw: str) -> str:
    """Readable text: links as their label (or URL), mentions as @name, entities decoded."""
    text = _SLACK_LINK.sub(lambda m: m.group(2) or m.group(1), raw)
    text = _MD_LINK.sub(lambda m: m.group(1), text)
    return _unescape(_SPECIAL.sub(_special, text))


def _clean(text: str) -> str:
    """Without mrkdwn emphasis (*bold*, `code`, ~strike~): what a parser compares."""
    return _EMPHASIS.sub("", text)


def _lines(raw: str) -> list[str]:
    return raw[:MAX_TEXT].splitlines()


@dataclass
class _Found:
    url: str
    label: str
    hint: str      # the words just before the link on its line ("Runbook:", "Source:")


def _links_in(raw: str) -> list[_Found]:
    """Links in raw mrkdwn: <url|label>, [label](url) and bare URLs, each with the words before it."""
    found: list[_Found] = []
    for line in _lines(raw):
        if "http" not in line:
            continue
        taken: list[tuple[int, int]] = []
        previous_end = 0
        matches = sorted([(m.start(), m.end(), m.group(1), m.group(2) or "") for m in _SLACK_LINK.finditer(line)]
                         + [(m.start(), m.end(), m.group(2), m.group(1)) for m in _MD_LINK.finditer(line)])
        for start, end, url, label in matches:
            hint = _clean(_plain(line[previous_end:start])).strip()
            found.append(_Found(_unescape(url), _clean(_plain(label)).strip(), hint[-40:]))
            taken.append((start, end))
            previous_end = end
        rest, cursor = [], 0
        for start, end in taken:
            rest.append(line[cursor:start] + " " * (end - start))
            cursor = end
        rest = "".join(rest) + line[cursor:]
        for m in _BARE_URL.finditer(rest):
            url = _unescape(m.group(0)).rstrip(".,;)]*`'\"")
            hint = _clean(_plain(rest[max(0, m.start() - 60):m.start()])).strip()
            found.append(_Found(url, "", hint[-40:]))
    return found


def _link_title(hint: str, label: str, url: str) -> str:
    words = f"{hint} {label}".lower()
    low_url = url.lower()
    if "runbook" in words or "runbook" in low_url or "playbook" in words:
        return "Runbook"
    if "silence" in words or "/silence" in low_url:
        return "Silence"
    if "panel" in words or "viewpanel=" in low_url:
        return "Panel"
    if "dashboard" in words or re.search(r"/d/[\w-]+", low_url) or "/dashboard" in low_url:
        return "Dashboard"
    if any(w in words for w in ("source", "graph", "chart", "generator", "prometheus")) or "/graph?" in low_url:
        return "Source"
    name = re.sub(r":[\w+-]+:", "", label).strip() or hint.rstrip(":").strip()
    return name[:80] or "Link"


def _add_link(links: list[Link], title: str, url: str) -> None:
    url = url.strip()
    if url.startswith(("http://", "https://")) and all(link.url != url for link in links):
        links.append(Link(title=title, url=url))


def _time(value: str) -> datetime | None:
    """A stated time, or None: Go's time format, Datadog's 'Wed Dec 11 2024 15:24:08 UTC', or RFC 3339 /
    epoch via engine.alerts.parse_time. Never raises."""
    text = value.strip()
    go = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d+))? ([+-]\d{4})(?: [A-Z]{1,5})?", text)
    if go:   # Go's time.Time String(), what `{{ .StartsAt }}` prints: "2024-11-29 08:40:57.669 +0000 UTC"
        fraction = (go.group(2) or "")[:6].ljust(6, "0")
        try:
            return datetime.strptime(f"{go.group(1)}.{fraction} {go.group(3)}", "%Y-%m-%d %H:%M:%S.%f %z")
        except ValueError:
            return None
    for fmt in ("%a %b %d %Y %H:%M:%S UTC", "%Y-%m-%d %H:%M:%S UTC", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    try:
        return parse_time(text)
    except (ValueError, TypeError, OverflowError):    # AlertFormatError is a ValueError
        return None


# --- severity and status --------------------------------------------------------------------------------

_SEVERITY_WORDS = {
    "critical": "critical", "crit": "critical", "fatal": "critical", "emergency": "critical",
    "disaster": "critical", "page": "page", "high": "high", "major": "major", "error": "error", "err": "error",
    "warning": "warning", "warn": "warning", "medium": "medium", "moderate": "medium", "average": "medium",
    "minor": "minor", "low": "low", "info": "info", "information": "info", "informational": "info",
    "none": "none",
}
_RANK_SEVERITY = {"0": "critical", "1": "critical", "2": "high", "3": "medium", "4": "low", "5": "info"}
_RANK = re.compile(r"(?:p|sev|sev-|s)\s*([0-5])\b", re.I)


def severity_of(value: str | None) -> str | None:
    """P1 / SEV-1 / critical / CRIT / warn ... as one of the engine's lowercase severities, or None."""
    text = _clean(_plain(value or "")).strip().lower()
    if not text:
        return None
    match = _RANK.fullmatch(text) or _RANK.match(text)
    if match:
        return _RANK_SEVERITY[match.group(1)]
    return _SEVERITY_WORDS.get(text.split()[0].strip(".:-,()"))


_GREEN = {"good", "2eb886", "#2eb886", "36a64f", "#36a64f", "green", "00ff00", "#00ff00"}
_RED = {"danger", "a30200", "#a30200", "d63232", "#d63232", "d00000", "#d00000", "red", "ff0000", "#ff0000"}


def _color_status(parts: list[_Part]) -> str | None:
    for part in parts:
        color = part.color.strip().lower()
        if color in _GREEN:
            return "resolved"
        if color in _RED:
            return "firing"
    return None


def _first(values: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if values.get(name):
            return values[name]
    return None


def _service_env(labels: dict[str, str]) -> tuple[str | None, str | None]:
    return _first(labels, _SERVICE_LABELS), normalise_environment(_first(labels, _ENV_LABELS))


def _am_fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's (prometheus/common model) label-set fingerprint: FNV-1a 64 over sorted name/value pairs,
    each followed by the 0xff separator. Equals the `fingerprint` its webhook sends for the same alert."""
    digest = 14695981039346656037
    for name in sorted(labels):
        for chunk in (name.encode(), b"\xff", labels[name].encode(), b"\xff"):
            for byte in chunk:
                digest = ((digest ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{digest:016x}"


def _fp(source: str, identity: dict[str, str]) -> str:
    return fingerprint_of({"__source__": source, **{k: v for k, v in identity.items() if v}})


def _cut(text: str, limit: int = MAX_DESCRIPTION) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --- detection ------------------------------------------------------------------------------------------

_NAME_HINTS = (("alertmanager", "alertmanager"), ("alert manager", "alertmanager"), ("prometheus", "alertmanager"),
               ("grafana", "grafana"), ("pagerduty", "pagerduty"), ("pager duty", "pagerduty"),
               ("datadog", "datadog"), ("opsgenie", "opsgenie"))
_PROM_TITLE = re.compile(r"^\s*\[(?P<status>FIRING|RESOLVED)(?::\s*(?P<firing>\d+))?(?:,\s*RESOLVED:\s*\d+)?\]\s*"
                         r"(?P<rest>.*)$", re.I | re.S)
_PD_URL = re.compile(r"https?://(?P<account>[\w-]+)\.(?:eu\.)?pagerduty\.com/incidents/(?P<id>[A-Za-z0-9]+)")
_OG_URL = re.compile(r"https?://[\w.-]*opsgenie\.com/alert/(?:detail/)?(?P<id>[\w-]{6,})")
_OG_TITLE = re.compile(r"(?:^|\s)#(?P<tiny>\d{1,9}):\s+(?P<message>\S.*)$")
_DD_TRANSITIONS = r"Re-Triggered|Triggered|Recovered|Re-Warn|Warn|Re-No Data|No Data|Renotify"
_DD_BRACKET = re.compile(rf"^\s*(?:\[(?P<prio>P[1-5])\]\s*)?\[(?P<tr>{_DD_TRANSITIONS})(?:\s+on\s+\{{(?P<scope>[^}}]*)\}})?\]"
                         r"\s*(?P<name>.*)$", re.I)
_DD_COLON = re.compile(rf"^\s*(?P<tr>{_DD_TRANSITIONS})(?:\s+on\s+\{{(?P<scope>[^}}]*)\}})?\s*:\s*"
                       r"(?:\[(?P<prio>P[1-5])\]\s*)?(?P<name>.*)$", re.I)
_DD_MONITOR = re.compile(r"https?://[\w.-]*(?:datadoghq\.(?:com|eu)|ddog-gov\.com)/monitors/(?P<id>\d+)")


def _by_name(message: _Message) -> str | None:
    if message.source_hint in SOURCES:
        return message.source_hint
    for name in message.names:
        low = name.lower()
        for needle, source in _NAME_HINTS:
            if needle in low:
                return source
    return None


def _grafana_marks(message: _Message) -> bool:
    for part in message.parts:
        if part.footer.lower().startswith("grafana") or "grafana.com" in part.footer_icon:
            return True
        if re.search(r"^\*\*(Firing|Resolved)\*\*\s*$", part.text, re.M) and re.search(r"^Value: ", part.text, re.M):
            return True
    return False


def _datadog_title(message: _Message) -> re.Match | None:
    """A Datadog event title. `Triggered: <name>` alone could be any CI bot: it needs a priority, a scope or a
    link to a Datadog monitor as well."""
    has_monitor: bool | None = None
    for part in message.parts:
        for candidate in (part.title, *_lines(part.text)[:3], part.fallback):
            text = _clean(_plain(candidate)).strip()
            match = _DD_BRACKET.match(text) or _DD_COLON.match(text)
            if not match:
                continue
            if match.re is _DD_BRACKET or match.group("prio") or match.group("scope"):
                return match
            if has_monitor is None:
                has_monitor = bool(_DD_MONITOR.search(message.raw()))
            if has_monitor:
                return match
    return None


def _opsgenie_shape(message: _Message) -> bool:
    raw = message.raw()
    if _OG_URL.search(raw) or any(_OG_URL.search(part.title_link) for part in message.parts):
        return True
    titled = any(_OG_TITLE.search(_plain(t)) for p in message.parts for t in (p.title, *_lines(p.text)[:2]) if t)
    if not titled:
        return False
    buttons = {label.strip().lower() for p in message.parts for label, _ in p.buttons}
    priority = any(title.strip().lower() == "priority" and re.fullmatch(r"\s*P[1-5]\s*", _plain(value))
                   for p in message.parts for title, value in p.fields)
    return priority or bool(buttons & {"ack", "acknowledge", "close", "take ownership"}) or "opsgenie" in raw.lower()


def _detect_source(message: _Message) -> str | None:
    """Which integration posted this, by its name first and then by the message's shape; None if none."""
    by_name = _by_name(message)
    if by_name:
        return by_name
    raw = message.raw() + "\n" + "\n".join(p.title_link for p in message.parts)
    if _PD_URL.search(raw):
        return "pagerduty"
    if _opsgenie_shape(message):
        return "opsgenie"
    if any(_PROM_TITLE.match(t) for t in message.titles()):
        return "grafana" if _grafana_marks(message) else "alertmanager"
    if _datadog_title(message) or _DD_MONITOR.search(raw):
        return "datadog"
    if _grafana_marks(message):
        return "grafana"
    if any("/#/alerts" in p.title_link for p in message.parts):
        return "alertmanager"
    return None


# --- Alertmanager and Grafana: alert lists in text ------------------------------------------------------


@dataclass
class _Block:
    """One alert as a text template lists it."""

    status: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    severity: str | None = None
    starts_at: datetime | None = None
    listed: bool = False          # labels came from a label list (all of them), not from loose lines


_SECTION = re.compile(r"^(?:alerts\s+)?(?:\[\d+\]\s*)?(firing|resolved)(?:\s*\(\d+\))?\s*:?$", re.I)
_LIST_HEADER = re.compile(r"^(labels|details|alert details|common labels)\s*:?$", re.I)
_ANNOTATIONS_HEADER = re.compile(r"^(annotations|common annotations)\s*:?$", re.I)
_ITEM = re.compile(r"^[-•·*]\s*(?P<key>[A-Za-z_][\w.\-/]{0,100})\s*(?:=|:)\s*(?P<value>.*)$")
_KEY_VALUE = re.compile(r"^(?P<key>[A-Za-z][\w .\-]{0,40}?)\s*:\s*(?P<value>.*)$")
_LINK_KEYS = {"source", "silence", "dashboard", "panel", "graph", "runbook", "generator", "image", "grafana",
              "prometheus", "alertmanager", "link", "url", "query"}
_LABEL_KEYS = {"severity", "service", "environment", "env", "namespace", "cluster", "instance", "job", "host",
               "pod", "team", "region"}
_TIME_KEYS = {"started", "starts at", "start time", "start", "since", "fired at", "firing since", "triggered at"}


def _alert_blocks(raw: str) -> tuple[list[_Block], list[Link]]:
    """Split a text that lists alerts (Grafana's default.message, Alertmanager's __text_alert_list, the
    `*Alert:* ... *Details:* • *label:* `value`` family) into one block per alert. Links outside any block
    are returned separately (they belong to the whole message)."""
    blocks: list[_Block] = []
    loose_links: list[Link] = []
    section: str | None = None
    current: _Block | None = None
    mode: str | None = None

    def start() -> _Block:
        block = _Block(status=section)
        blocks.append(block)
        return block

    for raw_line in _lines(raw):
        line = _clean(_plain(raw_line)).strip()
        if not line:
            continue
        links = _links_in(raw_line)
        if _SECTION.match(line):
            section, current, mode = _SECTION.match(line).group(1).lower(), None, None
            continue
        if line.lower().startswith("value:"):
            current, mode = start(), None
            continue
        if _LIST_HEADER.match(line):
            if current is None or current.labels:
                current = start()
            mode = "labels"
            continue
        if _ANNOTATIONS_HEADER.match(line):
            current = current or start()
            mode = "annotations"
            continue
        item = _ITEM.match(line)
        if item:
            key, value = item.group("key"), item.group("value").strip().strip('"')
            if key == "alertname" and current is not None and "alertname" in current.labels:
                current, mode = start(), "labels"
            current = current or start()
            if mode == "annotations":
                current.annotations[key] = value
            else:
                current.labels[key] = value
                current.listed = current.listed or mode == "labels" or key == "alertname"
            continue
        pair = _KEY_VALUE.match(line)
        if not pair:
            mode = None
            (current.links if current else loose_links).extend(
                Link(title=_link_title(f.hint, f.label, f.url), url=f.url) for f in links)
            continue
        key, value = pair.group("key").strip().lower(), pair.group("value").strip()
        mode = None
        if key in ("alert", "alerts", "alert name"):
            if current is None or current.labels or current.annotations:
                current = start()
            summary, _, tail = value.rpartition(" - ")
            if summary and severity_of(tail):
                current.severity, value = severity_of(tail), summary
            if value:
                current.annotations["summary"] = value
        elif key in _LINK_KEYS or (links and not value.replace(" ", "").strip(":")):
            target = current.links if current else loose_links
            for f in links:
                target.append(Link(title=_link_title(f.hint or key, f.label, f.url), url=f.url))
            if key == "runbook" and current and links:
                current.annotations.setdefault("runbook_url", links[0].url)
        elif key in _TIME_KEYS:
            if current is not None:
                current.starts_at = _time(value)
        else:
            current = current or start()
            name = key.replace(" ", "_")
            if name in ("severity", "priority") and severity_of(value):
                current.severity = severity_of(value)
            if name in _LABEL_KEYS:
                current.labels.setdefault(name, value)
            else:
                current.annotations[name] = value
            current.links.extend(Link(title=_link_title(f.hint or key, f.label, f.url), url=f.url) for f in links)
    return blocks, loose_links


def _annotation_links(annotations: dict[str, str]) -> list[tuple[str, str]]:
    out = []
    for key, value in annotations.items():
        if value.startswith(("http://", "https://")):
            low = key.lower()
            if "runbook" in low:
                out.append(("Runbook", value))
            elif "dashboard" in low:
                out.append(("Dashboard", value))
            elif "panel" in low:
                out.append(("Panel", value))
    return out


_TITLE_SEVERITIES = {"critical", "crit", "fatal", "emergency", "page", "error", "major", "minor", "warning", "warn",
                     "info"}   # not high/low/medium/none: those are as likely words of an alert name
_TITLE_ENVIRONMENTS = {"production", "prod", "prd", "staging", "stg", "stage", "preprod", "development", "dev", "qa"}


def _title_tokens(common: str) -> tuple[str | None, str | None, str]:
    """Severity and environment among the common label values of a title (the last matching token of each:
    `severity` sorts late among label names), and the values without those tokens."""
    tokens = common.split()
    severity = environment = None
    for i in range(len(tokens) - 1, -1, -1):
        low = tokens[i].lower()
        if severity is None and low in _TITLE_SEVERITIES:
            severity, tokens[i] = _SEVERITY_WORDS[low], ""
        elif environment is None and low in _TITLE_ENVIRONMENTS:
            environment, tokens[i] = normalise_environment(low), ""
    return severity, environment, " ".join(t for t in tokens if t)


@dataclass
class _Heading:
    """What an Alertmanager/Grafana title says: `[FIRING:2] <group values> (<other common values>)`."""

    title: str
    status: str
    group: str            # group label values ("" when the route groups by nothing)
    common: str           # the other common label values, inside the trailing parentheses

    @property
    def name(self) -> str:
        """The group's name: its group label values, else the common values without severity/environment."""
        return self.group or _title_tokens(self.common)[2] or self.common or self.title


def _heading(part: _Part) -> _Heading | None:
    title = _clean(_plain(part.title or (_lines(part.fallback) or [""])[0])).strip()
    if not title:          # both always send one (slack.default.title / default.title): no title, no alert
        return None
    head = _PROM_TITLE.match(title)
    if head:
        status = "resolved" if head.group("status").upper() == "RESOLVED" else "firing"
        rest = head.group("rest").strip()
    else:                  # a custom title: the color (danger/good) and the word "resolved" are all there is
        resolved = re.search(r"\bresolved\b", _plain(part.pretext + " " + title), re.I)
        status = "resolved" if resolved else (_color_status([part]) or "firing")
        rest = title
    grouped = re.match(r"^(?P<group>.*?)\s*\((?P<common>[^()]*)\)\s*$", rest)
    group, common = (grouped.group("group").strip(), grouped.group("common").strip()) if grouped else (rest, "")
    return _Heading(title=title, status=status, group=group, common=common)


def _parse_prometheus_style(message: _Message, source: str) -> list[Alert]:
    """Alertmanager and Grafana: a `[FIRING:n] ...` attachment whose text may list the alerts one by one."""
    titled = [p for p in message.parts if _PROM_TITLE.match(_plain(p.title))]
    parts = titled or [p for p in message.parts if p.title.strip()] or message.parts
    heading = _heading(parts[0]) if parts else None
    if heading is None:
        return []
    part = parts[0]
    blocks, loose_links = _alert_blocks(part.text)
    links: list[Link] = []
    if part.title_link:
        _add_link(links, "Source", _unescape(part.title_link))
    for link in loose_links:
        _add_link(links, link.title, link.url)
    listed = [b for b in blocks if b.labels]
    if not listed:
        return [_group_alert(source, heading, blocks, links)]
    return [_listed_alert(source, heading, block, links) for block in listed[:MAX_ALERTS]]


def _group_alert(source: str, heading: _Heading, blocks: list[_Block], links: list[Link]) -> Alert:
    """One Alert for a notification that does not list its alerts (Alertmanager's default empty text)."""
    annotations = {k: v for b in blocks for k, v in b.annotations.items()}
    for link in [link_ for block in blocks for link_ in block.links]:
        _add_link(links, link.title, link.url)
    for title, url in _annotation_links(annotations):
        _add_link(links, title, url)
    title_severity, title_env, _ = _title_tokens(heading.common)
    severity = next((b.severity for b in blocks if b.severity), None) or title_severity
    identity = heading.group or heading.common or heading.title   # group labels are what stays the same
    return Alert(
        source=source, fingerprint=_fp(source, {"group": identity}), status=heading.status, name=heading.name,
        severity=severity or "unknown", environment=title_env,
        summary=annotations.get("summary") or heading.name, description=_cut(annotations.get("description", "")),
        labels={"severity": severity} if severity else {}, annotations=annotations, links=links,
        starts_at=next((b.starts_at for b in blocks if b.starts_at), None),
        group_key=heading.group or heading.common or None)


def _listed_alert(source: str, heading: _Heading, block: _Block, message_links: list[Link]) -> Alert:
    """One listed alert, named by its alertname label, identified by its labels."""
    labels, annotations = dict(block.labels), block.annotations
    name = labels.get("alertname") or heading.name
    links: list[Link] = []
    for link in block.links:
        _add_link(links, link.title, link.url)
    for title, url in _annotation_links(annotations):
        _add_link(links, title, url)
    for link in message_links:   # the title link is the group's page: "Source" only if the alert has none
        has_source = any(existing.title == "Source" for existing in links)
        _add_link(links, source.title() if link.title == "Source" and has_source else link.title, link.url)
    if source == "alertmanager" and block.listed and "alertname" in labels:
        fingerprint = _am_fingerprint(labels)        # equals the webhook's fingerprint for this alert
    else:
        fingerprint = _fp(source, {"alertname": name, **labels})
    service, environment = _service_env(labels)
    return Alert(
        source=source, fingerprint=fingerprint, status=block.status or heading.status, name=name,
        severity=severity_of(labels.get("severity")) or block.severity or "unknown",
        service=service, environment=environment,
        summary=annotations.get("summary") or annotations.get("message") or annotations.get("title") or name,
        description=_cut(annotations.get("description", "")), labels=labels, annotations=annotations,
        links=links, starts_at=block.starts_at, group_key=heading.group or heading.common or None)


def parse_alertmanager(message: _Message) -> list[Alert]:
    return _parse_prometheus_style(message, "alertmanager")


def parse_grafana(message: _Message) -> list[Alert]:
    return _parse_prometheus_style(message, "grafana")


# --- PagerDuty, Datadog, Opsgenie: one alert per message ------------------------------------------------


_FIELD_IN_LINE = re.compile(r"(?:^|[\s·|•])(?P<key>status|state|priority|urgency|service|impacted service|assigned to|"
                            r"assignee|assigned|escalation policy|environment|tags|entity|teams|responders)"
                            r"\s*:\s*(?P<value>[^·|\n]+)", re.I)


def _fields(message: _Message) -> dict[str, str]:
    """Attachment/block fields and `Key: value` lines, keyed by lowercase name, values as plain text."""
    out: dict[str, str] = {}
    for part in message.parts:
        for title, value in part.fields:
            key = _clean(_plain(title)).strip().rstrip(":").strip().lower()
            if key and key not in out:
                out[key] = _clean(_plain(value)).strip()
        for line in _lines(part.text):
            line = _clean(_plain(line)).strip()
            pair = _KEY_VALUE.match(line)
            if pair and pair.group("value").strip():
                out.setdefault(pair.group("key").strip().lower(), pair.group("value").strip())
            for known in _FIELD_IN_LINE.finditer(line):     # "… · Urgency: Low · Service: api"
                out.setdefault(known.group("key").lower(), known.group("value").strip())
    return out


def _all_links(message: _Message) -> list[_Found]:
    found = [_Found(_unescape(p.title_link), _clean(_plain(p.title)).strip(), "title")
             for p in message.parts if p.title_link]
    found += [f for p in message.parts for f in _links_in(p.raw())]
    found += [_Found(url, label, "button") for p in message.parts for label, url in p.buttons if url]
    return found


def _state(text: str, order: tuple[tuple[str, str], ...]) -> str | None:
    """The first state (in priority order) whose word appears in `text`."""
    for pattern, state in order:
        if re.search(rf"\b(?:{pattern})\b", text, re.I):
            return state
    return None


_PD_STATES = (("resolved", "resolved"), ("acknowledged", "acknowledged"),
              ("triggered|re-?opened|escalated|unacknowledged|reassigned", "triggered"))
_OG_STATES = (("closed|resolved", "closed"), ("acknowledged|acked", "acknowledged"),
              ("created|new alert|escalated|re-?opened|unacknowledged|snoozed|assigned|open", "open"))
_NOTICE = re.compile(r"^\s*(acknowledged|resolved|reassigned|escalated|closed|assigned)\s+by\b", re.I)


def _strip_prefixes(title: str) -> str:
    text = re.sub(r":[\w+-]+:", "", title).strip()
    text = re.sub(r"^(?:triggered|acknowledged|resolved|reopened|escalated)\s*[:\-–]\s*", "", text, flags=re.I)
    return re.sub(r"^\[?#\d+\]?\s*[:\-–]?\s*", "", text).strip()


def parse_pagerduty(message: _Message) -> list[Alert]:
    """The incident the card is about; no incident named (no #number, no incident link) -> []."""
    links = _all_links(message)
    incident = next((f for f in links if _PD_URL.search(f.url)), None)
    match = _PD_URL.search(incident.url) if incident else None
    texts = [incident.label if incident else "", *(p.title for p in message.parts),
             *(line for p in message.parts for line in _lines(p.text)[:3]), *(p.fallback for p in message.parts)]
    texts = [_clean(_plain(t)).strip() for t in texts if t and t.strip()]
    number = next((m.group(1) for t in texts for m in [re.search(r"#(\d{1,9})\b", t)] if m), None)
    if not number and not match:
        return []
    title = next((_strip_prefixes(t) for t in texts if _strip_prefixes(t) and not _NOTICE.match(t)), "")
    fields = _fields(message)
    plain = _plain(message.raw())
    state = _state(fields.get("status", ""), _PD_STATES) or _state(plain, _PD_STATES)
    if state is None:
        state = "resolved" if _color_status(message.parts) == "resolved" else "triggered"
    priority = fields.get("priority", "")
    urgency = fields.get("urgency", "")
    name = title or f"PagerDuty incident #{number}"
    labels = {k: v for k, v in {
        "incident_number": number or "", "incident_id": match.group("id") if match else "",
        "account": match.group("account") if match else "", "state": state, "priority": priority,
        "urgency": urgency.lower(), "assignee": fields.get("assigned") or fields.get("assignee")
        or fields.get("assigned to") or "", "escalation_policy": fields.get("escalation policy", ""),
    }.items() if v}
    out_links: list[Link] = []
    if incident:
        _add_link(out_links, "Source", incident.url)
    for f in links:
        if f.hint not in ("title", "button") and not _PD_URL.search(f.url) and "pagerduty.com" not in f.url:
            _add_link(out_links, _link_title(f.hint, f.label, f.url), f.url)
    return [Alert(
        source="pagerduty",
        fingerprint=_fp("pagerduty", {"incident": number} if number else {"incident_id": match.group("id")}),
        status="resolved" if state == "resolved" else "firing", name=name,
        severity=severity_of(priority) or severity_of(urgency) or "unknown",
        service=fields.get("service") or fields.get("impacted service") or None,
        environment=normalise_environment(fields.get("environment")), summary=name, labels=labels,
        links=out_links)]


def _tags(text: str) -> dict[str, str]:
    """`env:prod, service:api, monitor` -> {"env": "prod", "service": "api"} (first value of each key)."""
    out: dict[str, str] = {}
    for tag in re.split(r"[,\s]+", text):
        key, sep, value = tag.strip("`*").partition(":")
        if sep and key and value and key not in out:
            out[key] = value
    return out


def parse_datadog(message: _Message) -> list[Alert]:
    """The monitor (and group) a notification is about."""
    head = _datadog_title(message)
    links = _all_links(message)
    monitor = next((m for f in links for m in [_DD_MONITOR.search(f.url)] if m), None)
    monitor_url = next((f.url for f in links if _DD_MONITOR.search(f.url)), "")
    part = next((p for p in message.parts if p.title.strip()), message.parts[0] if message.parts else None)
    if part is None or (head is None and monitor is None):
        return []
    if head:
        transition, priority = head.group("tr").title(), (head.group("prio") or "").upper()
        scope, name = (head.group("scope") or "").strip(), head.group("name").strip()
    else:
        transition, priority, scope = "", "", ""
        name = _clean(_plain(part.title)).strip()
    query = parse_qs(urlsplit(monitor_url).query) if monitor_url else {}
    group = unquote(query.get("group", [""])[0]) or scope
    fields = _fields(message)
    tags = _tags(fields.get("tags", ""))
    if transition:
        resolved = transition == "Recovered"
    else:
        resolved = _color_status(message.parts) == "resolved" or bool(re.search(r"\brecovered\b", part.title, re.I))
    labels = {**tags, **{k: v for k, v in {
        "monitor_id": monitor.group("id") if monitor else "", "transition": transition, "priority": priority,
        "group": group}.items() if v}}
    for key, value in _tags(group.replace(",", " ")).items():
        labels.setdefault(key, value)
    severity = severity_of(priority) or ("warning" if "Warn" in transition else None)
    plain_body = "\n".join(_clean(_plain(p.text)) for p in message.parts if p.text).strip()
    started = re.search(r"last triggered at ([A-Z][a-z]{2} [A-Z][a-z]{2} \d{1,2} \d{4} [\d:]{8} UTC)", plain_body)
    name = name or "Datadog monitor"
    out_links: list[Link] = []
    for f in links:
        title = "Source" if f.hint == "title" else _link_title(f.hint, f.label, f.url)
        _add_link(out_links, title, f.url)
    identity = {"monitor_id": labels.get("monitor_id", ""), "group": group}
    if not identity["monitor_id"]:
        identity["name"] = name
    return [Alert(
        source="datadog", fingerprint=_fp("datadog", identity), status="resolved" if resolved else "firing",
        name=name, severity=severity or "unknown",
        service=_first(labels, ("service", *_SERVICE_LABELS)),
        environment=normalise_environment(_first(labels, ("env", "environment", *_ENV_LABELS))),
        summary=name, description=_cut(plain_body), labels=labels, links=out_links,
        starts_at=_time(started.group(1)) if started else None)]


def parse_opsgenie(message: _Message) -> list[Alert]:
    """The alert `#<tinyId>: <message>` a notification is about; none named -> []."""
    links = _all_links(message)
    alert_link = next((f for f in links if _OG_URL.search(f.url)), None)
    candidates = [alert_link.label if alert_link else "", *(p.title for p in message.parts),
                  *(line for p in message.parts for line in _lines(p.text)[:3]), *(p.fallback for p in message.parts)]
    head = next((m for c in candidates if c for m in [_OG_TITLE.search(_clean(_plain(c)).strip())] if m), None)
    alert_id = _OG_URL.search(alert_link.url).group("id") if alert_link else ""
    if head is None and not alert_id:
        return []
    name = head.group("message").strip() if head else _clean(_plain(candidates[0] or "")).strip()
    name = name or "Opsgenie alert"
    fields = _fields(message)
    said = _plain("\n".join(p.pretext + "\n" + p.text + "\n" + p.fallback for p in message.parts))
    state = _state(fields.get("status", "") or fields.get("state", ""), _OG_STATES) or _state(said, _OG_STATES)
    if state is None:
        state = "closed" if _color_status(message.parts) == "resolved" else "open"
    priority = fields.get("priority", "")
    tags_text = fields.get("tags", "")
    tags = _tags(tags_text)
    labels = {**tags, **{k: v for k, v in {
        "tiny_id": head.group("tiny") if head else "", "alert_id": alert_id, "state": state,
        "priority": priority.upper(), "tags": tags_text, "entity": fields.get("entity", ""),
        "opsgenie_source": fields.get("source", ""), "teams": fields.get("teams") or fields.get("responders")
        or fields.get("routed teams") or ""}.items() if v}}
    out_links: list[Link] = []
    if alert_link:
        _add_link(out_links, "Source", alert_link.url)
    for f in links:
        if not _OG_URL.search(f.url) and f.hint != "button":
            _add_link(out_links, _link_title(f.hint, f.label, f.url), f.url)
    identity = {"tiny_id": labels.get("tiny_id", "")} if head else {"alert_id": alert_id}
    return [Alert(
        source="opsgenie", fingerprint=_fp("opsgenie", identity),
        status="resolved" if state == "closed" else "firing", name=name,
        severity=severity_of(priority) or "unknown",
        service=_first(labels, ("service", *_SERVICE_LABELS)),
        environment=normalise_environment(_first(labels, ("env", "environment", *_ENV_LABELS))),
        summary=name, description=_cut(fields.get("description", "")), labels=labels, links=out_links)]


def _capped(alert: Alert) -> Alert:
    """Names and summaries fit a card line (a 40k-character title is still an alert, not a name)."""
    if len(alert.name) <= MAX_NAME and len(alert.summary) <= MAX_NAME:
        return alert
    return alert.model_copy(update={"name": _cut(alert.name, MAX_NAME), "summary": _cut(alert.summary, MAX_NAME)})


PARSERS: dict[str, Callable[[_Message], list[Alert]]] = {
    "alertmanager": parse_alertmanager, "grafana": parse_grafana, "pagerduty": parse_pagerduty,
    "datadog": parse_datadog, "opsgenie": parse_opsgenie,
}


def parse_integration_message(event: dict) -> list[Alert]:
    """The alerts a bot message from a known integration announces; [] for anything else. Never raises."""
    try:
        message = _unwrap(event)
        if message is None or not _is_bot(message) or _is_reply(message):
            return []
        read = _read(message)
        if not read.parts:
            return []
        source = _detect_source(read)
        if source is None:
            return []
        return [_capped(alert) for alert in PARSERS[source](read)[:MAX_ALERTS]]
    except Exception:  # a message we misread must not take the event handler down with it
        log.warning("could not parse an integration message (ts=%s)",
                    event.get("ts") if isinstance(event, dict) else None, exc_info=True)
        return []
