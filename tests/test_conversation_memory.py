"""Conversation memory: within a thread, what was ruled out, approved and run shapes the next answer (offline and
with a model); across threads, an ended conversation is recalled as a precedent with its link."""
import json
from datetime import datetime, timedelta, timezone

import pytest

from bot.metrics import Metrics
from bot.runtime import make_llm_provider
from bot.settings import Settings
from engine.config import WarroomConfig
from engine.knowledge import ingest
from engine.memory import from_turns, ruled_out_phrases, skip_ran_steps
from engine.models import Actor, ChatMessage, Plan, PlanStep, StepDecision
from handlers.approval import decide
from handlers.command import handle_message
from handlers.feedback import record_feedback
from storage import alerts as alert_store
from tests.anthropic_standin import AnthropicStandIn
from tests.conftest import make_services, run_worker_burst, runbook_yaml
from tests.outbox_helpers import deliver_to_slack
from tests.slack_standin import SlackStandIn

CHANNEL = "C0OPS"
DEPLOY = "Recent deploy of payments-api v2.14.0"
RUNBOOK = "Payments API elevated 5xx rate"
PLANTED = "hunter2-planted-memory-pw"
ALICE = Actor(id="U0ALICE", platform="slack", name="alice")
BOB = Actor(id="U0BOB", platform="slack", name="bob")


@pytest.fixture
def slack():
    with SlackStandIn(rate_limit=False) as standin:
        yield standin


@pytest.fixture
def memory_services(pool, embedder, redis_url, tmp_path, http_target):
    config = WarroomConfig.model_validate({"policy": {"approvers": ["U0ALICE"], "auto_run_read_only": False}})
    services = make_services(pool, embedder, config, redis_url)
    (tmp_path / "rb").mkdir()
    (tmp_path / "rb/rb.yaml").write_text(runbook_yaml(f"http://127.0.0.1:{http_target.server_port}/health"))
    ingest(pool, embedder, [tmp_path / "rb"])
    with pool.connection() as conn, conn.transaction():
        alert_store.insert_change(conn, change={
            "service": "payments-api", "kind": "deploy", "summary": "payments-api v2.14.0 rolled out",
            "version": "v2.14.0", "author": "ci", "at": datetime.now(timezone.utc) - timedelta(minutes=8)},
            workspace="default")
    return services


def _ask(services, text, *, thread=None, user=ALICE, context=()):
    handle_message(services, ChatMessage(platform="slack", channel=CHANNEL, text=text, user=user, thread=thread,
                                         thread_context=list(context)))
    with services.pool.connection() as conn:
        return conn.execute("SELECT * FROM outbox WHERE op = 'post' AND card->>'kind' = 'annotation' "
                            "ORDER BY id DESC LIMIT 1").fetchone()


def _hypotheses(row) -> list[dict]:
    return next(b for b in row["card"]["blocks"] if b["type"] == "hypotheses")["items"]


def _steps(row) -> list[str]:
    block = next((b for b in row["card"]["blocks"] if b["type"] == "steps"), None)
    return [s["title"] for s in block["items"]] if block else []


def _texts(row) -> str:
    return "\n".join(b.get("text", "") for b in row["card"]["blocks"] if b["type"] == "text")


def _posted(services, key):
    with services.pool.connection() as conn:
        return conn.execute("SELECT * FROM chat_messages WHERE key = %s", (key,)).fetchone()


def _step_id(services, plan_id, key):
    with services.pool.connection() as conn:
        return conn.execute("SELECT id FROM plan_steps WHERE plan_id = %s AND key = %s", (plan_id, key)
                            ).fetchone()["id"]


