"""What the service benchmarks run against: a real `warroom serve` (embedded PostgreSQL + Redis + one RQ worker)
configured for Slack, its Slack Web API stand-in, an HTTP target for runbook steps, the bare baseline apps in
their own processes, resident memory and an idle check. Set up exactly as `tests/test_slack.py` does."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.common import ROOT, log  # noqa: E402
from tests.conftest import RecordingTarget, runbook_yaml, warroom  # noqa: E402
from tests.served import Served  # noqa: E402
from tests.slack_standin import SlackStandIn, sign  # noqa: E402

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ALERTS = "C0ALERTS"
APPROVER = "U0BOB"
USERS = {"U0ALICE": {"name": "alice", "email": "alice@example.com"},
         "U0BOB": {"name": "bob", "email": "bob@example.com"},
         "U0CAROL": {"name": "carol", "email": "carol@example.com"}}
# Read-only steps wait for a click too, so every plan card has an Approve button whose step is cheap to run.
CONFIG = f"""
slack:
  alert_channel: {ALERTS}
policy:
  approvers: [U0BOB, carol@example.com]
  auto_run_read_only: false
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:g}s")


class Stack:
    """`warroom serve` + Slack stand-in + step target in a temporary directory, all stopped on exit."""

    def __init__(self, keep_dir: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="warroom-bench-serve-", dir=keep_dir))

    def __enter__(self) -> "Stack":
        self.target, self.standin, self.served = RecordingTarget().__enter__(), None, None
        try:
            return self._start()
        except BaseException:
            self.__exit__()  # a serve that failed to start leaves nothing behind either
            raise

    def _start(self) -> "Stack":
        (self.root / "warroom.yml").write_text(CONFIG)
        (self.root / "runbook.yaml").write_text(runbook_yaml(self.target.url("/health")))
        env = {"WARROOM_DATA_DIR": str(self.root / "data"), "WARROOM_CONFIG": str(self.root / "warroom.yml")}
        started = time.monotonic()
        ingested = warroom("ingest", str(self.root / "runbook.yaml"), env={**env, "DATABASE_URL": "", "REDIS_URL": ""})
        if ingested.returncode != 0:
            raise RuntimeError(f"warroom ingest failed: {ingested.stderr[-2000:]}")
        self.standin = SlackStandIn(users=USERS).start()
        self.served = Served(self.root / "data", WARROOM_CONFIG=str(self.root / "warroom.yml"),
                             SLACK_BOT_TOKEN=self.standin.bot_token, SLACK_SIGNING_SECRET=SECRET,
                             SLACK_API_URL=self.standin.url, WARROOM_PUBLIC_URL="https://warroom.example.com")
        log(f"warroom serve ready on :{self.served.port} in {time.monotonic() - started:.0f}s "
            f"(pid {self.served.proc.pid})")
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.served is not None:
                self.served.stop()
        finally:
            if self.standin is not None:
                self.standin.stop()
            self.target.__exit__()
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.served.port}"

    @property
    def pid(self) -> int:
        return self.served.proc.pid

    def worker_env(self) -> dict[str, str]:
        """DATABASE_URL / REDIS_URL of the embedded servers, read from the RQ worker serve started."""
        for child in psutil.Process(self.pid).children(recursive=True):
            try:
                if "worker" in child.cmdline():
                    env = child.environ()
                    return {"DATABASE_URL": env["DATABASE_URL"], "REDIS_URL": env["REDIS_URL"]}
            except (psutil.Error, KeyError):
                continue
        raise RuntimeError("no `warroom worker` child of serve found")

    def post_signed(self, body: bytes, content_type: str) -> tuple[int, bytes]:
        return self.served.request("POST", "/slack/events", body, {"Content-Type": content_type, **sign(SECRET, body)})


class BareApp:
    """One of bench.bare_apps in its own process."""

    def __init__(self, kind: str, env: dict[str, str] | None = None, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.bare_apps", kind, "--port", str(self.port), *args],
                                     env={**os.environ, **(env or {})}, cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            wait_http(f"{self.url}/healthz", self.proc)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- memory and CPU

def rss_mb(pid: int, children: bool = False) -> float:
    """VmRSS from /proc/<pid>/status (MiB), plus every descendant's when `children` (shared pages counted in
    each process, as VmRSS does)."""
    pids = [pid]
    if children:
        pids += [c.pid for c in psutil.Process(pid).children(recursive=True)]
    total_kb = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


def cpu_seconds(pid: int) -> float:
    """CPU time of the process and its descendants so far."""
    total = 0.0
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def wait_idle(pid: int, *, below: float = 0.08, window: float = 1.0, timeout: float = 90) -> float:
    """Wait until the process tree uses less than `below` of a core over `window` seconds: the work queued by
    the last arm's turn is done before the next arm is timed. Returns seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(pid)
        time.sleep(window)
        if (cpu_seconds(pid) - before) / window < below:
            break
    return time.monotonic() - started


def git_state() -> dict[str, str]:
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"head": run("rev-parse", "HEAD"), "dirty": run("status", "--short")[:2000]}


def dump(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, default=str))
