"""`warroom shell`: the terminal adapter (like Hubot's shell). Type what you would type in Slack; cards
are rendered as text; `approve N` / `reject N` click the buttons of the latest plan."""
from __future__ import annotations

import asyncio
import getpass
import itertools
import re
import sys
import threading
import time
from typing import TextIO

from bot.outbox import OutboxDispatcher
from bot.runtime import Runtime
from engine.cards import (AlertActionsBlock, Card, CitationsBlock, HypothesesBlock, LearnBlock, LinksBlock,
                          StepsBlock, TextBlock, alert_action_label, factor_breakdown)
from engine.models import Actor, ChatMessage, StepDecision
from engine.planner import risk_label
from engine.ports import PostedMessage
from handlers.approval import decide, step_by_index
from handlers.command import handle_message

PLATFORM = "shell"
_CLICK = re.compile(r"^(approve|reject)\s+(\d+)$", re.I)


def render_text(card: Card) -> str:
    lines = [f"== {card.title} =="]
    for block in card.blocks:
        if isinstance(block, TextBlock):
            prefix = {"warning": "! ", "error": "x ", "success": "ok ", "muted": "  "}.get(block.style, "")
            lines.extend(prefix + line for line in block.text.splitlines())
        elif isinstance(block, HypothesesBlock):
            lines.append("Hypotheses:" if block.items else "Hypotheses: none with enough evidence")
            for i, h in enumerate(block.items, 1):
                lines.append(f"  {i}. {h.title}  (confidence {h.confidence:.2f})")
                if h.cause:
                    lines.append(f"     {h.cause}")
                for e in h.evidence:
                    lines.append(f"     - {e.kind}: {e.text}" + (f"  [{e.source}]" if e.source else ""))
                lines.append(f"     score: {factor_breakdown(h)}")
        elif isinstance(block, CitationsBlock):
            lines.append("Sources:")
            for i, c in enumerate(block.items, 1):
                lines.append(f"  [{i}] {c.title} — {c.source} (doc {c.document_id}, chunk {c.chunk_id}, "
                             f"score {c.score:.3f})")
        elif isinstance(block, StepsBlock):
            lines.append(block.title)
            lines.extend(_step_line(s) for s in block.items)
        elif isinstance(block, LinksBlock):
            lines.extend(f"  {link.title}: {link.url}" for link in block.items)
        elif isinstance(block, AlertActionsBlock):  # alert threads live in Slack and Teams, not here
            lines.append("  [" + "] [".join(alert_action_label(block, a) for a in block.actions) + "]")
        elif isinstance(block, LearnBlock):
            lines.extend(_learn_lines(block))
    return "\n".join(lines)


def _learn_lines(block: LearnBlock) -> list[str]:
    """The runbook-learning buttons as the commands that do the same."""
    if "draft" in block.actions:
        return ["  `learn` drafts a runbook from this incident"]
    n = block.draft_id
    commands = {"approve": f"`learn approve {n}`", "edit": f"`learn edit {n} <yaml>`", "reject": f"`learn reject {n}`"}
    shown = [commands[a] for a in block.actions if a in commands]
    return ["  " + " / ".join(shown)] if shown else []


def _step_line(step) -> str:
    where = f"{step.connector}{' @ ' + step.target if step.target else ''}"
    line = f"  {step.index}. {step.title} [{risk_label(step.risk)} · {where}] {step.status}"
    if step.flow:
        line += f" ({step.flow})"
    if "retry" in step.actions:
        line += f" — `approve {step.index}` retries it (check its effect first)"
    elif step.actions:
        line += f" — `approve {step.index}` / `reject {step.index}`"
    if step.note:
        line += f"\n     {step.note}"
    return line


class TextPort:
    """ChatPort printing to a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    async def post(self, channel: str, card: Card, *, thread_id: str | None = None,
                   ref: str | None = None) -> PostedMessage:
        with self._lock:
            print("\n" + render_text(card), file=self.out, flush=True)
        return PostedMessage(message_id=f"m{next(self._ids)}", thread_id=thread_id)

    async def update(self, channel: str, message_id: str, card: Card, *, ref: str | None = None) -> None:
        steps = [b for b in card.blocks if isinstance(b, StepsBlock)]
        with self._lock:
            print("\n(plan updated)", file=self.out)
            for block in steps:
                print("\n".join(_step_line(s) for s in block.items), file=self.out, flush=True)


class _Background:
    """The outbox dispatcher on its own event loop thread."""

    def __init__(self, dispatcher: OutboxDispatcher) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.dispatcher = dispatcher
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.dispatcher.run(self.stop))

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=10)


def run_shell(runtime: Runtime, *, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
              settle_timeout: float = 60.0) -> int:
    services = runtime.services
    user = getpass.getuser()
    channel = f"shell-{user}"
    actor = Actor(id=user, platform=PLATFORM, name=user)
    background = _Background(OutboxDispatcher(services.pool, {PLATFORM: TextPort(stdout)}, poll_interval=0.1))
    background.start()
    interactive = stdin.isatty()
    print("warroom shell — type what you would type in Slack; `help`; `approve N`; Ctrl-D to quit.",
          file=stdout, flush=True)
    try:
        while True:
            if interactive:
                print("warroom> ", end="", file=stdout, flush=True)
            line = stdin.readline()
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            if line.lower() in ("quit", "exit"):
                break
            click = _CLICK.match(line)
            if click:
                _click(services, channel, actor, approve=click.group(1).lower() == "approve",
                       index=int(click.group(2)), out=stdout)
            else:
                handle_message(services, ChatMessage(platform=PLATFORM, channel=channel, text=line, user=actor))
            _settle(services, channel, timeout=settle_timeout if not interactive else 2.0)
    finally:
        _settle(services, channel, timeout=settle_timeout)
        background.close()
    return 0


def _click(services, channel: str, actor: Actor, *, approve: bool, index: int, out: TextIO) -> None:
    step_id = step_by_index(services, platform=PLATFORM, channel=channel, index=index)
    if step_id is None:
        print(f"No step {index} in the latest plan here.", file=out, flush=True)
        return
    reply = decide(services, StepDecision(step_id=step_id, approve=approve, actor=actor, channel=channel))
    print(("" if reply.ok else "! ") + reply.text, file=out, flush=True)


def _settle(services, channel: str, *, timeout: float) -> None:
    """Wait until this channel's messages are out and its steps have finished (scripted use)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with services.pool.connection() as conn:
            row = conn.execute(
                """SELECT (SELECT count(*) FROM outbox WHERE platform = %s AND channel = %s AND status = 'pending')
                        + (SELECT count(*) FROM plan_steps s JOIN plans p ON p.id = s.plan_id
                           WHERE p.platform = %s AND p.channel = %s AND s.status IN ('queued', 'running')) AS busy""",
                (PLATFORM, channel, PLATFORM, channel)).fetchone()
        if row["busy"] == 0:
            return
        time.sleep(0.1)
