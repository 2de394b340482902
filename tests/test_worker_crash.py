"""Execution an SRE can trust: nothing lost, nothing run twice, on real `warroom worker` processes.

A worker killed with SIGKILL in the middle of a step leaves the step reported as interrupted (heartbeat lease,
audit, thread), and neither RQ's own recovery of the abandoned job nor a second worker runs it again; only a
human retry does, once. Transient failures are retried at most RETRIES times, other failures and job timeouts
never; two enqueues of a step run it once; a step whose enqueue was lost is enqueued again."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from connectors.queue import QUEUE, RETRIES, enqueue_step, job_id
from connectors.recovery import Timing, sweep_url
from engine.plans import approve_and_queue, retry_interrupted
from storage import audit
from storage import plans as plan_store
from tests.conftest import ROOT
from tests.http_helpers import send_json

# Short liveness settings so a dead worker is noticed in about a second and a half, not half a minute. The
# workers' own re-enqueueing is kept out of the way (long grace); the tests that need it sweep themselves.
FAST = {"WARROOM_HEARTBEAT_INTERVAL": "0.3", "WARROOM_STEP_LEASE": "1.5", "WARROOM_SWEEP_INTERVAL": "0.3",
        "WARROOM_REQUEUE_GRACE": "3600"}
FAST_TIMING = Timing.from_env(FAST)


# --- a loopback HTTP target that can hold a request --------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        target: "HoldingTarget" = self.server.target
        with target.lock:
            target.hits.append(self.path)
        if self.path.startswith("/hold") and target.holding:
            target.seen.set()
            target.release.wait(30)   # held until the test lets go (or gives up)
        try:
            send_json(self, 200, {"status": "ok"})
        except OSError:
            pass  # the worker holding the connection was killed

    def log_message(self, *args):
        pass


class HoldingTarget:
    """Answers GET at once, except /hold, which it holds until `release` is set, while `holding` is true."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.lock = threading.Lock()
        self.seen = threading.Event()
        self.release = threading.Event()
        self.holding = True
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.target = self
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def let_go(self) -> None:
        """From now on /hold answers at once, and the request held so far is answered."""
        self.holding = False
        self.release.set()

    def close(self) -> None:
        self.let_go()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target():
    t = HoldingTarget()
    yield t
    t.close()


# --- real worker processes ---------------------------------------------------------------------------------

def _session_members(sid: int) -> list[int]:
    """Every live process in a session. RQ's work horse calls setpgrp(), so it leaves the worker's process group
    but stays in its session: killing the session is killing the worker, its scheduler and its horse."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":   # fields after the name: state, ppid, pgrp, session
            pids.append(int(entry.name))
    return pids


class Workers:
    """`warroom worker` processes, each in its own session; all of them SIGKILLed at teardown."""

    def __init__(self, db_url: str, redis_url: str, logs: Path) -> None:
        self.env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, **FAST,
                    "WARROOM_CONFIG": str(logs / "absent.yml")}
        self.logs = logs
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"worker-{len(self.procs)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker", *args], env=self.env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def burst(self, timeout: float = 120) -> None:
        proc = self.start("--burst")
        assert proc.wait(timeout=timeout) == 0, self.log(proc)

    def kill_all_of(self, proc: subprocess.Popen) -> None:
        """SIGKILL as an OOM killer or a lost host would: worker, scheduler and horse at once."""
        for _ in range(3):  # a process forked while we were killing is caught on the next pass
            for pid in _session_members(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        proc.wait(timeout=10)
        wait_for(lambda: not _session_members(proc.pid), "the killed worker's processes to be gone")

    def log(self, proc: subprocess.Popen) -> str:
        return (self.logs / f"worker-{self.procs.index(proc)}.log").read_text()

    def close(self) -> None:
        for proc in self.procs:
            self.kill_all_of(proc)


@pytest.fixture
def workers(db_url, redis_url, tmp_path):
    w = Workers(db_url, redis_url, tmp_path)
    yield w
    w.close()


@pytest.fixture
def redis(redis_url):
    r = Redis.from_url(redis_url)
    yield r
    r.close()


def wait_for(condition, what: str, deadline: float = 60):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


# --- plans and steps ---------------------------------------------------------------------------------------

def approved_step(pool, url: str, *, timeout: float = 30) -> int:
    """A state-changing http step in a plan posted in shell channel c1, approved (queued) but not enqueued."""
    plan = {"title": "Restart payments-api", "source": "runbook",
            "steps": [{"key": "restart", "title": "Restart payments-api", "connector": "http",
                       "risk": "state_change", "params": {"method": "GET", "url": url, "timeout": timeout}}]}
    with pool.connection() as conn, conn.transaction():
        plan_id = plan_store.create_plan(conn, plan=plan, platform="shell", channel="c1", requested_by="carol")
        step_id = plan_store.plan_steps(conn, plan_id)[0]["id"]
        assert approve_and_queue(conn, step_id, actor="alice", platform="shell", reason="test") is not None
    return step_id


def step(pool, step_id: int) -> dict:
    with pool.connection() as conn:
        return plan_store.get_step(conn, step_id)


def actions(pool, step_id: int) -> list[str]:
    with pool.connection() as conn:
        return [r["action"] for r in conn.execute(
            "SELECT action FROM audit_log WHERE subject = %s ORDER BY id", (f"step:{step_id}",))]


def audit_rows(pool, step_id: int, action: str) -> list[dict]:
    with pool.connection() as conn:
        return conn.execute("SELECT * FROM audit_log WHERE subject = %s AND action = %s ORDER BY id",
                            (f"step:{step_id}", action)).fetchall()


def thread_posts(pool) -> list[dict]:
    with pool.connection() as conn:
        return [r["card"] for r in conn.execute(
            "SELECT card FROM outbox WHERE op = 'post' AND thread_key IS NOT NULL ORDER BY id")]


def running_on_worker(pool, step_id: int, target: HoldingTarget) -> dict:
    """Wait until the step is running and its HTTP request is held by the target."""
    assert target.seen.wait(60), "the step's request never reached the target"
    return wait_for(lambda: (s := step(pool, step_id))["status"] == "running" and s, "the step to be running")


def job_finished(redis: Redis, step_id: int) -> Job:
    """Wait until RQ has delivered the step's job and the delivery returned."""
    def done():
        try:
            job = Job.fetch(job_id(step_id), connection=redis)
        except Exception:
            return None
        return job if job.get_status() == JobStatus.FINISHED else None
    return wait_for(done, f"job {job_id(step_id)} to finish")


