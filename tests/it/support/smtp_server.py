#!/usr/bin/python3
"""A real SMTP server for cadence's integration tests (aiosmtpd).

Run as `/usr/bin/python3 smtp_server.py DIR` (Debian's python3-aiosmtpd; a
pyenv python does not see it). Everything goes through files in DIR, which
the Rust side (tests/it/support/smtp.rs) owns:

- DIR/config.json (read once): {"tls": "none"|"starttls"|"tls", "cert": PEM,
  "key": PEM, "auth": {"user": U, "password": P} or null, "timeout": seconds,
  "pipelining": bool (offer PIPELINING in the EHLO answer; default true)}
- DIR/ready (written once listening): the port, chosen by the kernel.
- DIR/messages/NNNNNN.json then NNNNNN.eml: the envelope, then the message
  exactly as received (after dot-unstuffing). The .eml appears last, by
  rename, so a reader that sees it can read both.
- DIR/events.log: one line per event (connect, ehlo, auth_ok, mail, rcpt,
  data, message, noop, rset, quit, fault STAGE ACTION) for stats. A MAIL
  whose next command had already arrived with it is logged `mail pipelined`.
- DIR/control.json (re-read whenever it changes, checked on every command):
  {"rules": [{"stage": S, "rcpt": ADDR?, "action": "reply"|"drop"|"hang",
  "reply": "451 4.3.0 try later", "times": N?}]}. Stages: connect, ehlo,
  mail, rcpt, data (the DATA command), data_body (after 354, mid-message),
  data_end (after the final dot). `rcpt` restricts a rule to a recipient;
  `times` limits how often it fires (counts reset when the file changes).
"""

import asyncio
import json
import os
import re
import ssl
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

warnings.filterwarnings("ignore")


class State:
    def __init__(self, directory):
        self.dir = directory
        self.control = os.path.join(directory, "control.json")
        self.messages = os.path.join(directory, "messages")
        os.makedirs(self.messages, exist_ok=True)
        self.sig = None
        self.rules = []
        self.fired = {}
        self.seq = 0
        self.events = open(os.path.join(directory, "events.log"), "a", buffering=1)

    def log(self, *parts):
        self.events.write(" ".join(str(p) for p in parts) + "\n")

    def load(self):
        try:
            st = os.stat(self.control)
        except FileNotFoundError:
            if self.sig is not None:
                self.sig, self.rules, self.fired = None, [], {}
            return
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        if sig != self.sig:
            with open(self.control) as f:
                data = json.load(f)
            self.sig, self.rules, self.fired = sig, data.get("rules", []), {}

    def match(self, stage, rcpts=()):
        self.load()
        lowered = [r.lower() for r in rcpts]
        for i, rule in enumerate(self.rules):
            if rule.get("stage") != stage:
                continue
            want = rule.get("rcpt")
            if want is not None and want.lower() not in lowered:
                continue
            times = rule.get("times")
            n = self.fired.get(i, 0)
            if times is not None and n >= times:
                continue
            self.fired[i] = n + 1
            action = rule.get("action") or ("reply" if rule.get("reply") else "drop")
            self.log("fault", stage, action)
            return action, rule.get("reply")
        return None

    def store(self, envelope):
        self.seq += 1
        base = os.path.join(self.messages, "%06d" % self.seq)
        meta = {"mail_from": envelope.mail_from, "rcpt_to": list(envelope.rcpt_tos)}
        with open(base + ".json", "w") as f:
            json.dump(meta, f)
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(base + ".tmp", base + ".eml")
        self.log("message", self.seq)
        return self.seq


async def forever():
    # Cancelled by aiosmtpd when the client goes away.
    await asyncio.Event().wait()


