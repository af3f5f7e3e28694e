"""The AMI link: one TCP session to one Asterisk server, kept alive for the life of the daemon.

Built on panoramisk 1.4, whose `AMIProtocol` is the base of our protocol class, but panoramisk's
`Manager` and its action plumbing are NOT used, because every part of them has a sharp edge that
was measured on this machine and that this module owns instead (each one has a test against the
loopback server in tests/ami/fake_ami.py):

* `Manager.connect()` returns before the login completes. Here `wait_connected()` only turns
  true after a successful Login response AND the resync (CoreShowChannels, QueueStatus).
* A failed login (or refused connect) retries forever at a fixed delay (thousands of attempts a
  second with a tiny delay). Here both use exponential backoff with jitter
  (reconnect_min..reconnect_max), the state is reported once (`auth_failed`, `backoff`), not
  per attempt.
* Its keepalive Ping never checks the reply, so a silent peer is never detected. Here a Ping is
  sent every ping_interval and must be answered within ping_timeout, or the link is dropped and
  re-established.
* An action sent while the link is down never resolves. Here every send has a deadline;
  idempotent actions wait for the link up to it, the others fail at once (`AmiUnavailable`).
* Unanswered actions are re-sent after a reconnect (an Originate would dial twice). Here a
  non-idempotent action that was written and not answered fails with `AmiOutcomeUnknown` and is
  never written again; idempotent ones (Ping, Status, ...) are retried within their deadline.
* OriginateResponse is swallowed by the Originate's future (its "successfully queued" makes the
  action "multi"). Here an action completes on its Response (or its list's `...Complete` event
  for EventList actions) and EVERY Event, OriginateResponse included, reaches `on_message`.
* An exception in an event handler drops the connection and the rest of that read. Here it is
  counted (`stats.handler_errors`), logged once per kind, and the loop goes on.
* Its parser decodes each TCP read on its own (a UTF-8 character split across two reads is
  dropped) and drops a message's last header when its value is empty. Here `ami.framing.AmiParser`
  buffers bytes and keeps empty values.
* Its per-pattern regex dispatch (fnmatch for every handler, per event) costs more than half of
  the ingest time. Here every message goes straight to `on_message`, synchronously from
  `data_received`, no task per message.

So the Manager would have to be overridden method by method (connect, connection_made, login,
ping, send_action, send_awaiting_actions, dispatch, connection_lost, close); what is left worth
keeping is the protocol base class. The connect loop, the login, action matching by ActionID and
the keepalive are ours, small and tested.

`on_resync` is called synchronously at the exact point of the byte stream where the channel
snapshot completed: every event before it has already reached `on_message`, every event after it
comes after. QueueStatus is sent first and CoreShowChannels last, so the channel list is the most
recent part of the snapshot. List items (CoreShowChannel, QueueMember, ...) are also Events and
also reach `on_message`, like everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from panoramisk.ami_protocol import AMIProtocol

from ami.actions import Action, ActionError, build_action
from ami.framing import AmiParser
from ami.settings import AmiServerSettings

__all__ = [
    "AmiError",
    "AmiLink",
    "AmiOutcomeUnknown",
    "AmiResponse",
    "AmiTimeout",
    "AmiUnavailable",
    "LinkStats",
    "Resync",
    "backoff_delay",
]

_OK_RESPONSES = frozenset({"Success", "Follows", "Goodbye"})
#: a link that stayed up this long counts as healthy: the next reconnect starts the backoff over
_STABLE_AFTER = 10.0


@dataclass(frozen=True)
class Resync:
    """The live picture right after a (re)login, for the tracker to end calls that vanished
    while we were away and to adopt calls that began meanwhile."""

    channels: list[dict[str, str]]
    queue_params: list[dict[str, str]]
    queue_members: list[dict[str, str]]
    queue_entries: list[dict[str, str]]
    at: float


@dataclass(frozen=True)
class AmiResponse:
    """What Asterisk answered. `AmiLink.send` raises AmiError for `Response: Error` (the
    response rides along as `AmiError.response`, with ok False), so a returned one is ok."""

    ok: bool
    message: str
    headers: dict[str, str]
    #: the items of an EventList action (CoreShowChannel, QueueMember, ...), without the
    #: closing `...Complete` event
    items: list[dict[str, str]]


class AmiError(Exception):
    """Asterisk answered `Response: Error` (the message says why), or the action could not
    complete; `response` is the answer when there was one."""

    def __init__(self, message: str, response: AmiResponse | None = None) -> None:
        super().__init__(message)
        self.response = response


class AmiUnavailable(AmiError):
    """The link is down and the action was not sent (non-idempotent: at once; idempotent:
    after waiting for the link until the deadline), or the link was stopped."""


class AmiOutcomeUnknown(AmiError):
    """The action was written but no response came: the link dropped (or the deadline passed)
    before it. It may have run on the PBX; it is NOT re-sent."""


class AmiTimeout(AmiOutcomeUnknown):
    """The action was written on a live link and its response did not come in time."""


@dataclass(slots=True)
class LinkStats:
    #: messages parsed (events and responses)
    messages: int = 0
    #: garbage lines, non-UTF-8 frames, oversized partial frames, frames that are neither
    #: Event nor Response
    bad_frames: int = 0
    #: exceptions raised by on_message / on_resync / on_state (the loop went on)
    handler_errors: int = 0
    #: successful logins after the first one
    reconnects: int = 0
    #: keepalive Pings not answered within ping_timeout (each one dropped the link)
    pings_missed: int = 0
    connect_attempts: int = 0
    auth_failures: int = 0
    actions_sent: int = 0
    #: responses whose ActionID matched nothing pending (late answers after a timeout)
    unmatched_responses: int = 0


def backoff_delay(failures: int, lo: float, hi: float, jitter: float, rnd: random.Random) -> float:
    """Delay before the next attempt after `failures` consecutive failures (0 for the first
    retry): lo * 2**failures capped at hi, then spread by +/- jitter so that many clients cut
    off at once do not come back in lockstep."""
    base = min(hi, lo * (2.0 ** min(failures, 60)))
    if jitter:
        base *= 1.0 + rnd.uniform(-jitter, jitter)
    return max(0.0, base)


class _LinkDropped(Exception):
    pass


class _AuthFailed(Exception):
    pass


class _Pending:
    """An action written on one connection, waiting for its Response (and list items)."""

    __slots__ = ("future", "hook", "is_list", "items", "name", "response")

    def __init__(self, name: str, future: asyncio.Future[AmiResponse | None]) -> None:
        self.name = name
        self.future = future
        self.items: list[dict[str, str]] = []
        self.response: dict[str, str] | None = None
        self.is_list = False
        #: called synchronously with the result (None: link dropped), from data_received
        self.hook: Callable[[AmiResponse | None], None] | None = None

    def finish(self, result: AmiResponse | None) -> None:
        if not self.future.done():
            self.future.set_result(result)
        hook, self.hook = self.hook, None
        if hook is not None:
            hook(result)


class _LinkProtocol(AMIProtocol):
    """panoramisk's protocol with our framing and routing (see the module docstring)."""

    def __init__(self, link: AmiLink) -> None:
        self.link = link
        self.parser = AmiParser(link._events)
        self.pending: dict[str, _Pending] = {}
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self._on_message = link._on_message
        self._clock = link._clock
        self._bad_seen = 0
        self.version: str | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.closed = False
        # panoramisk's own plumbing stays unused: no factory, no awaiting-actions queue
        self.factory = None

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        msgs = parser.feed(data)
        st = parser.stats
        bad = st.bad_lines + st.bad_utf8 + st.dropped_frames
        if bad != self._bad_seen:
            self.link._bad_input(bad - self._bad_seen, st)
            self._bad_seen = bad
        if self.version is None and parser.banner is not None:
            self.version = parser.banner
            self.link._log.debug("ami_banner", banner=parser.banner)
        if not msgs:
            return
        link = self.link
        link.stats.messages += len(msgs)
        at = self._clock()
        on_message = self._on_message
        pending = self.pending
        for msg in msgs:
            try:
                event = msg.get("Event")
                if event is not None:
                    if pending:
                        aid = msg.get("ActionID")
                        if aid is not None:
                            p = pending.get(aid)
                            if p is not None and p.is_list:
                                self._list_item(aid, p, event, msg)
                    on_message(msg, at)
                elif "Response" in msg:
                    self._response(msg)
                else:
                    link._bad_frame(msg)
            except Exception as exc:  # a consumer's bug must not stop the link
                link._handler_error(exc, msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.link._proto is self:
            self.link._mark_down()  # at once: no send may pick this connection any more
        pending, self.pending = self.pending, {}
        for p in pending.values():
            try:
                p.finish(None)
            except Exception as err:
                self.link._handler_error(err, {"Event": "Resync"})
        if not self.lost.done():
            self.lost.set_result(None)

    # -- panoramisk API, redirected --------------------------------------------------------
    def send(self, data: Any, as_list: bool = False) -> None:  # pragma: no cover - guard
        raise RuntimeError("use AmiLink.send(); panoramisk's action plumbing is not used here")

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- routing ---------------------------------------------------------------------------
    def _response(self, msg: dict[str, str]) -> None:
        aid = msg.get("ActionID")
        p = self.pending.get(aid) if aid is not None else None
        if p is None:
            self.link.stats.unmatched_responses += 1
            return
        ok = msg["Response"] in _OK_RESPONSES
        if ok and (
            msg.get("EventList", "").lower() == "start"
            or msg.get("Message", "").endswith("will follow")
        ):
            p.response = msg
            p.is_list = True
            return
        self.pending.pop(aid)  # type: ignore[arg-type]  # aid is not None when p is
        p.finish(AmiResponse(ok, msg.get("Message", ""), msg, []))

    def _list_item(self, aid: str, p: _Pending, event: str, msg: dict[str, str]) -> None:
        if msg.get("EventList") == "Complete" or event.endswith("Complete"):
            del self.pending[aid]
            head = p.response or {}
            p.finish(AmiResponse(True, head.get("Message", ""), head, p.items))
        else:
            p.items.append(msg)


MessageHandler = Callable[[dict[str, str], float], None]


class AmiLink:
    """One managed AMI session to one Asterisk server (see the module docstring)."""

    def __init__(
        self,
        settings: AmiServerSettings,
        *,
        on_message: MessageHandler,
        on_resync: Callable[[Resync], None] | None = None,
        on_state: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        events: frozenset[str] | None = None,
    ) -> None:
        self.settings = settings
        #: the events `on_message` wants (None: all); the others are dropped while framing,
        #: except list items answering our own actions
        self._events = events
        self._on_message = on_message
        self._on_resync = on_resync
        self._on_state = on_state
        self._clock = clock
        self._log = structlog.get_logger(__name__).bind(server=settings.name)
        self.stats = LinkStats()
        self.state = "stopped"
        self._proto: _LinkProtocol | None = None
        self._up = False
        self._up_waiter: asyncio.Future[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._rnd = random.Random()
        self._id_prefix = f"cti-{settings.name}-{secrets.token_hex(3)}-"
        self._id_seq = 0
        self._logins = 0
        self._error_kinds: set[tuple[str, str]] = set()
        self._bad_kinds_logged: dict[str, int] = {}

    # -- public API ------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Logged in and resynced: actions can be sent now."""
        return self._up

    async def start(self) -> None:
        """Start the background connect loop and return at once (see wait_connected)."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"ami-link-{self.settings.name}")

    async def wait_connected(self, timeout: float) -> bool:  # noqa: ASYNC109 (public API)
        return await self._wait_up(timeout)

    async def stop(self) -> None:
        """Log off if the link is up, then cancel everything; no task is left behind and
        every waiting send fails with AmiUnavailable / AmiOutcomeUnknown."""
        self._stopping = True
        proto = self._proto
        if self._up and proto is not None and not proto.closed:
            with contextlib.suppress(AmiError, ActionError):
                await self._request(
                    proto, build_action("Logoff"), min(1.0, self.settings.action_timeout)
                )
        self._mark_down()
        waiter, self._up_waiter = self._up_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(False)
        task, self._task = self._task, None
        if task is not None and not task.done():
            # Python 3.11's wait_for swallows a cancel that races with its inner future
            # finishing (a login answer arriving as we stop), so cancel until it is gone,
            # aborting the socket so that nothing inside can wait for the peer.
            if proto is not None and not proto.closed:
                proto.abort()
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.5)
            proto = self._proto
        if proto is not None and not proto.closed:
            proto.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proto.lost), 1.0)
        self._proto = None
        self._set_state("stopped")

    async def send(
        self,
        action: Action,
        timeout: float | None = None,  # noqa: ASYNC109 (public API: a per-action deadline)
    ) -> AmiResponse:
        """Send one action and return its response (with list items for EventList actions).

        Raises AmiError on `Response: Error`, AmiUnavailable when the link is down (at once for
        non-idempotent actions, after waiting up to the deadline for idempotent ones),
        AmiOutcomeUnknown when a written non-idempotent action got no answer before the link
        dropped (it is not re-sent), AmiTimeout when no answer came by the deadline.
        """
        if not isinstance(action, Action):
            raise TypeError("AmiLink.send() takes an ami.actions.Action (use build_action)")
        limit = self.settings.action_timeout if timeout is None else timeout
        if not limit > 0:
            raise ValueError(f"timeout must be > 0, not {limit!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        idempotent = action.idempotent
        while True:
            proto = self._proto if self._up else None
            remaining = deadline - loop.time()
            if proto is None or remaining <= 0:
                if self._stopping or not idempotent:
                    raise AmiUnavailable(f"{action.name}: AMI link {self.settings.name} is down")
                if remaining <= 0 or not await self._wait_up(remaining) or self._stopping:
                    raise AmiUnavailable(
                        f"{action.name}: AMI link {self.settings.name} did not come up in time"
                    )
                continue
            resp = await self._request(proto, action, remaining)
            if resp is None:
                if not idempotent or self._stopping:
                    raise AmiOutcomeUnknown(
                        f"{action.name}: link to {self.settings.name} dropped before the "
                        "response; not re-sent"
                    )
                continue  # idempotent: send again once the link is back
            if not resp.ok:
                raise AmiError(f"{action.name}: {resp.message or 'error'}", resp)
            return resp

    # -- actions on one connection ---------------------------------------------------------
    def _issue(self, proto: _LinkProtocol, action: Action) -> tuple[str, _Pending]:
        aid = action.action_id
        if aid is None:
            self._id_seq += 1
            aid = f"{self._id_prefix}{self._id_seq}"
            data = Action(action.name, (*action.headers, ("ActionID", aid))).encode()
        else:
            data = action.encode()
        if aid in proto.pending:
            raise AmiError(f"{action.name}: ActionID {aid!r} is already in flight")
        fut: asyncio.Future[AmiResponse | None] = asyncio.get_running_loop().create_future()
        p = _Pending(action.name, fut)
        proto.pending[aid] = p
        assert proto.transport is not None
        proto.transport.write(data)
        self.stats.actions_sent += 1
        return aid, p

    async def _request(
        self, proto: _LinkProtocol, action: Action, limit: float
    ) -> AmiResponse | None:
        """Write `action` on `proto` and wait for its answer; None when the link dropped
        first. Raises AmiTimeout after `timeout` (the link stays up)."""
        if proto.closed:
            return None
        aid, p = self._issue(proto, action)
        try:
            return await asyncio.wait_for(p.future, max(0.0, limit))
        except TimeoutError:
            raise AmiTimeout(
                f"{action.name}: no response from {self.settings.name} within {limit:.1f}s"
            ) from None
        finally:
            if proto.pending.get(aid) is p:
                del proto.pending[aid]

    # -- the connect loop ------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        failures = 0
        while not self._stopping:
            if self.state not in ("backoff", "auth_failed"):
                self._set_state("connecting", host=s.host, port=s.port)
            self.stats.connect_attempts += 1
            proto: _LinkProtocol | None = None
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: _LinkProtocol(self), s.host, s.port),
                    s.connect_timeout,
                )
                assert proto is not None
                self._proto = proto
                await self._login(proto)
                await self._resync(proto)
                if self._stopping:  # stop() raced with the login: do not come up
                    return
            except _AuthFailed as exc:
                if self._stopping:
                    return
                self.stats.auth_failures += 1
                self._set_state("auth_failed", username=s.username, reason=str(exc))
            except (OSError, TimeoutError, AmiError, _LinkDropped) as exc:
                if self._stopping:  # stop() aborted the socket under us
                    return
                self._set_state("backoff", reason=_reason(exc))
            else:
                up_since = loop.time()
                self._logins += 1
                if self._logins > 1:
                    self.stats.reconnects += 1
                self._mark_up(proto)
                self._set_state("connected", attempts=self.stats.connect_attempts)
                await self._keepalive(proto)
                self._mark_down()
                if self._stopping:
                    return
                self._set_state("disconnected")
                if loop.time() - up_since >= _STABLE_AFTER:
                    failures = 0
            finally:
                if proto is not None and not proto.closed and not self._up:
                    proto.abort()
            if self._stopping:
                return
            delay = backoff_delay(
                failures, s.reconnect_min, s.reconnect_max, s.reconnect_jitter, self._rnd
            )
            failures += 1
            await asyncio.sleep(delay)

    async def _login(self, proto: _LinkProtocol) -> None:
        s = self.settings
        try:
            action = build_action(
                "Login",
                {
                    "Username": s.username,
                    "Secret": s.secret.get_secret_value(),
                    "Events": s.events,
                },
            )
        except ActionError as exc:  # the message names the header, never the value
            raise _AuthFailed(f"invalid credentials setting: {exc}") from None
        resp = await self._request(proto, action, s.connect_timeout)
        if resp is None:
            raise _LinkDropped("connection closed during login")
        if not resp.ok:
            proto.abort()
            raise _AuthFailed(resp.message or "login refused")

    async def _resync(self, proto: _LinkProtocol) -> None:
        """QueueStatus then CoreShowChannels, pipelined; on_resync runs synchronously when the
        later one completes (see the module docstring for why that point)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        results: dict[str, AmiResponse | None] = {}

        def finished(key: str, resp: AmiResponse | None) -> None:
            results[key] = resp
            if len(results) < 2 or done.done():
                return
            q, c = results["q"], results["c"]
            if q is None or c is None:
                done.set_result(False)
                return
            if not (q.ok and c.ok):
                refused = [n for n, r in (("QueueStatus", q), ("CoreShowChannels", c)) if not r.ok]
                self._log.error(
                    "ami_resync_refused",
                    actions=refused,
                    message=(q.message if not q.ok else c.message),
                    hint="the manager.conf user needs read permission for them",
                )
                done.set_result(True)
                return
            params: list[dict[str, str]] = []
            members: list[dict[str, str]] = []
            entries: list[dict[str, str]] = []
            for item in q.items:
                ev = item.get("Event")
                if ev == "QueueMember":
                    members.append(item)
                elif ev == "QueueEntry":
                    entries.append(item)
                elif ev == "QueueParams":
                    params.append(item)
            snapshot = Resync(c.items, params, members, entries, self._clock())
            self._log.info(
                "ami_resync",
                channels=len(c.items),
                queues=len(params),
                members=len(members),
                waiting=len(entries),
            )
            done.set_result(True)
            if self._on_resync is not None:
                try:
                    self._on_resync(snapshot)
                except Exception as exc:
                    self._handler_error(exc, {"Event": "Resync"})

        if proto.closed:
            raise _LinkDropped("connection closed before the resync")
        ids: list[tuple[str, _Pending]] = []
        for key, name in (("q", "QueueStatus"), ("c", "CoreShowChannels")):
            aid, p = self._issue(proto, build_action(name))
            p.hook = functools.partial(finished, key)
            ids.append((aid, p))
        try:
            ok = await asyncio.wait_for(done, self.settings.action_timeout)
        except TimeoutError:
            raise AmiTimeout("resync: no complete answer in time") from None
        finally:
            for aid, p in ids:
                p.hook = None
                if proto.pending.get(aid) is p:
                    del proto.pending[aid]
        if not ok:
            raise _LinkDropped("connection closed during resync")

    async def _keepalive(self, proto: _LinkProtocol) -> None:
        """Return when the connection is gone: closed by the peer, or dropped by us because
        a Ping was not answered in time (a silent peer)."""
        s = self.settings
        while not proto.closed and not self._stopping:
            try:
                await asyncio.wait_for(asyncio.shield(proto.lost), s.ping_interval)
                return
            except TimeoutError:
                pass
            try:
                resp = await self._request(proto, build_action("Ping"), s.ping_timeout)
            except AmiTimeout:
                self.stats.pings_missed += 1
                self._log.warning("ami_ping_unanswered", timeout=s.ping_timeout)
                proto.abort()
                await proto.lost
                return
            if resp is None:
                return

    # -- state -----------------------------------------------------------------------------
    def _mark_up(self, proto: _LinkProtocol) -> None:
        self._proto = proto
        self._up = True
        waiter, self._up_waiter = self._up_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def _mark_down(self) -> None:
        self._up = False

    async def _wait_up(self, limit: float) -> bool:
        if self._up:
            return True
        if self._stopping or limit <= 0:
            return False
        waiter = self._up_waiter
        if waiter is None or waiter.done():
            waiter = self._up_waiter = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), limit)
        except TimeoutError:
            return False

    def _set_state(self, state: str, **info: Any) -> None:
        """Report and log a state CHANGE; repeated attempts in the same state stay silent."""
        if state == self.state:
            return
        previous, self.state = self.state, state
        level = "warning" if state in ("backoff", "auth_failed", "disconnected") else "info"
        getattr(self._log, level)("ami_state", state=state, previous=previous, **info)
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception as exc:
                self._handler_error(exc, {"Event": "State"})

    # -- errors and garbage ----------------------------------------------------------------
    def _handler_error(self, exc: Exception, msg: dict[str, str]) -> None:
        self.stats.handler_errors += 1
        kind = (type(exc).__name__, msg.get("Event") or msg.get("Response") or "?")
        if kind not in self._error_kinds:
            self._error_kinds.add(kind)
            self._log.error("ami_handler_error", error=kind[0], message_type=kind[1], exc_info=exc)

    def _bad_input(self, n: int, st: Any) -> None:
        self.stats.bad_frames += n
        self._log_bad(
            "garbage",
            bad_lines=st.bad_lines,
            bad_utf8=st.bad_utf8,
            dropped_frames=st.dropped_frames,
        )

    def _bad_frame(self, msg: dict[str, str]) -> None:
        self.stats.bad_frames += 1
        self._log_bad("untyped_frame", headers=len(msg))

    def _log_bad(self, kind: str, **info: Any) -> None:
        """Logged on the 1st, 10th, 100th... occurrence: visible, never a flood."""
        n = self._bad_kinds_logged.get(kind, 0) + 1
        self._bad_kinds_logged[kind] = n
        if str(n).rstrip("0") == "1":
            self._log.warning("ami_bad_input", kind=kind, count=n, **info)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