def test_a_thread_remembers_what_was_ruled_out_and_run_and_a_later_thread_recalls_it(
        memory_services, slack, db_url, redis_url):
    services = memory_services
    first = _ask(services, "diagnose payments-api is returning 500 errors")
    titles = [h["title"] for h in _hypotheses(first)]
    assert titles[:2] == [DEPLOY, RUNBOOK], titles
    plan_key = first["message_key"]
    assert plan_key.startswith("plan:") and first["thread_id"] is None
    first_plan = int(plan_key.split(":")[1])
    deliver_to_slack(services.pool, slack)
    card_ts = _posted(services, plan_key)["message_id"]

    # bob 👎s the runbook's cause on the card; someone in the thread writes "not the deploy"
    record_feedback(services, actor=BOB, title=RUNBOOK, service="payments-api", helpful=False, channel=CHANNEL,
                    message_id=card_ts, thread_id=None)
    second = _ask(services, "what else could it be?", thread=card_ts,
                  context=["diagnose payments-api is returning 500 errors", "not the deploy, we rolled back already"])
    assert second["thread_id"] == card_ts
    by_title = {h["title"]: h for h in _hypotheses(second)}
    notes = {t: [e["text"] for e in h["evidence"] if e["kind"] == "thread" and e["text"].startswith("Ruled out")]
             for t, h in by_title.items()}
    assert notes[RUNBOOK] == ["Ruled out earlier in this thread by bob"]
    assert notes[DEPLOY] and notes[DEPLOY][0].startswith("Ruled out earlier in this thread by someone (“not the deploy")
    before = {h["title"]: h["confidence"] for h in _hypotheses(first)}
    assert by_title[DEPLOY]["confidence"] < before[DEPLOY] and by_title[RUNBOOK]["confidence"] < before[RUNBOOK]
    thread_link = _posted(services, plan_key)["permalink"]
    assert thread_link and by_title[RUNBOOK]["evidence"][0]["source"] == thread_link
    # a live cause, if any, ranks above the ruled-out ones
    order = [h["title"] for h in _hypotheses(second)]
    assert order.index(DEPLOY) >= len(order) - 2 and order.index(RUNBOOK) >= len(order) - 2

    # approve and run the health check of the first plan with a real worker
    assert decide(services, StepDecision(step_id=_step_id(services, first_plan, "check-health"), approve=True,
                                         actor=ALICE)).ok
    run_worker_burst(db_url, redis_url)
    third = _ask(services, "diagnose payments-api 500s, what next?", thread=card_ts)
    assert "Check the health endpoint" not in _steps(third) and "Restart payments-api" in _steps(third)
    assert "Already ran in this thread: Check the health endpoint — succeeded " in _texts(third)
    assert "GET http://127.0.0.1:" in _texts(third)   # the step's own result is cited
    with services.pool.connection() as conn:
        kinds = [r["kind"] for r in conn.execute(
            "SELECT kind FROM conversation_turns WHERE thread_key = %s ORDER BY id", (plan_key,))]
    assert kinds[:2] == ["asked", "answered"] and {"ruled_out", "approved", "step_result"} <= set(kinds)

    # the first plan's last step is rejected: nothing left to decide, the conversation has ended
    assert decide(services, StepDecision(step_id=_step_id(services, first_plan, "restart"), approve=False,
                                         actor=ALICE)).ok
    other = _ask(services, "diagnose payments-api returning 500 errors again", user=Actor(id="U0CAROL",
                                                                                         platform="slack"))
    assert other["message_key"] != plan_key
    text = _texts(other)
    assert "Similar earlier conversation: Earlier thread of " in text and thread_link in text, text
    precedents = [e for h in _hypotheses(other) for e in h["evidence"] if e["kind"] == "precedent"]
    assert any(e["source"] == thread_link for e in precedents)
    deliver_to_slack(services.pool, slack)
    assert slack.violations == []


def test_the_model_gets_the_conversation_so_far_redacted(memory_services, slack):
    services = memory_services
    first = _ask(services, "diagnose payments-api is returning 500 errors")
    deliver_to_slack(services.pool, slack)
    card_ts = _posted(services, first["message_key"])["message_id"]
    record_feedback(services, actor=BOB, title=DEPLOY, service="payments-api", helpful=False, channel=CHANNEL,
                    message_id=card_ts)
    _ask(services, f"diagnose it: the db login uses password={PLANTED} and still 500s", thread=card_ts)

    with AnthropicStandIn() as api:
        settings = Settings(_env_file=None, llm="anthropic", anthropic_api_key="sk-ant-test-key-for-the-standin-0000",
                            anthropic_base_url=api.url, anthropic_model="claude-test", llm_budget_s=5.0)
        provider = make_llm_provider(settings, Metrics())
        try:
            services.provider = provider
            _ask(services, "what else?", thread=card_ts)
        finally:
            provider.close()
        [request] = [m for m in api.messages() if m["tool_choice"]["name"] == "propose_hypotheses"]
    volatile = request["messages"][0]["content"][-1]["text"]
    assert "<conversation>" in volatile and "</conversation>" in volatile
    block = volatile[volatile.index("<conversation>"):volatile.index("</conversation>")]
    turns = [json.loads(line) for line in block.splitlines()[1:] if line.strip()]
    assert [t["kind"] for t in turns][:3] == ["asked", "answered", "ruled_out"]
    assert any(t["kind"] == "ruled_out" and DEPLOY in t["text"] and t["actor"] == "bob" for t in turns)
    assert PLANTED not in json.dumps(request) and "[REDACTED]" in block


def test_ruled_out_phrases_and_steps_that_already_ran():
    assert ruled_out_phrases("not the deploy, what else?") == ["deploy"]
    assert ruled_out_phrases("we ruled out the db pool.") == ["db pool"]
    assert ruled_out_phrases("It is not DNS") == ["dns"]
    assert ruled_out_phrases("the database is fine") == ["database"]
    assert ruled_out_phrases("it's the deploy") == [] and ruled_out_phrases("what is going on?") == []
    turns = [{"kind": "step_result", "text": "x", "at": datetime(2026, 11, 25, 10, 42, tzinfo=timezone.utc),
              "refs": {"title": "Restart payments-api", "key": "restart", "runbook": "rb", "connector": "http",
                       "target": None, "status": "succeeded", "summary": "200 OK"}}]
    memory = from_turns("plan:1", turns)
    plan = Plan(runbook_id="rb", title="Payments", steps=[
        PlanStep(key="restart", title="Restart payments-api", connector="http", risk="state_change"),
        PlanStep(key="verify", title="Verify", connector="http", risk="read_only", needs=["restart"])])
    kept, notes = skip_ran_steps(plan, memory)
    assert [s.key for s in kept.steps] == ["verify"] and kept.steps[0].needs == []
    assert notes == ["Already ran in this thread: Restart payments-api — succeeded 10:42: 200 OK"]