def assert_interrupted_and_reported(pool, step_id: int, worker: str) -> None:
    s = wait_for(lambda: (s := step(pool, step_id))["status"] == "interrupted" and s, "the step to be interrupted")
    assert s["attempts"] == 1 and "not re-run" in s["result"]["summary"]
    [entry] = audit_rows(pool, step_id, "step.interrupted")
    assert entry["actor"] == "warroom"
    assert entry["detail"]["worker"] == worker and entry["detail"]["last_heartbeat"]
    [post] = [p for p in thread_posts(pool) if "interrupted" in p["title"]]
    assert f"worker {worker} stopped answering" in str(post)


# --- the acceptance test: SIGKILL mid-step -----------------------------------------------------------------

def test_sigkill_mid_step_is_reported_interrupted_and_never_run_again(pool, redis, workers, target):
    step_id = approved_step(pool, target.url("/hold"))
    enqueue_step(redis, step_id)
    first = workers.start()
    running = running_on_worker(pool, step_id, target)
    horse = int(running["worker"].rsplit(":", 1)[1])
    assert horse != first.pid and horse in _session_members(first.pid)  # the step runs in RQ's forked horse

    workers.kill_all_of(first)
    # RQ still believes the job is running: nothing on RQ's side noticed the death.
    assert Job.fetch(job_id(step_id), connection=redis).get_status() == JobStatus.STARTED

    second = workers.start()   # its recovery sweep finds the silent step once the lease has passed
    assert_interrupted_and_reported(pool, step_id, running["worker"])

    # RQ's own recovery: once the dead execution's registry entry expires (a minute and a half after its last
    # heartbeat; the cutoff is moved forward here instead of waiting), a worker's maintenance moves the job to
    # FAILED or, having retries left, requeues it. The second worker then delivers it; the claim finds the step
    # interrupted and runs nothing.
    StartedJobRegistry(QUEUE, connection=redis).cleanup(timestamp=time.time() + 3600)
    job = job_finished(redis, step_id)
    assert job.return_value() == {"step_id": step_id, "status": "interrupted", "ran": False}
    assert job.retries_left == RETRIES - 1   # this was RQ's retry of the abandoned job
    assert target.hits == ["/hold"] and step(pool, step_id)["status"] == "interrupted"
    assert second.poll() is None
    with pool.connection() as conn:
        assert audit.verify(conn).ok


