"""Real mail servers on loopback: pymap (IMAP, pip-installed) and aiosmtpd (SMTP).

pymap rather than Dovecot: it installs with the ``dev`` extra (no root, no apt, nothing outside
the virtualenv), starts in ~0.4 s and speaks IDLE, UIDPLUS and partial FETCH as the adapter uses
them. One pymap server (in-memory ``dict`` backend) serves the whole session; each test gets its
own folder, so tests never see each other's mail. ``TcpProxy`` sits between the adapter and
pymap so a test can cut the connection mid-IDLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aioimaplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from router.model import Envelope, decode_envelope, new_id
from tests.conftest import free_port

HERE = Path(__file__).resolve().parent
EMAIL_RULES = HERE / "rules.yaml"
IMAP_USER, IMAP_PASSWORD = "support", "imap-secret"
SMTP_USER, SMTP_PASSWORD = "support", "smtp-secret"
MAILBOX_ADDRESS = "support@exchange.test"


@pytest.fixture
def rules_file() -> Path:
    # The e-mail tests' own small rule set: it has an auto-reply rule to check loop protection.
    return EMAIL_RULES


# -- IMAP ----------------------------------------------------------------------------------------


@dataclass
class PymapServer:
    port: int
    process: subprocess.Popen[bytes]


def _start_pymap(tls: list[str]) -> PymapServer:
    port = free_port()
    binary = Path(sys.executable).with_name("pymap")
    cmd = [str(binary), "--host", "127.0.0.1", "--port", str(port), *tls]
    cmd += ["dict", "--demo-user", IMAP_USER, "--demo-password", IMAP_PASSWORD]
    process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _, err = process.communicate()
            raise RuntimeError(f"pymap did not start: {err.decode(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return PymapServer(port, process)


def _stop(server: PymapServer) -> None:
    server.process.terminate()
    try:
        server.process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.communicate()


@pytest.fixture(scope="session")
def pymap_server() -> Iterator[PymapServer]:
    server = _start_pymap(["--no-tls"])
    yield server
    _stop(server)


@dataclass
class TlsPymap:
    server: PymapServer
    ca_file: Path


@pytest.fixture(scope="session")
def pymap_starttls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPymap]:
    """A second pymap that offers STARTTLS with a self-signed certificate for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make the test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
    names = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [openssl, "req", "-x509", *ec_key, *names, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    server = _start_pymap(["--cert", str(cert), "--key", str(key)])
    yield TlsPymap(server, cert)
    _stop(server)


@dataclass
class MailFolder:
    """A folder of its own on the pymap server, and a direct client that delivers into it."""

    port: int
    folder: str
    client: aioimaplib.IMAP4

    async def deliver(self, raw: bytes, folder: str | None = None) -> None:
        # APPEND is how the tests play the MTA: the adapter sees it like any delivered mail.
        response = await self.client.append(raw, mailbox=folder or self.folder)
        assert response.result == "OK", response

    async def recreate(self) -> None:
        """Delete and re-create the folder: the server gives it a new UIDVALIDITY."""
        assert (await self.client.delete(self.folder)).result == "OK"
        assert (await self.client.create(self.folder)).result == "OK"


async def imap_client(port: int) -> aioimaplib.IMAP4:
    client = aioimaplib.IMAP4("127.0.0.1", port, timeout=5)
    await client.wait_hello_from_server()
    response = await client.login(IMAP_USER, IMAP_PASSWORD)
    assert response.result == "OK", response
    return client


@pytest.fixture
async def mailbox(pymap_server: PymapServer) -> AsyncIterator[MailFolder]:
    client = await imap_client(pymap_server.port)
    folder = f"t{new_id()[-10:]}"
    assert (await client.create(folder)).result == "OK"
    yield MailFolder(pymap_server.port, folder, client)
    with contextlib.suppress(Exception):
        await client.delete(folder)
        await client.logout()
    # The server closes after LOGOUT, but the session's last test may end before that is read.
    if client.protocol.transport is not None:
        client.protocol.transport.close()


class TcpProxy:
    """A loopback TCP relay whose live connections a test can cut (the server stays up)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        tasks = [asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()
            with contextlib.suppress(ConnectionError, OSError):
                await w.wait_closed()

    async def cut(self) -> None:
        """Drop every live connection, like a NAT timeout or a server restart would."""
        for w in list(self._writers):
            w.transport.abort()
        for _ in range(50):
            if not self._writers:
                return
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def proxy(pymap_server: PymapServer) -> AsyncIterator[TcpProxy]:
    p = TcpProxy(pymap_server.port)
    await p.start()
    yield p
    await p.close()


# -- SMTP ----------------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    login: str


@dataclass
class SmtpRecorder:
    """aiosmtpd handler: records accepted mail; recipients named temp@/perm@ get 451/550."""

    messages: list[Received] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("temp@"):
            return "451 4.3.0 Mailbox busy, try again later"
        if address.startswith("perm@"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else str(session.auth_data)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, login))
        return "250 2.0.0 Message accepted"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=True, auth_data=auth_data.login) if ok else AuthResult(success=False, handled=False)


@dataclass
class SmtpServer:
    port: int
    recorder: SmtpRecorder


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    recorder = SmtpRecorder()
    # AUTH over plain TCP is fine on loopback; the adapter refuses it anywhere else by default.
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=_authenticator,
        auth_require_tls=False,
        ready_timeout=5,
    )
    controller.start()
    yield SmtpServer(controller.port, recorder)
    controller.stop()


@pytest.fixture
def smtp_relay() -> Iterator[SmtpServer]:
    """An SMTP server that offers no AUTH at all, like Postfix on localhost:25 for local senders."""
    recorder = SmtpRecorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), ready_timeout=5)
    controller.start()
    yield SmtpServer(controller.port, recorder)
    controller.stop()


# -- helpers -------------------------------------------------------------------------------------


def email_section(
    mailbox: MailFolder, smtp: SmtpServer | None, *, port: int | None = None, **over: Any
) -> dict[str, Any]:
    """The raw ``[email]`` table for one mailbox on the test servers (fast timings)."""
    box: dict[str, Any] = {
        "name": "support",
        "address": MAILBOX_ADDRESS,
        "display_name": "Exchange Support",
        "user": IMAP_USER,
        "password": IMAP_PASSWORD,
        "imap_host": "127.0.0.1",
        "imap_port": port or mailbox.port,
        "imap_tls": "none",
        "folder": mailbox.folder,
        "timeout_s": 5,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "backfill_all": True,
    }
    if smtp is not None:
        box.update(
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            smtp_tls="none",
            smtp_user=SMTP_USER,
            smtp_password=SMTP_PASSWORD,
        )
    box.update(over)
    return {"mailboxes": [box]}


async def wait_until(check: Callable[[], Awaitable[bool]], limit: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + limit
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(0.02)


async def inbox_envelopes(client: Any, key: str) -> list[Envelope]:
    return [decode_envelope(fields[b"env"]) for _, fields in await client.xrange(key) if b"env" in fields]
