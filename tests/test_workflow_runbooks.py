"""Workflow runbooks: steps with `needs:` and `parallel:` run as a DAG on real `warroom worker` processes.

A graph with a cycle or an unknown need is refused at ingest, naming it; parallel steps run at the same time
(a target that answers neither until both have arrived proves it, without timing anything); a failure stops
the rest and rolls back what completed, last first; and a plan whose workers (and queue) were lost mid-way
carries on from the database when new workers start, without running again what already succeeded."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from redis import Redis
from rq.suspension import suspend

from connectors.recovery import sweep_url
from engine.config import WarroomConfig
from engine.knowledge import ingest
from engine.models import Actor, ChatMessage, StepDecision
from handlers.approval import decide
from handlers.command import handle_message
from storage import audit
from storage import plans as plan_store
from tests.conftest import make_services, run_worker_burst
from tests.test_worker_crash import FAST_TIMING, Workers, wait_for

QUESTION = "why is payments-api returning 500s in staging?"
ALICE = Actor(id="alice")


# --- a target that records arrivals and meets the parallel steps at a barrier -------------------------------

class _Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int) -> None:
        body = json.dumps({"ok": status < 400}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target: "MeetingTarget" = self.server.target
        with target.lock:
            target.hits.append(f"{self.command} {self.path}")
        status = 500 if self.path.startswith("/fail") else 200
        if self.path.startswith("/together/"):
            # Neither request is answered until the other one has arrived too: two steps that did not run at the
            # same time fail here instead (after the wait gives up), so their success proves they overlapped.
            try:
                target.barrier.wait()
            except threading.BrokenBarrierError:
                status = 504
        if self.path.startswith("/hold"):
            target.held.set()
            target.release.wait(60)
        self._answer(status)

    do_GET = do_POST = _handle   # noqa: N815 (http.server's naming)

    def log_message(self, *args):
        pass


class MeetingTarget:
    def __init__(self, parties: int = 2) -> None:
        self.hits: list[str] = []
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(parties, timeout=60)
        self.held, self.release = threading.Event(), threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.target = self
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.barrier.abort()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target():
    t = MeetingTarget()
    yield t
    t.close()


# --- runbooks and plans, the way users make them -------------------------------------------------------------

def runbook(*steps: dict) -> dict:
    return {"apiVersion": "warroom/v1", "kind": "Runbook",
            "metadata": {"id": "payments-drain", "title": "Payments API: drain and recover",
                         "services": ["payments-api"], "alerts": ["PaymentsHighErrorRate"]},
            "description": "payments-api returns 500 errors. Usual causes: a bad deploy, an exhausted database pool.",
            "steps": list(steps)}


def step(key: str, method: str, url: str, *, risk: str = "state_change", **more) -> dict:
    return {"id": key, "title": key.replace("-", " ").capitalize(), "connector": "http", "risk": risk,
            "target": "web", "with": {"method": method, "url": url}, **more}


def undo(url: str) -> dict:
    return {"connector": "http", "with": {"method": "POST", "url": url}}


class Scenario:
    """A runbook ingested from disk, a plan asked for in chat, a worker config that agrees with the services."""

    def __init__(self, pool, embedder, redis_url, db_url, tmp_path: Path, target: MeetingTarget, spec: dict,
                 policy: dict | None = None):
        self.pool, self.db_url, self.redis_url, self.tmp_path = pool, db_url, redis_url, tmp_path
        settings = {"policy": {"approvers": ["alice", "bob"], "auto_run_read_only": False, **(policy or {})},
                    "targets": {"web": {"connector": "http", "base_url": target.base_url}}}
        self.config_path = tmp_path / "warroom.yml"
        self.config_path.write_text(yaml.safe_dump(settings))
        self.services = make_services(pool, embedder, WarroomConfig.model_validate(settings), redis_url)
        (tmp_path / "runbooks").mkdir()
        (tmp_path / "runbooks" / "rb.yaml").write_text(yaml.safe_dump(spec))
        report = ingest(pool, embedder, [tmp_path / "runbooks"])
        assert not report.errors, report.errors
        handle_message(self.services, ChatMessage(platform="shell", channel="c1", text=QUESTION,
                                                  user=Actor(id="carol")))

    def approve(self, key: str) -> str:
        reply = decide(self.services, StepDecision(step_id=self.steps()[key]["id"], approve=True, actor=ALICE))
        assert reply.ok, reply.text
        return reply.text

    def steps(self) -> dict[str, dict]:
        with self.pool.connection() as conn:
            return {r["key"]: r for r in conn.execute("SELECT * FROM plan_steps ORDER BY ordinal")}

    def statuses(self) -> dict[str, str]:
        return {k: r["status"] for k, r in self.steps().items()}

    def audit_rows(self, action: str) -> list[dict]:
        with self.pool.connection() as conn:
            assert audit.verify(conn).ok
            return [r for r in conn.execute("SELECT * FROM audit_log WHERE action = %s ORDER BY id", (action,))]

    def card_items(self) -> list[dict]:
        with self.pool.connection() as conn:
            card = conn.execute("SELECT card FROM plans ORDER BY id DESC LIMIT 1").fetchone()["card"]
        return [b for b in card["blocks"] if b["type"] == "steps"][0]["items"]

    def posts(self) -> list[str]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT card FROM outbox WHERE op = 'post' ORDER BY id").fetchall()
        return [json.dumps(r["card"]) for r in rows]


@pytest.fixture
def scenario(pool, embedder, redis_url, db_url, tmp_path, target):
    return lambda spec, **kw: Scenario(pool, embedder, redis_url, db_url, tmp_path, target, spec, **kw)


@pytest.fixture
def workers(db_url, redis_url, tmp_path):
    w = Workers(db_url, redis_url, tmp_path)
    w.env["WARROOM_CONFIG"] = str(tmp_path / "warroom.yml")
    yield w
    w.close()


DRAIN = runbook(
    step("check", "GET", "/check", risk="read_only"),
    step("drain-a", "POST", "/together/drain-a", parallel="drain"),
    step("drain-b", "POST", "/together/drain-b", parallel="drain"),
    step("confirm", "GET", "/confirm", risk="read_only"))


# --- validation ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps, error", [
    ([step("a", "GET", "/a", needs=["b"]), step("b", "GET", "/b", needs=["a"])], "needs form a cycle: a -> b -> a"),
    ([step("a", "GET", "/a"), step("b", "GET", "/b", needs=["nope"])], "step 'b' needs unknown step 'nope'"),
    ([step("a", "GET", "/a", needs=["a"])], "step 'a' needs itself"),
    ([step("a", "GET", "/a", needs=["c"]), step("b", "GET", "/b", needs=["a"]), step("c", "GET", "/c", needs=["b"])],
     "needs form a cycle: a -> c -> b -> a"),
    ([step("a", "GET", "/a", parallel="p"), step("b", "GET", "/b"), step("c", "GET", "/c", parallel="p")],
     "parallel group 'p' is split"),
])
def test_a_graph_that_is_not_a_dag_is_refused_at_ingest_and_nothing_is_stored(pool, embedder, tmp_path, steps,
                                                                                error):
    (tmp_path / "rb.yaml").write_text(yaml.safe_dump(runbook(*steps)))
    report = ingest(pool, embedder, [tmp_path])
    assert len(report.errors) == 1 and "\n" not in report.errors[0]
    assert error in report.errors[0] and report.errors[0].startswith(str(tmp_path / "rb.yaml"))
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM documents").fetchone()["n"] == 0
        assert conn.execute("SELECT count(*) AS n FROM runbooks").fetchone()["n"] == 0


def test_the_plan_records_each_steps_needs_and_the_card_shows_them(scenario, target):
    s = scenario(DRAIN)
    steps = s.steps()
    assert [(k, r["needs"], r["parallel_group"]) for k, r in steps.items()] == [
        ("check", [], None), ("drain-a", ["check"], "drain"), ("drain-b", ["check"], "drain"),
        ("confirm", ["drain-a", "drain-b"], None)]
    assert [i["flow"] for i in s.card_items()] == [None, "after 1 · parallel: drain", "after 1 · parallel: drain",
                                                   "after 2, 3"]
    # approving a step whose needs have not run yet records the approval; the step waits
    assert "runs once check has succeeded" in s.approve("drain-a")
    assert s.statuses() == {"check": "proposed", "drain-a": "approved", "drain-b": "proposed",
                            "confirm": "proposed"}
    assert s.audit_rows("step.approved")[-1]["detail"]["waiting_on"] == ["check"]
    assert s.audit_rows("step.dispatched") == []


# --- running together ---------------------------------------------------------------------------------------

def test_parallel_steps_run_together_on_two_workers_and_the_next_waits_for_both(scenario, target, workers):
    s = scenario(DRAIN)
    for key in ("check", "drain-a", "drain-b", "confirm"):   # approved up front; each runs when its needs are done
        s.approve(key)
    workers.start()
    workers.start()
    wait_for(lambda: s.statuses()["confirm"] in ("succeeded", "failed", "skipped"), "the plan to finish")
    steps = s.steps()
    assert {k: r["status"] for k, r in steps.items()} == dict.fromkeys(steps, "succeeded"), \
        {k: r["result"] for k, r in steps.items()}
    # both drains were answered, which the target does only once both are in: they ran at the same time,
    # in two different work horses
    assert steps["drain-a"]["worker"] != steps["drain-b"]["worker"]
    assert target.hits[0] == "GET /check" and target.hits[-1] == "GET /confirm"
    assert sorted(target.hits[1:3]) == ["POST /together/drain-a", "POST /together/drain-b"]
    # the worker that finished check queued both drains in one go; confirm was queued only after both
    assert steps["confirm"]["queued_at"] > max(steps["drain-a"]["finished_at"], steps["drain-b"]["finished_at"])
    assert all(r["attempts"] == 1 for r in steps.values())


# --- stop on failure ----------------------------------------------------------------------------------------

FAILING = runbook(
    step("scale-a", "POST", "/scale-a", parallel="scale", rollback=undo("/undo/scale-a")),
    step("scale-b", "POST", "/scale-b", parallel="scale", rollback=undo("/undo/scale-b")),
    step("check", "GET", "/check", risk="read_only"),
    step("migrate", "POST", "/fail/migrate", rollback=undo("/undo/migrate")),
    step("notify", "POST", "/notify", rollback=undo("/undo/notify")),
    step("announce", "POST", "/announce", needs=["scale-a"]))


def test_a_failure_stops_the_rest_and_rolls_back_the_completed_steps_last_first(scenario, target):
    target.barrier = threading.Barrier(1)   # one burst worker runs the two scale steps one after the other
    s = scenario(FAILING)
    for key in ("scale-a", "scale-b", "check", "migrate", "notify"):   # announce is left unapproved
        s.approve(key)
    run_worker_burst(s.db_url, s.redis_url, s.config_path)
    st = s.statuses()
    assert st == {"scale-a": "succeeded", "scale-b": "succeeded", "check": "succeeded", "migrate": "failed",
                  "notify": "skipped", "announce": "skipped", "migrate-rollback": "succeeded",
                  "scale-b-rollback": "succeeded", "scale-a-rollback": "succeeded"}
    forward = [h for h in target.hits if h.startswith("POST /scale")]
    assert len(forward) == 2
    undone = [h for h in target.hits if "/undo/" in h]
    # reverse completion order: the failed step first, then the scale steps in the opposite order they ran in
    # (the read-only check changed nothing and has no rollback)
    assert undone == ["POST /undo/migrate"] + [h.replace("/scale", "/undo/scale") for h in reversed(forward)]
    assert "POST /notify" not in target.hits and "POST /announce" not in target.hits
    steps = s.steps()
    assert steps["notify"]["refusal"] == "skipped: step migrate failed"
    assert [r["detail"]["key"] for r in s.audit_rows("step.skipped")] == ["notify", "announce"]
    planned = s.audit_rows("step.rollback_planned")
    assert [(r["detail"]["key"], r["detail"]["after"]) for r in planned] == [
        ("migrate-rollback", []), (f"{forward[1][6:]}-rollback", ["migrate-rollback"]),
        (f"{forward[0][6:]}-rollback", [f"{forward[1][6:]}-rollback"])]
    assert any("Rolling back in reverse order, automatically" in p for p in s.posts())
    card = {i["title"]: i for i in s.card_items()}
    assert card["Notify"]["status"] == "skipped" and card["Notify"]["actions"] == []


def test_with_auto_rollback_off_the_chain_is_proposed_and_each_rollback_waits_for_the_one_before(scenario, target):
    s = scenario(runbook(step("scale", "POST", "/scale", rollback=undo("/undo/scale")),
                         step("migrate", "POST", "/fail/migrate", rollback=undo("/undo/migrate"), needs=["scale"])),
                 policy={"auto_rollback": False})
    s.approve("scale")
    s.approve("migrate")
    run_worker_burst(s.db_url, s.redis_url, s.config_path)
    assert s.statuses() == {"scale": "succeeded", "migrate": "failed", "migrate-rollback": "proposed",
                            "scale-rollback": "proposed"}
    assert [h for h in target.hits if "/undo/" in h] == []   # nothing undone without a click
    # approving the later rollback first: it waits for the earlier one
    assert "runs once migrate-rollback has succeeded" in s.approve("scale-rollback")
    run_worker_burst(s.db_url, s.redis_url, s.config_path)
    assert s.statuses()["scale-rollback"] == "approved" and [h for h in target.hits if "/undo/" in h] == []
    s.approve("migrate-rollback")
    run_worker_burst(s.db_url, s.redis_url, s.config_path)
    assert s.statuses()["migrate-rollback"] == s.statuses()["scale-rollback"] == "succeeded"
    assert [h for h in target.hits if "/undo/" in h] == ["POST /undo/migrate", "POST /undo/scale"]


# --- resume after a restart -----------------------------------------------------------------------------------

def test_a_plan_resumes_after_its_workers_and_queue_are_lost_without_rerunning_what_succeeded(
        scenario, target, workers, redis_url):
    spec = runbook(step("check", "GET", "/hold/check", risk="read_only"),
                   *DRAIN["steps"][1:])
    s = scenario(spec)
    for key in ("check", "drain-a", "drain-b", "confirm"):
        s.approve(key)
    first = workers.start()
    assert target.held.wait(60), "check never reached the target"
    redis = Redis.from_url(redis_url)
    suspend(redis)              # the worker takes no further job once check is done...
    target.release.set()
    wait_for(lambda: s.statuses()["drain-b"] == "queued", "check to succeed and queue the drains")
    workers.kill_all_of(first)  # ...and dies there: check succeeded, the drains are queued, nothing else ran
    redis.flushall()            # a restarted (embedded) Redis comes back empty: only the database remembers
    assert s.statuses() == {"check": "succeeded", "drain-a": "queued", "drain-b": "queued", "confirm": "approved"}

    workers.env["WARROOM_REQUEUE_GRACE"] = "0.5"   # the new workers' sweepers notice the lost jobs quickly
    workers.start()
    workers.start()
    wait_for(lambda: s.statuses()["confirm"] in ("succeeded", "failed", "skipped"), "the plan to finish")
    steps = s.steps()
    assert {k: r["status"] for k, r in steps.items()} == dict.fromkeys(steps, "succeeded"), \
        {k: r["result"] for k, r in steps.items()}
    assert target.hits.count("GET /hold/check") == 1 and steps["check"]["attempts"] == 1
    assert sorted(target.hits[1:3]) == ["POST /together/drain-a", "POST /together/drain-b"]
    assert target.hits[-1] == "GET /confirm"
    assert {r["detail"]["key"] for r in s.audit_rows("step.requeued")} == {"drain-a", "drain-b"}
    redis.close()


def test_the_sweeper_queues_approved_steps_whose_needs_succeeded(scenario, target, redis_url):
    """The checkpoint read back: whatever left a ready, approved step unqueued, a sweep queues and enqueues it."""
    s = scenario(runbook(step("first", "GET", "/first", risk="read_only"),
                         step("second", "POST", "/second", needs=["first"])))
    s.approve("first")
    s.approve("second")                        # waits for first
    first = s.steps()["first"]
    with s.pool.connection() as conn, conn.transaction():
        # first's worker got as far as recording success and died before looking at the plan (an older
        # worker, or one whose plan pass failed): the row says succeeded, nothing queued second
        plan_store.transition(conn, first["id"], from_=["queued"], to="running", worker="gone:1")
        plan_store.transition(conn, first["id"], from_=["running"], to="succeeded", result={"summary": "ok"})
    assert s.statuses() == {"first": "succeeded", "second": "approved"}
    report = sweep_url(s.db_url, Redis.from_url(redis_url), FAST_TIMING)
    assert report.resumed == [s.steps()["second"]["id"]]
    assert s.statuses()["second"] == "queued"
    assert [r["subject"] for r in s.audit_rows("plan.resumed")] == [f"plan:{first['plan_id']}"]
    assert sweep_url(s.db_url, Redis.from_url(redis_url), FAST_TIMING).resumed == []   # once
    run_worker_burst(s.db_url, s.redis_url, s.config_path)
    assert s.statuses() == {"first": "succeeded", "second": "succeeded"}
    assert target.hits == ["POST /second"]    # first never ran here: it was only recorded


def test_a_sibling_still_running_at_the_failure_finishes_first_and_is_rolled_back_first(scenario, target, workers):
    s = scenario(runbook(
        step("slow", "POST", "/hold/slow", parallel="change", rollback=undo("/undo/slow")),
        step("bad", "POST", "/fail/bad", parallel="change", rollback=undo("/undo/bad")),
        step("after", "POST", "/after")))
    for key in ("slow", "bad", "after"):
        s.approve(key)
    workers.start()
    workers.start()
    wait_for(lambda: s.statuses()["bad"] == "failed", "the failing sibling to fail")
    assert target.held.is_set()
    # slow is still running: nothing is rolled back while it may still change things, nothing else starts
    assert s.statuses() == {"slow": "running", "bad": "failed", "after": "skipped"}
    target.release.set()
    wait_for(lambda: s.statuses().get("bad-rollback") in ("succeeded", "failed"), "the rollback chain to end")
    assert s.statuses() == {"slow": "succeeded", "bad": "failed", "after": "skipped",
                            "slow-rollback": "succeeded", "bad-rollback": "succeeded"}
    assert [h for h in target.hits if "/undo/" in h] == ["POST /undo/slow", "POST /undo/bad"]
    assert "POST /after" not in target.hits