def test_work_horse_killed_alone_is_interrupted_not_rerun(pool, redis, workers, target):
    step_id = approved_step(pool, target.url("/hold"))
    enqueue_step(redis, step_id)
    worker = workers.start()
    running = running_on_worker(pool, step_id, target)
    os.kill(int(running["worker"].rsplit(":", 1)[1]), signal.SIGKILL)

    # The worker notices its horse died and has RQ retry the job at once; that delivery finds the step
    # running (heartbeat still fresh) or interrupted, and runs nothing. The sweeper reports it.
    assert_interrupted_and_reported(pool, step_id, running["worker"])
    wait_for(lambda: "Work-horse terminated unexpectedly" in workers.log(worker), "RQ to notice the dead horse")
    job = job_finished(redis, step_id)
    assert job.return_value()["ran"] is False
    assert target.hits == ["/hold"] and worker.poll() is None


def test_human_retry_of_an_interrupted_step_runs_it_once_more(pool, redis, workers, target):
    step_id = approved_step(pool, target.url("/hold"))
    enqueue_step(redis, step_id)
    first = workers.start()
    running = running_on_worker(pool, step_id, target)
    workers.kill_all_of(first)
    wait_for(lambda: sweep_url(workers.env["DATABASE_URL"], redis, FAST_TIMING).interrupted, "the sweep")

    target.let_go()
    with pool.connection() as conn, conn.transaction():  # two approvers click Retry at once
        clicks = [retry_interrupted(conn, step_id, who, platform="shell", reason="checked: nothing happened")
                  for who in ("alice", "bob")]
    assert clicks[0] is not None and clicks[1] is None
    enqueue_step(redis, step_id)   # the dispatch; the left-over job of the killed worker is replaced
    enqueue_step(redis, step_id)   # a duplicate dispatch adds nothing
    assert Queue(QUEUE, connection=redis).count == 1
    workers.start()

    done = wait_for(lambda: (s := step(pool, step_id))["status"] == "succeeded" and s, "the retried step")
    assert done["attempts"] == 2 and done["worker"] != running["worker"]
    assert target.hits == ["/hold", "/hold"]
    assert actions(pool, step_id) == ["step.approved", "step.dispatched", "step.started", "step.interrupted",
                                      "step.retry_approved", "step.dispatched", "step.started", "step.succeeded"]
    with pool.connection() as conn:
        assert [a["actor"] for a in plan_store.approvals_for(conn, step_id)] == ["alice", "alice"]
        assert retry_interrupted(conn, step_id, "bob", platform="shell", reason="again") is None  # not interrupted


# --- retries, failures, timeouts ---------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_transient_failure_is_retried_at_most_retries_times_then_fails(pool, redis, workers):
    step_id = approved_step(pool, f"http://127.0.0.1:{_closed_port()}/restart")  # connection refused
    enqueue_step(redis, step_id)
    workers.burst()   # RQ's retries are plain requeues, so a burst worker works them too
    s = step(pool, step_id)
    assert s["status"] == "failed" and s["attempts"] == RETRIES + 1
    assert "transient failure" in s["result"]["summary"] and "ConnectError" in s["result"]["summary"]
    assert [r["detail"]["attempt"] for r in audit_rows(pool, step_id, "step.retrying")] == list(range(1, RETRIES + 1))
    assert any("failed" in p["title"] for p in thread_posts(pool))


def test_non_transient_failure_is_never_retried(pool, redis, workers, http_target):
    step_id = approved_step(pool, f"http://127.0.0.1:{http_target.server_port}/fail")  # answers HTTP 500
    enqueue_step(redis, step_id)
    workers.burst()
    s = step(pool, step_id)
    assert s["status"] == "failed" and "HTTP 500" in s["result"]["summary"] and s["attempts"] == 1
    assert http_target.hits == ["/fail"] and audit_rows(pool, step_id, "step.retrying") == []
    assert Job.fetch(job_id(step_id), connection=redis).get_status() == JobStatus.FINISHED  # run_step returned


def test_job_timeout_fails_the_step_without_retry(pool, redis, workers, target):
    step_id = approved_step(pool, target.url("/hold"), timeout=30)  # the connector would wait 30 s...
    enqueue_step(redis, step_id, timeout=2)                          # ...RQ's job timeout fires first
    workers.burst()
    s = step(pool, step_id)
    assert s["status"] == "failed" and s["result"]["summary"] == "timed out after 2s"
    assert s["attempts"] == 1 and target.hits == ["/hold"] and audit_rows(pool, step_id, "step.retrying") == []
    assert any(p["title"].startswith("Step restart failed") and "timed out after 2s" in str(p)
               for p in thread_posts(pool))


# --- one step, one run -------------------------------------------------------------------------------------

