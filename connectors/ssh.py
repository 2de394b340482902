"""The `ssh` connector: one command on a remote host over SSH (asyncssh), with mandatory host-key checking.

Retrying is safe only while the command certainly has not started, so the failure is classified by phase:
connecting (refused, DNS, connect timeout) is transient; anything after the command was sent (a timeout, a
dropped connection) is a failed result that says the command may have partly run."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncssh

from connectors.base import ConnectorError, StepResult, TransientError, bounded, checked

MAX_STREAM = 8000   # characters kept of stdout and of stderr each


class SshConnector:
    name = "ssh"

    def run(self, params: dict[str, Any], *, target: dict[str, Any] | None, secrets: dict[str, str],
            timeout: float, read_only: bool = True) -> StepResult:
        # read_only cannot be enforced over a shell; engine.policy.minimum_risk decides what a command may claim.
        p = checked(self.name, params)
        host, port, username = _address(target)
        options = _options(target or {}, secrets, username)
        return asyncio.run(_run(host, port, options, p["command"], p["expect_exit"], timeout))

    def describe(self, params: dict[str, Any], *, target: dict[str, Any] | None) -> str:
        p = checked(self.name, params)
        host, port, username = _address(target)
        expect = f", expecting exit status {p['expect_exit']}" if p["expect_exit"] else ""
        return f"would run `{p['command']}` on {username}@{host}:{port}{expect}"


def _address(target: dict[str, Any] | None) -> tuple[str, int, str]:
    if not target or not target.get("host"):
        raise ConnectorError("ssh step needs a target with `host`")
    if not target.get("username"):
        raise ConnectorError("ssh target needs `username`")
    try:
        port = int(target.get("port", 22))
    except (TypeError, ValueError):
        raise ConnectorError(f"ssh target port is not a number: {target.get('port')!r}") from None
    return str(target["host"]), port, str(target["username"])


def _options(target: dict[str, Any], secrets: dict[str, str], username: str) -> asyncssh.SSHClientConnectionOptions:
    """Only what the target names: no ~/.ssh/config, no default keys, no agent, and never unchecked host keys."""
    lines = target.get("known_hosts")
    if isinstance(lines, list):
        lines = "\n".join(str(line) for line in lines)
    if not lines or not str(lines).strip():
        raise ConnectorError("refusing: no known_hosts for target (host keys are always checked)")
    try:
        known_hosts = asyncssh.import_known_hosts(str(lines).strip() + "\n")
    except (ValueError, asyncssh.KeyImportError) as exc:
        raise ConnectorError(f"target known_hosts is not valid known_hosts text: {exc}") from None
    client_keys = None
    if secrets.get("private_key"):
        try:
            client_keys = [asyncssh.import_private_key(secrets["private_key"], secrets.get("passphrase"))]
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError):
            raise ConnectorError("the target's private_key could not be read (wrong format or passphrase)") from None
    password = secrets.get("password")
    if client_keys is None and not password:
        raise ConnectorError("ssh target has neither private_key nor password")
    return asyncssh.SSHClientConnectionOptions(
        username=username, known_hosts=known_hosts, client_keys=client_keys, password=password,
        agent_path=None, config=None, gss_host=None, preferred_auth=["publickey", "keyboard-interactive",
                                                                     "password"])


async def _run(host: str, port: int, options: asyncssh.SSHClientConnectionOptions, command: str,
               expect_exit: int, timeout: float) -> StepResult:
    where = f"{options.username}@{host}:{port}"
    started = time.monotonic()
    try:
        conn = await asyncssh.connect(host, port, options=options, connect_timeout=timeout)
    except asyncssh.HostKeyNotVerifiable as exc:
        raise ConnectorError(f"host key mismatch for {host}:{port}: the server's key is not the one in "
                             f"known_hosts ({exc.reason})") from None
    except asyncssh.PermissionDenied:
        raise ConnectorError(f"authentication failed for {where}") from None
    except (OSError, asyncio.TimeoutError, asyncssh.ConnectionLost) as exc:
        # Refused, unreachable, DNS, or no handshake in time: nothing was sent to run.
        raise TransientError(f"could not connect to {where}: {type(exc).__name__}: {exc}") from None
    except asyncssh.DisconnectError as exc:
        raise ConnectorError(f"{where} closed the connection before the command was sent: {exc.reason}") from None
    async with conn:
        remaining = max(0.1, timeout - (time.monotonic() - started))
        try:
            result = await conn.run(command, check=False, timeout=remaining, encoding="utf-8", errors="replace")
        except asyncssh.ChannelOpenError as exc:
            raise ConnectorError(f"{where} refused to open a session: {exc.reason}") from None
        except asyncssh.TimeoutError as exc:
            return _result(where, None, exc.stdout, exc.stderr, expect_exit,
                           f"timed out after {timeout:g}s; the command may have partly run")
        except (asyncssh.DisconnectError, asyncssh.ConnectionLost, OSError) as exc:
            return _result(where, None, "", "", expect_exit,
                           f"connection lost ({type(exc).__name__}); the command may have partly run")
    return _result(where, result.exit_status, result.stdout, result.stderr, expect_exit, None,
                   result.exit_signal)


def _result(where: str, exit_status: int | None, stdout: Any, stderr: Any, expect_exit: int, problem: str | None,
            exit_signal: tuple | None = None) -> StepResult:
    stdout, stderr = str(stdout or ""), str(stderr or "")
    output = bounded(stdout, MAX_STREAM)
    if stderr:
        output += ("\n" if output else "") + "--- stderr ---\n" + bounded(stderr, MAX_STREAM)
    data = {"exit_status": exit_status, "stdout_chars": len(stdout), "stderr_chars": len(stderr),
            "truncated": len(stdout) > MAX_STREAM or len(stderr) > MAX_STREAM}
    if problem:
        return StepResult(ok=False, summary=f"{where}: {problem}", output=output, data=data)
    if exit_status is None:
        if exit_signal:
            data["exit_signal"] = exit_signal[0]
        why = f"killed by signal {exit_signal[0]}" if exit_signal else "the session ended without an exit status"
        return StepResult(ok=False, summary=f"{where}: {why}", output=output, data=data)
    ok = exit_status == expect_exit
    expected = "" if ok or expect_exit == 0 else f" (expected {expect_exit})"
    return StepResult(ok=ok, summary=f"{where}: exit status {exit_status}{expected}", output=output, data=data)
