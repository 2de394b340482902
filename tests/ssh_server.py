"""A real SSH server on loopback for connector tests: asyncssh on its own event loop in a thread, running each
session's command for real (no shell) and answering with its exit status, stdout and stderr."""
from __future__ import annotations

import asyncio
import os
import shlex
import signal
import threading

import asyncssh

PASSWORD = "correct-horse-battery"


class _Auth(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == "ops" and password == PASSWORD


class SshServer:
    """asyncssh on its own event loop in a thread; each session execs its command (no shell) and returns the
    command's real exit status, stdout and stderr."""

    def __init__(self) -> None:
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.children: list[asyncio.subprocess.Process] = []
        self.commands: list[str] = []
        self.loop = asyncio.new_event_loop()

    async def _session(self, process: asyncssh.SSHServerProcess) -> None:
        self.commands.append(process.command)
        child = await asyncio.create_subprocess_exec(*shlex.split(process.command), stdout=asyncio.subprocess.PIPE,
                                                     stderr=asyncio.subprocess.PIPE, start_new_session=True)
        self.children.append(child)
        out, err = await child.communicate()
        process.stdout.write(out)
        process.stderr.write(err)
        process.exit(child.returncode)

    def __enter__(self) -> "SshServer":
        authorized = asyncssh.import_authorized_keys(self.client_key.export_public_key().decode())
        self.server = self.loop.run_until_complete(asyncssh.create_server(
            _Auth, "127.0.0.1", 0, server_host_keys=[self.host_key], authorized_client_keys=authorized,
            process_factory=self._session, encoding=None))
        self.port = self.server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self

    async def _shutdown(self) -> None:
        for child in self.children:   # a command the client gave up on is still running here, children too
            if child.returncode is None:
                os.killpg(child.pid, signal.SIGKILL)
            await child.wait()
        self.server.close()
        await self.server.wait_closed()

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def known_hosts(self, key: asyncssh.SSHKey | None = None) -> str:
        public = (key or self.host_key).export_public_key().decode().split()
        return f"[127.0.0.1]:{self.port} {public[0]} {public[1]}"

    def target(self, **extra) -> dict:
        return {"connector": "ssh", "host": "127.0.0.1", "port": self.port, "username": "ops",
                "known_hosts": self.known_hosts(), **extra}

    def key_secret(self) -> dict[str, str]:
        return {"private_key": self.client_key.export_private_key().decode()}