def test_two_enqueues_and_two_deliveries_run_a_step_once(pool, redis, workers, target):
    target.let_go()
    step_id = approved_step(pool, target.url("/hold"))
    assert enqueue_step(redis, step_id) == enqueue_step(redis, step_id)   # a sweeper racing a dispatch
    assert Queue(QUEUE, connection=redis).count == 1
    # Even a second job for the same step (RQ delivers at least once) runs nothing: the claim is in the database.
    Queue(QUEUE, connection=redis).enqueue("connectors.jobs.run_step", step_id, job_id="stray")
    workers.burst()
    assert target.hits == ["/hold"] and step(pool, step_id)["status"] == "succeeded"
    assert Job.fetch("stray", connection=redis).return_value()["ran"] is False
    assert actions(pool, step_id).count("step.started") == 1 and "step.interrupted" not in actions(pool, step_id)


def test_queued_step_whose_enqueue_was_lost_is_enqueued_again(pool, redis, workers, target):
    target.let_go()
    lost = approved_step(pool, target.url("/hold?lost"))           # committed, then Redis was down: no job
    early = approved_step(pool, target.url("/hold?early"))
    with pool.connection() as conn:   # enqueued before its approval committed: the job ran and found nothing
        conn.execute("UPDATE plan_steps SET status = 'proposed' WHERE id = %s", (early,))
        conn.commit()
        enqueue_step(redis, early)
        workers.burst()
        assert Job.fetch(job_id(early), connection=redis).return_value()["ran"] is False
        conn.execute("UPDATE plan_steps SET status = 'queued' WHERE id = %s", (early,))
        conn.commit()

    # Within the grace period nothing is touched: the dispatch may be on its way.
    assert sweep_url(workers.env["DATABASE_URL"], redis, Timing(requeue_grace_s=3600)).requeued == []
    report = sweep_url(workers.env["DATABASE_URL"], redis, Timing(requeue_grace_s=0))
    assert sorted(report.requeued) == sorted([lost, early])
    # A second sweep finds live jobs and enqueues nothing more.
    assert sweep_url(workers.env["DATABASE_URL"], redis, Timing(requeue_grace_s=0)).requeued == []
    workers.burst()
    assert sorted(target.hits) == ["/hold?early", "/hold?lost"]
    assert step(pool, lost)["status"] == step(pool, early)["status"] == "succeeded"
    assert [r["detail"]["job"] for r in audit_rows(pool, lost, "step.requeued")] == ["missing"]
    assert [r["detail"]["job"] for r in audit_rows(pool, early, "step.requeued")] == ["finished"]


def test_sweeper_leaves_a_live_step_alone(pool, redis, workers, target):
    step_id = approved_step(pool, target.url("/hold"))
    enqueue_step(redis, step_id)
    workers.start()
    started = running_on_worker(pool, step_id, target)["started_at"]
    # Running for two leases now, and still heard from: the heartbeat keeps it alive.
    wait_for(lambda: (step(pool, step_id)["heartbeat_at"] - started).total_seconds() > 2 * FAST_TIMING.lease_s,
             "two leases of heartbeats")
    assert sweep_url(workers.env["DATABASE_URL"], redis, FAST_TIMING).interrupted == []
    assert step(pool, step_id)["status"] == "running"
    target.let_go()
    wait_for(lambda: step(pool, step_id)["status"] == "succeeded", "the step to finish")
    assert target.hits == ["/hold"] and "step.interrupted" not in actions(pool, step_id)


# --- the sweeper inside `warroom serve` --------------------------------------------------------------------

def test_serve_sweeps_dead_and_lost_steps(pool, redis, db_url, redis_url, tmp_path, target):
    from tests.served import Served

    dead = approved_step(pool, target.url("/hold?dead"))
    lost = approved_step(pool, target.url("/hold?lost"))
    with pool.connection() as conn:   # claimed by a worker that has not been heard from for an hour
        conn.execute("""UPDATE plan_steps SET status = 'running', attempts = 1, worker = 'gone-host:4242',
                               started_at = now() - interval '1 hour', heartbeat_at = now() - interval '1 hour'
                        WHERE id = %s""", (dead,))
        conn.commit()
    served = Served(tmp_path / "data", DATABASE_URL=db_url, REDIS_URL=redis_url,
                    **{**FAST, "WARROOM_REQUEUE_GRACE": "0"})
    try:
        assert_interrupted_and_reported(pool, dead, "gone-host:4242")
        wait_for(lambda: audit_rows(pool, lost, "step.requeued"), "serve to re-enqueue the lost step")
        assert Job.fetch(job_id(lost), connection=redis).get_status() == JobStatus.QUEUED
        assert step(pool, lost)["status"] == "queued" and target.hits == []   # enqueued, not run: no worker here
    finally:
        assert served.stop() == 0
