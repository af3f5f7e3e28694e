"""`cti simulate-pbx`: an AMI server that behaves like Asterisk 22 for a contact center.

Tests, the demo and the benchmarks talk to it over real TCP exactly as they would talk to
Asterisk: banner, Login (with the 1 s delayed failure and the closed connection), actions with
echoed ActionIDs, and calls whose events follow the shared real traces (see `ami.sim_engine`).

Each batch of events is encoded once and the same bytes are written to every logged-in client;
a client that stops reading is dropped once its buffer passes `max_client_buffer` so that it
cannot slow the others down.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from ami.framing import AmiParser
from ami.settings import SimulatorSettings
from ami.sim_engine import SimEngine
from ami.sim_model import ALL_CLASSES, SECURITY, SYSTEM, Call, Member, parse_mask

log = structlog.get_logger(__name__)

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
PHONE_MODES = ("auto", "manual", "never")


def _resp(action_id: str | None, status: str, body: str) -> str:
    idline = f"ActionID: {action_id}\r\n" if action_id is not None else ""
    return f"Response: {status}\r\n{idline}{body}\r\n"


class _Client(asyncio.Protocol):
    """One AMI connection. Parsing is sans-I/O (`AmiParser`); actions go to the simulator."""

    def __init__(self, sim: PbxSimulator) -> None:
        self.sim = sim
        self.parser = AmiParser()
        self.parser.banner = ""  # we are the server: the peer sends no greeting
        self.transport: asyncio.Transport | None = None
        self.authed = False
        self.closing = False
        self.mask = 0
        self.peer = "?"
        self.session = 0
        self._carry = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.sim._clients.add(self)
        self.session = id(self)
        transport.write(BANNER)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.sim._clients.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        # Asterisk also accepts bare LF line ends: normalise to CRLF before framing, keeping a
        # trailing CR for the next read in case its LF arrives there
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if data.endswith(b"\r"):
            self._carry = b"\r"
            data = data[:-1]
        if b"\n" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        try:
            messages = self.parser.feed(data)
        except Exception:  # the parser is defensive; this is the last line of defence
            log.exception("unparseable AMI input dropped", peer=self.peer)
            self.sim.bad_input += 1
            return
        for msg in messages:
            if self.closing:
                return
            try:
                self.sim._handle(self, msg)
            except Exception:
                self.sim.bad_input += 1
                log.exception("action failed", peer=self.peer, action=msg.get("Action", "?"))
                self.write(_resp(msg.get("ActionID"), "Error", "Message: Internal error\r\n"))

    def write(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def write_bytes(self, data: bytes) -> None:
        t = self.transport
        if t is None or self.closing:
            return
        t.write(data)
        if t.get_write_buffer_size() > self.sim.settings.max_client_buffer:
            log.warning("AMI client too slow, disconnecting", peer=self.peer)
            self.closing = True
            t.abort()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class PbxSimulator:
    """The simulated PBX. `start()` binds settings.host/port (0 = ephemeral, see `port`)."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.engine = SimEngine(settings)
        self.engine.on_flush = self._flush
        self.engine.on_originate_done = self._originate_done
        self.port = settings.port
        self.on_agent_ringing: Callable[[str, str], None] | None = None
        self.bad_input = 0
        self._clients: set[_Client] = set()
        self._server: asyncio.Server | None = None
        self._started = time.time()
        self._login_timers: set[asyncio.TimerHandle] = set()
        self._sync_originates: dict[str, tuple[_Client, str | None]] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Client(self), self.settings.host, self.settings.port
        )
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        self.engine.start(loop)
        self._started = time.time()
        log.info(
            "PBX simulator listening",
            host=self.settings.host,
            port=self.port,
            seed=self.settings.seed,
            inbound_per_minute=self.settings.inbound_per_minute,
        )

    async def stop(self) -> None:
        self.engine.stop()
        for h in self._login_timers:
            h.cancel()
        self._login_timers.clear()
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for c in list(self._clients):
            if c.transport is not None:
                c.transport.abort()
        self._clients.clear()
        if server is not None:
            await server.wait_closed()

    # ------------------------------------------------------------------ control from Python

    @property
    def members(self) -> dict[str, list[Member]]:
        return {name: list(q.members) for name, q in self.engine.queues.items()}

    def inbound_call(
        self,
        number: str,
        *,
        queue: str = "support",
        name: str = "",
        did: str = "800",
        variables: Mapping[str, str] | None = None,
        hangup_after: float | None = None,
    ) -> str:
        """Offer an inbound call now; returns its Linkedid. `queue` may also name a device
        (`PJSIP/1001`, a direct Dial) or be empty to route by `did`. `hangup_after`: seconds
        from now until the caller hangs up, whatever happens (else talk_min..talk_max after
        an agent answers, or the queue patience)."""
        self.engine.sync()
        self._flush()
        lid = self.engine.inbound_call(
            number,
            queue=queue,
            name=name,
            did=did,
            variables=variables,
            hangup_after=hangup_after,
        )
        self._flush()
        return lid

    def set_phone(self, device: str, mode: str) -> None:
        if mode not in PHONE_MODES:
            raise ValueError(f"phone mode must be one of {PHONE_MODES}, not {mode!r}")
        self.engine.phone_modes[device] = mode

    def answer(self, device: str) -> bool:
        self.engine.sync()
        self._flush()
        ok = self.engine.answer_device(device)
        self._flush()
        return ok

    def hangup_call(self, linkedid: str, cause: int = 16) -> bool:
        self.engine.sync()
        self._flush()
        ok = self.engine.hangup_call(linkedid, cause)
        self._flush()
        return ok

    @property
    def calls(self) -> dict[str, Call]:
        return self.engine.calls

    # ------------------------------------------------------------------ output

    def _flush(self) -> None:
        eng = self.engine
        out = eng.out
        if out:
            eng.out = []
            eng.events_written += len(out)
            full: bytes | None = None
            masked: dict[int, bytes] = {}
            for c in list(self._clients):
                mask = c.mask
                if not mask or c.closing:
                    continue
                if mask == ALL_CLASSES:
                    if full is None:
                        full = "".join([t for _, t in out]).encode("utf-8")
                    c.write_bytes(full)
                else:
                    data = masked.get(mask)
                    if data is None:
                        data = "".join([t for cls, t in out if cls & mask]).encode("utf-8")
                        masked[mask] = data
                    if data:
                        c.write_bytes(data)
        notify = eng.ring_notify
        if notify:
            eng.ring_notify = []
            cb = self.on_agent_ringing
            if cb is not None:
                for linkedid, device in notify:
                    try:
                        cb(linkedid, device)
                    except Exception:
                        log.exception("on_agent_ringing callback failed")

    def _originate_done(self, call: Call, ok: bool) -> None:
        pending = self._sync_originates.pop(call.linkedid, None)
        if pending is None:
            return
        client, aid = pending
        if ok:
            client.write(_resp(aid, "Success", "Message: Originate successfully queued\r\n"))
        else:
            client.write(_resp(aid, "Error", "Message: Originate failed\r\n"))

    # ------------------------------------------------------------------ actions

    def _handle(self, client: _Client, msg: dict[str, str]) -> None:
        action = msg.get("Action")
        aid = msg.get("ActionID")
        if action is None:
            client.write(_resp(aid, "Error", "Message: Missing action in request\r\n"))
            return
        name = action.strip().lower()
        if not client.authed and name not in ("login", "logoff", "challenge"):
            client.write(_resp(aid, "Error", "Message: Permission denied\r\n"))
            return
        handler = _ACTIONS.get(name)
        if handler is None:
            client.write(
                _resp(
                    aid,
                    "Error",
                    f"Message: Invalid/unknown command: {action}. Use Action: ListCommands to "
                    "show available commands.\r\n",
                )
            )
            return
        eng = self.engine
        eng.sync()
        self._flush()  # earlier events first, then this action's response, then its events
        handler(self, client, msg, aid)
        self._flush()

    def _a_login(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        s = self.settings
        if client.authed:
            client.write(_resp(aid, "Success", "Message: Already authenticated\r\n"))
            return
        if (
            msg.get("Username") == s.username
            and msg.get("Secret") == s.secret.get_secret_value()
            and not client.authed
        ):
            client.authed = True
            client.write(_resp(aid, "Success", "Message: Authentication accepted\r\n"))
            client.mask = parse_mask(msg.get("Events", "on"))
            uptime = int(time.time() - self._started)
            booted = (
                "Event: FullyBooted\r\nPrivilege: system,all\r\n"
                f"Uptime: {uptime}\r\nLastReload: {uptime}\r\nStatus: Fully Booted\r\n\r\n"
            )
            if client.mask & SYSTEM:
                client.write(booted)
            if client.mask & SECURITY:
                tv = time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime())
                client.write(
                    "Event: SuccessfulAuth\r\nPrivilege: security,all\r\n"
                    f"EventTV: {tv}\r\nSeverity: Informational\r\nService: AMI\r\n"
                    f"EventVersion: 1\r\nAccountID: {s.username}\r\n"
                    f"SessionID: 0x{client.session:x}\r\n"
                    f"LocalAddress: IPV4/TCP/{s.host}/{self.port}\r\n"
                    f"RemoteAddress: IPV4/TCP/{client.peer.replace(':', '/')}\r\n"
                    f"UsingPassword: 0\r\nSessionTV: {tv}\r\n\r\n"
                )
            log.info("AMI client logged in", peer=client.peer, user=s.username)
            return
        # Asterisk answers a failed login after about a second, then hangs up
        client.closing = True
        log.info("AMI login failed", peer=client.peer, user=msg.get("Username", ""))
        loop = asyncio.get_running_loop()
        delay = s.login_fail_delay / s.time_scale

        def fail() -> None:
            self._login_timers.discard(handle)
            if client.transport is not None and not client.transport.is_closing():
                client.transport.write(
                    _resp(aid, "Error", "Message: Authentication failed\r\n").encode()
                )
                client.transport.close()

        handle = loop.call_later(delay, fail)
        self._login_timers.add(handle)

    def _a_logoff(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        client.write(_resp(aid, "Goodbye", "Message: Thanks for all the fish.\r\n"))
        client.close()

    def _a_ping(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        client.write(_resp(aid, "Success", f"Ping: Pong\r\nTimestamp: {time.time():.6f}\r\n"))

    def _a_events(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        client.mask = parse_mask(msg.get("EventMask", "on"))
        client.write(_resp(aid, "Success", f"Events: {'On' if client.mask else 'Off'}\r\n"))

    def _a_corestatus(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        t = time.gmtime(self._started)
        client.write(
            _resp(
                aid,
                "Success",
                f"CoreStartupDate: {time.strftime('%Y-%m-%d', t)}\r\n"
                f"CoreStartupTime: {time.strftime('%H:%M:%S', t)}\r\n"
                f"CoreReloadDate: {time.strftime('%Y-%m-%d', t)}\r\n"
                f"CoreReloadTime: {time.strftime('%H:%M:%S', t)}\r\n"
                f"CoreCurrentCalls: {len(self.engine.calls)}\r\n"
                f"CoreProcessedCalls: {self.engine.processed_calls}\r\n",
            )
        )

    def _a_coresettings(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        client.write(
            _resp(
                aid,
                "Success",
                "AMIversion: 11.0.0\r\nAsteriskVersion: 22.10.1\r\nSystemName: \r\n"
                "CoreMaxCalls: 0\r\nCoreMaxLoadAvg: 0.000000\r\nCoreRunUser: asterisk\r\n"
                "CoreRunGroup: asterisk\r\nCoreMaxFilehandles: 0\r\nCoreRealTimeEnabled: No\r\n"
                "CoreCDRenabled: Yes\r\nCoreHTTPenabled: No\r\nSoundsSearchCustomDir: No\r\n",
            )
        )

    def _a_command(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        cmd = msg.get("Command", "").strip()
        if cmd == "core show version":
            out = "Asterisk 22.10.1 (cti simulate-pbx)"
        else:
            out = (
                f"No such command '{cmd}' (type 'core show help {cmd}' for other possible commands)"
            )
        client.write(_resp(aid, "Success", f"Message: Command output follows\r\nOutput: {out}\r\n"))

    def _list(
        self,
        client: _Client,
        aid: str | None,
        message: str,
        items: list[str],
        done: str,
        extra: str = "",
    ) -> None:
        idline = f"ActionID: {aid}\r\n" if aid is not None else ""
        parts = [_resp(aid, "Success", f"EventList: start\r\nMessage: {message}\r\n")]
        parts.extend(items)
        parts.append(
            f"Event: {done}\r\n{idline}EventList: Complete\r\n"
            f"ListItems: {len(items)}\r\n{extra}\r\n"
        )
        client.write("".join(parts))

    def _a_coreshowchannels(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        eng = self.engine
        idline = f"ActionID: {aid}\r\n" if aid is not None else ""
        items = []
        for ch in eng.chans.values():
            secs = int(eng.now - ch.created)
            dur = f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
            bid = ch.bridge.uniqueid if ch.bridge is not None else ""
            items.append(
                f"Event: CoreShowChannel\r\n{idline}{ch.block()}Application: {ch.app}\r\n"
                f"ApplicationData: {ch.appdata}\r\nDuration: {dur}\r\nBridgeId: {bid}\r\n\r\n"
            )
        self._list(client, aid, "Channels will follow", items, "CoreShowChannelsComplete")

    def _a_status(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        eng = self.engine
        want = msg.get("Channel")
        if want and want not in eng.chans:
            client.write(_resp(aid, "Error", "Message: No such channel\r\n"))
            return
        idline = f"ActionID: {aid}\r\n" if aid is not None else ""
        items = []
        for ch in eng.chans.values():
            if want and ch.name != want:
                continue
            bid = ch.bridge.uniqueid if ch.bridge is not None else ""
            items.append(
                f"Event: Status\r\nPrivilege: Call\r\n{ch.block()}Type: PJSIP\r\nDNID: \r\n"
                f"EffectiveConnectedLineNum: {ch.con_num}\r\n"
                f"EffectiveConnectedLineName: {ch.con_name}\r\nTimeToHangup: 0\r\n"
                f"BridgeID: {bid}\r\nApplication: {ch.app}\r\nData: {ch.appdata}\r\n"
                "Nativeformats: (ulaw)\r\nReadformat: ulaw\r\nReadtrans: \r\n"
                "Writeformat: ulaw\r\nWritetrans: \r\nCallgroup: 0\r\nPickupgroup: 0\r\n"
                f"Seconds: {int(eng.now - ch.created)}\r\n{idline}\r\n"
            )
        self._list(
            client,
            aid,
            "Channel status will follow",
            items,
            "StatusComplete",
            f"Items: {len(items)}\r\n",
        )

    def _a_queuestatus(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        eng = self.engine
        want = msg.get("Queue")
        idline = f"ActionID: {aid}\r\n" if aid is not None else ""
        items = []
        for q in eng.queues.values():
            if want and q.name != want:
                continue
            hold = int(q.holdtime_total / q.completed) if q.completed else 0
            talk = int(q.talktime_total / q.completed) if q.completed else 0
            items.append(
                f"Event: QueueParams\r\nQueue: {q.name}\r\nMax: 0\r\n"
                f"Strategy: {q.strategy}\r\nCalls: {len(q.waiting)}\r\nHoldtime: {hold}\r\n"
                f"TalkTime: {talk}\r\nCompleted: {q.completed}\r\nAbandoned: {q.abandoned}\r\n"
                "ServiceLevel: 0\r\nServicelevelPerf: 0.0\r\nServicelevelPerf2: 0.0\r\n"
                f"Weight: 0\r\n{idline}\r\n"
            )
            for m in q.members:
                items.append(f"Event: QueueMember\r\n{m.list_fields()}{idline}\r\n")
            for pos, call in enumerate(q.waiting, 1):
                ch = call.caller
                items.append(
                    f"Event: QueueEntry\r\nQueue: {q.name}\r\nPosition: {pos}\r\n"
                    f"Channel: {ch.name}\r\nUniqueid: {ch.uniqueid}\r\n"
                    f"CallerIDNum: {ch.cid_num}\r\nCallerIDName: {ch.cid_name}\r\n"
                    f"ConnectedLineNum: {ch.con_num}\r\nConnectedLineName: {ch.con_name}\r\n"
                    f"Wait: {int(eng.now - call.queue_joined)}\r\nPriority: 0\r\n{idline}\r\n"
                )
        self._list(client, aid, "Queue status will follow", items, "QueueStatusComplete")

    def _a_queuesummary(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        eng = self.engine
        want = msg.get("Queue")
        idline = f"ActionID: {aid}\r\n" if aid is not None else ""
        items = []
        for q in eng.queues.values():
            if want and q.name != want:
                continue
            available = sum(1 for m in q.members if eng._available(m))
            longest = int(eng.now - q.waiting[0].queue_joined) if q.waiting else 0
            hold = int(q.holdtime_total / q.completed) if q.completed else 0
            talk = int(q.talktime_total / q.completed) if q.completed else 0
            items.append(
                f"Event: QueueSummary\r\nQueue: {q.name}\r\nLoggedIn: {len(q.members)}\r\n"
                f"Available: {available}\r\nCallers: {len(q.waiting)}\r\nHoldTime: {hold}\r\n"
                f"TalkTime: {talk}\r\nLongestHoldTime: {longest}\r\n{idline}\r\n"
            )
        self._list(client, aid, "Queue summary will follow", items, "QueueSummaryComplete")

    def _a_queueadd(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        queue, iface = msg.get("Queue", ""), msg.get("Interface", "")
        if not queue or not iface:
            client.write(_resp(aid, "Error", "Message: 'Queue' or 'Interface' not set.\r\n"))
            return
        try:
            penalty = int(msg.get("Penalty", "0") or 0)
        except ValueError:
            penalty = 0
        paused = _truthy(msg.get("Paused", "false"))
        result = self.engine.queue_add(
            queue, iface, msg.get("MemberName", ""), penalty, paused, "dynamic"
        )
        if isinstance(result, str):
            client.write(_resp(aid, "Error", f"Message: {result}\r\n"))
        else:
            client.write(_resp(aid, "Success", "Message: Added interface to queue\r\n"))

    def _a_queueremove(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        queue, iface = msg.get("Queue", ""), msg.get("Interface", "")
        if not queue or not iface:
            client.write(
                _resp(aid, "Error", "Message: Need 'Queue' and 'Interface' parameters.\r\n")
            )
            return
        err = self.engine.queue_remove(queue, iface)
        if err:
            client.write(_resp(aid, "Error", f"Message: {err}\r\n"))
        else:
            client.write(_resp(aid, "Success", "Message: Removed interface from queue\r\n"))

    def _a_queuepause(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        iface = msg.get("Interface", "")
        if not iface or "Paused" not in msg:
            client.write(
                _resp(aid, "Error", "Message: Need 'Interface' and 'Paused' parameters.\r\n")
            )
            return
        paused = _truthy(msg["Paused"])
        err = self.engine.queue_pause(
            msg.get("Queue") or None, iface, paused, msg.get("Reason", "")
        )
        if err:
            client.write(_resp(aid, "Error", f"Message: {err}\r\n"))
        else:
            word = "paused" if paused else "unpaused"
            client.write(_resp(aid, "Success", f"Message: Interface {word} successfully\r\n"))

    def _a_queuepenalty(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        iface = msg.get("Interface", "")
        try:
            penalty = int(msg.get("Penalty", ""))
        except ValueError:
            penalty = -1
        err = self.engine.queue_penalty(msg.get("Queue") or None, iface, penalty)
        if err:
            client.write(_resp(aid, "Error", f"Message: {err}\r\n"))
        else:
            client.write(_resp(aid, "Success", "Message: Interface penalty set successfully\r\n"))

    def _a_originate(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        if not msg.get("Channel"):
            client.write(_resp(aid, "Error", "Message: Channel not specified\r\n"))
            return
        variables: list[tuple[str, str]] = []
        for line in msg.get("Variable", "").split("\n") if "Variable" in msg else []:
            for part in line.split(","):  # Asterisk splits Variable headers on commas
                k, sep, v = part.partition("=")
                if sep and k.strip():
                    variables.append((k.strip(), v))
        is_async = _truthy(msg.get("Async", "false"))
        if is_async:
            client.write(_resp(aid, "Success", "Message: Originate successfully queued\r\n"))
        call = self.engine.originate(msg, variables)
        if not is_async:
            if call is None:
                client.write(_resp(aid, "Error", "Message: Originate failed\r\n"))
            else:
                self._sync_originates[call.linkedid] = (client, aid)

    def _a_hangup(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        name = msg.get("Channel", "")
        try:
            cause = int(msg.get("Cause", "16") or 16)
        except ValueError:
            cause = 16
        if not name:
            client.write(_resp(aid, "Error", "Message: No channel specified\r\n"))
            return
        if name not in self.engine.chans:
            client.write(_resp(aid, "Error", "Message: No such channel\r\n"))
            return
        client.write(_resp(aid, "Success", "Message: Channel Hungup\r\n"))
        self.engine.hangup_channel(name, cause)

    def _a_redirect(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        name = msg.get("Channel", "")
        exten = msg.get("Exten", "")
        if not name:
            client.write(_resp(aid, "Error", "Message: Channel not specified\r\n"))
            return
        if name not in self.engine.chans:
            client.write(_resp(aid, "Error", f"Message: Channel does not exist: {name}\r\n"))
            return
        if not exten:
            client.write(_resp(aid, "Error", "Message: Exten not specified\r\n"))
            return
        ch = self.engine.chans[name]
        call = self.engine.chan_call.get(name)
        if call is None or ch is not call.caller:
            client.write(
                _resp(aid, "Error", "Message: Redirect of this channel is not simulated\r\n")
            )
            return
        client.write(_resp(aid, "Success", "Message: Redirect successful\r\n"))
        self.engine.redirect(name, msg.get("Context", ""), exten)

    def _a_blindtransfer(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        name = msg.get("Channel", "")
        if name not in self.engine.chans:
            client.write(_resp(aid, "Error", "Message: No such channel\r\n"))
            return
        call = self.engine.chan_call.get(name)
        leg = call.agent if call is not None else None
        exten = msg.get("Exten", "")
        if (
            call is None
            or leg is None
            or leg.chan.name != name
            or call.caller.bridge is None
            or self.engine.resolve(exten) is None
        ):
            client.write(_resp(aid, "Error", "Message: Transfer failed\r\n"))
            return
        client.write(_resp(aid, "Success", "Message: Transfer succeeded\r\n"))
        self.engine.blind_transfer(name, msg.get("Context", ""), exten)

    def _a_getvar(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        var = msg.get("Variable", "")
        if not var:
            client.write(_resp(aid, "Error", "Message: No variable specified\r\n"))
            return
        value = self.engine.getvar(msg.get("Channel"), var)
        if value is None:
            client.write(_resp(aid, "Error", "Message: No such channel\r\n"))
            return
        client.write(_resp(aid, "Success", f"Variable: {var}\r\nValue: {value}\r\n"))

    def _a_setvar(self, client: _Client, msg: dict[str, str], aid: str | None) -> None:
        var = msg.get("Variable", "")
        if not var:
            client.write(_resp(aid, "Error", "Message: No variable specified\r\n"))
            return
        if not self.engine.setvar(msg.get("Channel"), var, msg.get("Value", "")):
            client.write(_resp(aid, "Error", "Message: No such channel\r\n"))
            return
        client.write(_resp(aid, "Success", "Message: Variable Set\r\n"))


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "yes", "1", "on")


_Handler = Callable[[PbxSimulator, _Client, dict[str, str], "str | None"], None]

_ACTIONS: dict[str, Any] = {
    "login": PbxSimulator._a_login,
    "logoff": PbxSimulator._a_logoff,
    "ping": PbxSimulator._a_ping,
    "events": PbxSimulator._a_events,
    "corestatus": PbxSimulator._a_corestatus,
    "coresettings": PbxSimulator._a_coresettings,
    "command": PbxSimulator._a_command,
    "coreshowchannels": PbxSimulator._a_coreshowchannels,
    "status": PbxSimulator._a_status,
    "queuestatus": PbxSimulator._a_queuestatus,
    "queuesummary": PbxSimulator._a_queuesummary,
    "queueadd": PbxSimulator._a_queueadd,
    "queueremove": PbxSimulator._a_queueremove,
    "queuepause": PbxSimulator._a_queuepause,
    "queuepenalty": PbxSimulator._a_queuepenalty,
    "originate": PbxSimulator._a_originate,
    "hangup": PbxSimulator._a_hangup,
    "redirect": PbxSimulator._a_redirect,
    "blindtransfer": PbxSimulator._a_blindtransfer,
    "getvar": PbxSimulator._a_getvar,
    "setvar": PbxSimulator._a_setvar,
}


def run_simulator(settings: SimulatorSettings) -> int:
    """Blocking entry point of `cti simulate-pbx`: 0 after SIGINT/SIGTERM, 3 if the port
    cannot be bound."""

    async def main() -> int:
        sim = PbxSimulator(settings)
        try:
            await sim.start()
        except OSError as e:
            log.error("cannot listen", host=settings.host, port=settings.port, error=str(e))
            return 3
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
                pass
        try:
            await stop.wait()
        finally:
            await sim.stop()
            log.info("PBX simulator stopped", calls=sim.engine.processed_calls)
        return 0

    return asyncio.run(main())