class Handler:
    def __init__(self, state, pipelining):
        self.state = state
        self.pipelining = pipelining

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # With this hook aiosmtpd leaves the session's name to us.
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server, session, envelope):
        fault = self.state.match("data_end", envelope.rcpt_tos)
        if fault is not None:
            action, reply = fault
            if action == "reply":
                return reply
            if action == "drop":
                server.transport.close()
            await forever()
        seq = self.state.store(envelope)
        return "250 2.0.0 OK queued as %d" % seq


class TestSMTP(SMTP):
    def __init__(self, handler, state, **kwargs):
        super().__init__(handler, **kwargs)
        self.state = state

    async def apply(self, stage, rcpts=()):
        """Applies a matching fault rule; True if the command is handled."""
        fault = self.state.match(stage, rcpts)
        if fault is None:
            return False
        action, reply = fault
        if action == "reply":
            await self.push(reply)
            if stage == "connect" or reply.startswith("421"):
                self.transport.close()
            return True
        if action == "drop":
            self.transport.close()
            return True
        await forever()
        return True

    async def _handle_client(self):
        self.state.log("connect")
        if await self.apply("connect"):
            return
        await super()._handle_client()

    async def smtp_EHLO(self, hostname):
        self.state.log("ehlo")
        if await self.apply("ehlo"):
            return
        await super().smtp_EHLO(hostname)

    async def smtp_MAIL(self, arg):
        # What the client wrote after MAIL without waiting for its answer.
        self.state.log("mail", "pipelined" if self._reader._buffer else "alone")
        if await self.apply("mail"):
            return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg):
        self.state.log("rcpt")
        m = re.search(r"<([^>]*)>", arg or "")
        if await self.apply("rcpt", [m.group(1)] if m else []):
            return
        await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg):
        self.state.log("data")
        rcpts = list(self.envelope.rcpt_tos) if self.envelope else []
        if rcpts:
            if await self.apply("data", rcpts):
                return
            fault = self.state.match("data_body", rcpts)
            if fault is not None:
                action, _ = fault
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                try:
                    await asyncio.wait_for(self._reader.readuntil(b"\r\n"), 5)
                except Exception:
                    pass
                if action == "hang":
                    await forever()
                self.transport.close()
                return
        await super().smtp_DATA(arg)

    async def smtp_NOOP(self, arg):
        self.state.log("noop")
        await super().smtp_NOOP(arg)

    async def smtp_RSET(self, arg):
        self.state.log("rset")
        await super().smtp_RSET(arg)

    async def smtp_QUIT(self, arg):
        self.state.log("quit")
        await super().smtp_QUIT(arg)


def main():
    directory = sys.argv[1]
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    state = State(directory)
    handler = Handler(state, config.get("pipelining", True))

    tls_mode = config.get("tls", "none")
    context = None
    if tls_mode != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config["cert"], config["key"])

    auth = config.get("auth")
    authenticator = None
    if auth:
        user = auth["user"].encode()
        password = auth["password"].encode()

        def authenticator(server, session, envelope, mechanism, data):
            ok = (
                isinstance(data, LoginPassword)
                and data.login == user
                and data.password == password
            )
            state.log("auth_ok" if ok else "auth_fail")
            # handled=False: aiosmtpd then answers 535 itself; with
            # handled=True a failure gets no reply and the client hangs.
            return AuthResult(success=ok, handled=False)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        return TestSMTP(
            handler,
            state,
            loop=loop,
            hostname="cadence-test-smtp",
            tls_context=context if tls_mode == "starttls" else None,
            auth_required=bool(auth),
            auth_require_tls=False,
            authenticator=authenticator,
            timeout=float(config.get("timeout", 300)),
            enable_SMTPUTF8=True,
        )

    server = loop.run_until_complete(
        loop.create_server(
            factory,
            host="127.0.0.1",
            port=0,
            ssl=context if tls_mode == "tls" else None,
        )
    )
    port = server.sockets[0].getsockname()[1]
    ready = os.path.join(directory, "ready")
    with open(ready + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(ready + ".tmp", ready)
    loop.run_forever()


if __name__ == "__main__":
    main()
