"""A tiny SMTP server on 127.0.0.1 that records the messages it receives (no TLS, no auth): enough for smtplib and
Airflow's SmtpHook to deliver a mail in a test. Usage: `with SmtpServer() as server: ... server.messages`."""

from __future__ import annotations

import email
import email.policy
import socketserver
import threading
from email.message import Message


class _Handler(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self.reply("220 localhost test SMTP")
        while line := self.rfile.readline():
            verb = line.decode(errors="replace").strip().split(" ")[0].upper()
            if verb == "DATA":
                self.reply("354 end with .")
                lines = []
                while (data := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(data[1:] if data.startswith(b"..") else data)  # undo dot-stuffing
                self.server.messages.append(email.message_from_bytes(b"".join(lines), policy=email.policy.default))
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:  # EHLO, HELO, MAIL, RCPT, RSET, NOOP: all accepted
                self.reply("250 ok")


class SmtpServer(socketserver.ThreadingTCPServer):
    """Listens on a free port of 127.0.0.1 while in a `with` block; `messages` holds what arrived."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.messages: list[Message] = []
        self.port = self.server_address[1]

    def __enter__(self) -> SmtpServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def connection_json(self, from_email: str = "airflow@example.com") -> str:
        """An Airflow Connection (AIRFLOW_CONN_... value) pointing at this server, plain SMTP."""
        import json

        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                           "extra": {"disable_ssl": True, "disable_tls": True, "from_email": from_email,
                                     "timeout": 10, "retry_limit": 0}})

    def texts(self) -> list[str]:
        """The decoded text of every part of every message received (subject included)."""
        out = []
        for msg in self.messages:
            parts = [str(msg.get("Subject", ""))]
            parts += [p.get_content() for p in msg.walk() if p.get_content_maintype() == "text"]
            out.append("\n".join(parts))
        return out
