"""An external CRM over HTTP behind the same :class:`~crm_bridge.adapter.CrmAdapter` interface.

The external CRM is the part of the call path we do not control, so this adapter is built
around failure:

* every request has a timeout (``HttpCrmSettings.timeout``); ``identify`` additionally
  answers within ``CrmSettings.lookup_timeout`` whatever happens;
* ``identify`` never raises: a timeout, a connection error, a 5xx answer, malformed JSON or
  JSON of the wrong shape all give ``Identification(status="degraded")`` with the caller
  number and the reason;
* successful answers are cached for ``cache_ttl`` seconds (bounded, least recently used
  dropped first), so a busy hotline does not hammer the CRM with the same number;
* a circuit breaker opens after ``breaker_failures`` failures in a row: while open, calls fail
  at once (no waiting on a dead CRM); after ``breaker_reset`` seconds one trial call is let
  through (half-open) and its outcome closes or re-opens the breaker.

Data the CTI owns (callbacks, consent, the do-not-call list) lives in the built-in store;
pass it as ``local`` and those calls are delegated. Without it ``may_contact`` refuses
(compliance fails closed) and ``schedule_callback`` raises :class:`CrmUnavailable`.

Other calls (search, card, history, writes) raise :class:`CrmUnavailable` on failure, with
a message fit for the agent's screen.

Identification makes ONE request: ``identify_url`` filled with ``{number}`` (E.164),
``{email}``, ``{did}`` (the dialled number, as given) and one placeholder per IVR id
type (``{account}``, ``{card}``...; unused ones are empty). Zero customers -> none,
one -> one, several -> many (evidence: what was sent). The external CRM decides how the
keys combine, so ``conflict`` is not detected here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from string import Formatter
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import structlog

from crm_bridge.adapter import (
    CallbackView,
    Candidate,
    CrmAdapter,
    CrmUnavailable,
    CustomerCard,
    CustomerSummary,
    Identification,
    Identity,
    InteractionRecord,
    InteractionView,
    NewCase,
    NewCustomer,
    NewPhone,
    PhoneView,
)
from crm_bridge.normalize import InvalidEmail, is_withheld, normalize_email, try_normalize_phone
from crm_bridge.settings import CrmSettings

__all__ = ["CircuitBreaker", "HttpCrmAdapter", "MalformedAnswer"]

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

_MAX_BODY = 4 * 1024 * 1024
_CACHE_SIZE = 10_000


class MalformedAnswer(Exception):
    """The CRM answered, but not with what the field mapping expects."""


class CircuitBreaker:
    """Closed -> (N failures in a row) -> open -> (reset time) -> half-open (one trial)."""

    def __init__(self, failures: int, reset: float, clock: Callable[[], float]) -> None:
        self._limit = failures
        self._reset = reset
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._reset:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        st = self.state
        if st == "closed":
            return True
        if st == "half-open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_running = False

    def failure(self) -> None:
        self._trial_running = False
        self._failures += 1
        if self._opened_at is not None or self._failures >= self._limit:
            self._opened_at = self._clock()


class _TtlCache:
    def __init__(self, ttl: float, clock: Callable[[], float], size: int = _CACHE_SIZE) -> None:
        self._ttl = ttl
        self._clock = clock
        self._size = size
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> Any | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        if hit[0] < self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return hit[1]

    def put(self, key: str, value: Any) -> None:
        if self._ttl <= 0:
            return
        self._data[key] = (self._clock() + self._ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._size:
            self._data.popitem(last=False)

    def drop(self, prefix: str) -> None:
        for k in [k for k in self._data if k.startswith(prefix)]:
            del self._data[k]


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def _fill(template: str, values: Mapping[str, str]) -> str:
    """URL template with every placeholder URL-quoted; unknown placeholders become ""."""
    quoted = _Blank({k: quote(str(v), safe="") for k, v in values.items()})
    return Formatter().vformat(template, (), quoted)


def _path_get(obj: Any, path: str) -> Any:
    cur = obj
    for part in path.split("."):
        if part == "":
            continue
        if isinstance(cur, Mapping):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit():
            i = int(part)
            cur = cur[i] if i < len(cur) else None
        else:
            return None
        if cur is None:
            return None
    return cur


def _as_text(v: Any, field: str) -> str:
    if v is None:
        return ""
    if isinstance(v, str | int | float) and not isinstance(v, bool):
        return str(v)
    raise MalformedAnswer(f"field {field!r} is not text")


def _as_time(v: Any) -> datetime | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class HttpCrmAdapter:
    def __init__(
        self,
        settings: CrmSettings,
        *,
        local: CrmAdapter | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._http = settings.http
        self._local = local
        self._session = session
        self._own_session = session is None
        self._clock = clock
        self._map = dict(settings.http.field_map)
        self.breaker = CircuitBreaker(
            settings.http.breaker_failures, settings.http.breaker_reset, clock
        )
        self._cache = _TtlCache(settings.http.cache_ttl, clock)
        self._headers: dict[str, str] = {"Accept": "application/json"}
        if settings.http.auth_header:
            name, _, value = settings.http.auth_header.partition(":")
            if value:
                self._headers[name.strip()] = value.strip()
            else:  # a bare token
                self._headers["Authorization"] = name.strip()

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    # ------------------------------------------------------------------ transport

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._http.timeout),
                headers=self._headers,
            )
            self._own_session = True
        return self._session

    def _url(self, template: str, values: Mapping[str, str]) -> str:
        return self._http.base_url.rstrip("/") + _fill(template, values)

    async def _request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        allow_404: bool = False,
        parse: Callable[[Any], _T] = lambda d: d,
    ) -> _T:
        """One call through the breaker: JSON (None for a 404 when allowed) through ``parse``.

        ``parse`` maps the JSON to our types and raises MalformedAnswer when the shape is
        wrong; that counts as a failure of the CRM like a timeout or a 5xx does."""
        if not self._http.base_url:
            raise CrmUnavailable("external CRM not configured (crm.http.base_url is empty)")
        if not self.breaker.allow():
            raise CrmUnavailable("external CRM unavailable (circuit open)")
        try:
            async with asyncio.timeout(self._http.timeout):
                async with self._client().request(method, url, json=body) as resp:
                    if allow_404 and resp.status == 404:
                        self.breaker.success()
                        return parse(None)
                    if resp.status >= 500:
                        raise CrmUnavailable(f"external CRM error (HTTP {resp.status})")
                    if resp.status >= 400:
                        # our request was refused: the CRM itself is up
                        self.breaker.success()
                        text = (await resp.content.read(500)).decode("utf-8", "replace")
                        raise CrmUnavailable(
                            f"external CRM refused the request (HTTP {resp.status}): {text}"
                        )
                    raw = await resp.content.read(_MAX_BODY + 1)
            if len(raw) > _MAX_BODY:
                raise MalformedAnswer("answer too large")
            data = json.loads(raw) if raw.strip() else None
            result = parse(data)
        except TimeoutError:
            self.breaker.failure()
            log.warning("external crm timeout", method=method, breaker=self.breaker.state)
            raise CrmUnavailable("external CRM timeout") from None
        except (aiohttp.ClientError, OSError) as e:
            self.breaker.failure()
            log.warning("external crm unreachable", error=type(e).__name__)
            raise CrmUnavailable(f"external CRM unreachable ({type(e).__name__})") from None
        except (json.JSONDecodeError, UnicodeDecodeError, MalformedAnswer) as e:
            self.breaker.failure()
            log.warning("external crm sent malformed json", method=method)
            detail = f" ({e})" if isinstance(e, MalformedAnswer) else ""
            raise CrmUnavailable(f"external CRM sent malformed JSON{detail}") from None
        except CrmUnavailable as e:
            if "HTTP 5" in str(e):
                self.breaker.failure()
            raise
        self.breaker.success()
        return result

    # ------------------------------------------------------------------ mapping

    def _get(self, obj: Any, key: str) -> Any:
        return _path_get(obj, self._map.get(key, key))

    def _list(self, data: Any, key: str) -> list[Any]:
        if key in self._map:
            items = _path_get(data, self._map[key])
        elif isinstance(data, list):
            items = data
        elif isinstance(data, Mapping):
            items = next(
                (
                    data[k]
                    for k in (key, "results", "items", "data")
                    if isinstance(data.get(k), list)
                ),
                None,
            )
        else:
            items = None
        if items is None and data is None:
            return []
        if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
            raise MalformedAnswer(f"expected a list of {key}")
        return items

    def _summary(self, obj: Mapping[str, Any]) -> CustomerSummary:
        ident = _as_text(self._get(obj, "id"), "id")
        if not ident:
            raise MalformedAnswer("customer without id")
        return CustomerSummary(
            id=ident,
            name=_as_text(self._get(obj, "name"), "name"),
            kind=_as_text(self._get(obj, "kind"), "kind") or "person",
            postcode=_as_text(self._get(obj, "postcode"), "postcode"),
            city=_as_text(self._get(obj, "city"), "city"),
            segment=_as_text(self._get(obj, "segment"), "segment"),
            vip=bool(self._get(obj, "vip")),
        )

    def _card(self, obj: Mapping[str, Any]) -> CustomerCard:
        s = self._summary(obj)
        phones: list[PhoneView] = []
        for p in self._get(obj, "phones") or ():
            raw, kind = (p, "other") if isinstance(p, str) else ("", "other")
            if isinstance(p, Mapping):
                raw = _as_text(p.get("number") or p.get("e164"), "phones.number")
                kind = _as_text(p.get("kind") or p.get("type"), "phones.kind") or "other"
            e164 = try_normalize_phone(
                raw,
                region=self._settings.default_region,
                default_area=self._settings.default_area,
            )
            phones.append(PhoneView(e164=e164 or "", raw=raw, kind=kind))
        emails = tuple(str(e).lower() for e in self._get(obj, "emails") or () if e)
        custom: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, path in self._map.items():
            if key.startswith("custom."):
                custom[key[7:]] = _path_get(obj, path)
            elif key.startswith("extra."):
                extra[key[6:]] = _path_get(obj, path)
        if not any(k.startswith("custom.") for k in self._map) and isinstance(
            obj.get("custom"), Mapping
        ):
            custom = dict(obj["custom"])
        return CustomerCard(
            id=s.id,
            name=s.name,
            kind=s.kind,
            street=_as_text(self._get(obj, "street"), "street"),
            postcode=s.postcode,
            city=s.city,
            country=_as_text(self._get(obj, "country"), "country"),
            segment=s.segment,
            vip=s.vip,
            language=_as_text(self._get(obj, "language"), "language"),
            time_zone=_as_text(self._get(obj, "time_zone"), "time_zone"),
            phones=tuple(phones),
            emails=emails,
            custom=custom,
            extra=extra,
        )

    def _interaction(self, obj: Mapping[str, Any], customer_id: str | None) -> InteractionView:
        def g(name: str) -> Any:
            return _path_get(obj, self._map.get(f"interaction.{name}", name))

        ident = _as_text(g("id"), "interaction.id")
        if not ident:
            raise MalformedAnswer("interaction without id")
        return InteractionView(
            id=ident,
            customer_id=_as_text(g("customer_id"), "customer_id") or customer_id,
            direction=_as_text(g("direction"), "direction") or "inbound",
            channel=_as_text(g("channel"), "channel") or "phone",
            call_id=_as_text(g("call_id"), "call_id"),
            leg=_as_text(g("leg"), "leg"),
            number=_as_text(g("number"), "number"),
            did=_as_text(g("did"), "did"),
            offered_at=_as_time(g("offered_at")),
            answered_at=_as_time(g("answered_at")),
            ended_at=_as_time(g("ended_at")),
            queue=_as_text(g("queue"), "queue"),
            agent=_as_text(g("agent"), "agent"),
            campaign=_as_text(g("campaign"), "campaign"),
            outcome=_as_text(g("outcome"), "outcome"),
            notes=_as_text(g("notes"), "notes"),
            disposition=_as_text(g("disposition"), "disposition"),
        )

    # ------------------------------------------------------------------ identify

    async def identify(self, who: Identity) -> Identification:
        raw = who.number
        withheld = is_withheld(raw) and not (raw is None and (who.email or who.ivr))
        number = None
        if not is_withheld(raw):
            number = try_normalize_phone(
                raw,
                region=self._settings.default_region,
                default_area=self._settings.default_area,
            )
        email = None
        if who.email:
            try:
                email = normalize_email(who.email)
            except InvalidEmail:
                email = None
        ivr = {k.strip().lower(): v.strip() for k, v in who.ivr.items() if v and v.strip()}
        if number is None and email is None and not ivr:
            return Identification(status="none", withheld=withheld)
        deadline = min(self._settings.lookup_timeout, self._http.timeout)
        try:
            async with asyncio.timeout(deadline):
                return await self._identify(number, email, ivr, withheld, who.did or "")
        except TimeoutError:
            reason = "crm timeout"
        except CrmUnavailable as e:
            reason = f"crm unavailable: {e}"
        except MalformedAnswer as e:
            self.breaker.failure()
            reason = f"crm unavailable: external CRM sent malformed JSON ({e})"
        except Exception as e:  # never an exception into the call path
            log.exception("external crm identify failed")
            reason = f"crm error: {type(e).__name__}"
        return Identification(
            status="degraded", number_e164=number, withheld=withheld, reason=reason
        )

    async def _identify(
        self,
        number: str | None,
        email: str | None,
        ivr: Mapping[str, str],
        withheld: bool,
        did: str,
    ) -> Identification:
        values = {"number": number or "", "email": email or "", "did": did, **ivr}
        url = self._url(self._http.identify_url, values)
        key = f"identify {url}"
        cached = self._cache.get(key)
        if cached is None:
            items = await self._request(
                "GET", url, parse=lambda d: self._check_customers(self._list(d, "customers"))
            )
            self._cache.put(key, items)
        else:
            items = cached
        evidence = tuple(
            e
            for e in (
                f"phone {number}" if number else "",
                *(f"{t} {v}" for t, v in ivr.items()),
                f"email {email}" if email else "",
            )
            if e
        )
        if not items:
            return Identification(status="none", number_e164=number, withheld=withheld)
        if len(items) == 1:
            card = self._card(items[0])
            self._cache.put(f"card {card.id}", card)
            return Identification(
                status="one",
                number_e164=number,
                withheld=withheld,
                card=card,
                candidates=(Candidate(customer=card.summary(), evidence=evidence, score=1.0),),
            )
        cands = tuple(
            Candidate(customer=self._summary(i), evidence=evidence, score=1.0)
            for i in items[: self._settings.max_candidates]
        )
        return Identification(
            status="many", number_e164=number, withheld=withheld, candidates=cands
        )

    # ------------------------------------------------------------------ reads

    async def search(self, query: str, limit: int = 20) -> list[CustomerSummary]:
        q = (query or "").strip()[:200]
        if not q:
            return []
        return await self._request(
            "GET",
            self._url(self._http.search_url, {"query": q}),
            parse=lambda d: [self._summary(i) for i in self._list(d, "customers")[:limit]],
        )

    async def card(self, customer_id: str) -> CustomerCard | None:
        key = f"card {customer_id}"
        hit = self._cache.get(key)
        if isinstance(hit, CustomerCard):
            return hit

        def parse(data: Any) -> CustomerCard | None:
            if data is None:
                return None
            obj = self._get(data, "customer") if "customer" in self._map else data
            if not isinstance(obj, Mapping):
                raise MalformedAnswer("expected a customer object")
            return self._card(obj)

        card = await self._request(
            "GET", self._url(self._http.card_url, {"id": customer_id}), allow_404=True, parse=parse
        )
        if card is not None:
            self._cache.put(key, card)
        return card

    async def history(self, customer_id: str, limit: int = 20) -> list[InteractionView]:
        return await self._request(
            "GET",
            self._url(self._http.history_url, {"id": customer_id}),
            allow_404=True,
            parse=lambda d: [
                self._interaction(i, customer_id) for i in self._list(d, "interactions")[:limit]
            ],
        )

    # ------------------------------------------------------------------ writes

    def _created_id(self, data: Any, what: str) -> str:
        key = "id" if what == "customer" else f"{what}.id"
        path = self._map.get(key, "id")
        ident = _path_get(data, path) if isinstance(data, Mapping) else None
        if ident is None or isinstance(ident, bool | dict | list) or ident == "":
            raise MalformedAnswer(f"no id of the new {what}")
        return str(ident)

    def _check_customers(self, items: list[Any]) -> list[Any]:
        """Fail on a bad answer now (counted by the breaker), not later in the card."""
        for i in items:
            self._summary(i)
        return items

    async def record_interaction(self, rec: InteractionRecord) -> str:
        body = {
            "call_id": rec.call_id,
            "leg": rec.leg,
            "direction": rec.direction,
            "channel": rec.channel,
            "number": rec.number,
            "did": rec.did,
            "offered_at": rec.offered_at.isoformat(),
            "answered_at": rec.answered_at.isoformat() if rec.answered_at else None,
            "ended_at": rec.ended_at.isoformat() if rec.ended_at else None,
            "queue": rec.queue,
            "agent": rec.agent,
            "campaign": rec.campaign,
            "outcome": rec.outcome,
            "customer_id": rec.customer_id,
            "notes": rec.notes,
            "disposition": rec.disposition,
        }
        new_id = await self._request(
            "POST",
            self._url(self._http.interaction_url, {}),
            body=body,
            parse=lambda d: self._created_id(d, "interaction"),
        )
        if rec.customer_id:
            self._cache.drop(f"card {rec.customer_id}")
        return new_id

    async def record_interactions(self, recs: Sequence[InteractionRecord]) -> list[str]:
        """One request per record, in order: the external CRM's API has no batch call. The
        first failure raises; the records before it are written."""
        return [await self.record_interaction(rec) for rec in recs]

    async def update_interaction(
        self,
        interaction_id: str,
        *,
        actor: str,
        notes: str | None = None,
        disposition: str | None = None,
        customer_id: str | None = None,
        case_ids: Sequence[str] = (),
        new_case: NewCase | None = None,
    ) -> InteractionView:
        body: dict[str, Any] = {"actor": actor}
        if notes is not None:
            body["notes"] = notes
        if disposition is not None:
            body["disposition"] = disposition
        if customer_id is not None:
            body["customer_id"] = customer_id
        if case_ids:
            body["case_ids"] = list(case_ids)
        if new_case is not None:
            body["new_case"] = {
                "type": new_case.type,
                "category": new_case.category,
                "subcategory": new_case.subcategory,
                "subject": new_case.subject,
                "owner": new_case.owner,
            }
        url = self._url(self._http.interaction_update_url, {"id": interaction_id})

        def parse(data: Any) -> InteractionView:
            if not isinstance(data, Mapping):
                raise MalformedAnswer("expected the updated interaction")
            return self._interaction(data, customer_id)

        view = await self._request("PATCH", url, body=body, parse=parse)
        if customer_id:
            self._cache.drop(f"card {customer_id}")
        return view

    async def create_customer(self, data: NewCustomer, *, actor: str) -> CustomerCard:
        body = {
            "actor": actor,
            "name": data.name,
            "kind": data.kind,
            "street": data.street,
            "postcode": data.postcode,
            "city": data.city,
            "country": data.country,
            "segment": data.segment,
            "vip": data.vip,
            "language": data.language,
            "time_zone": data.time_zone,
            "phones": [
                {"number": p, "kind": "other"}
                if isinstance(p, str)
                else {"number": p.number, "kind": p.kind}
                for p in data.phones
            ],
            "emails": list(data.emails),
            "external_ids": dict(data.external_ids),
            "custom": {k: _jsonable(v) for k, v in data.custom.items()},
        }
        new_id = await self._request(
            "POST",
            self._url(self._http.create_url, {}),
            body=body,
            parse=lambda d: self._created_id(d, "customer"),
        )
        self._cache.drop("identify ")
        card = await self.card(new_id)
        if card is None:
            raise CrmUnavailable(f"external CRM lost the new customer {new_id}")
        return card

    async def update_fields(
        self, customer_id: str, fields: Mapping[str, Any], *, actor: str
    ) -> CustomerCard:
        body = {"actor": actor, **{k: _jsonable(v) for k, v in fields.items()}}
        await self._request(
            "PATCH", self._url(self._http.update_url, {"id": customer_id}), body=body
        )
        self._cache.drop(f"card {customer_id}")
        self._cache.drop("identify ")
        card = await self.card(customer_id)
        if card is None:
            raise CrmUnavailable(f"external CRM lost customer {customer_id}")
        return card

    # ------------------------------------------------------------------ CTI-owned data

    async def schedule_callback(
        self,
        *,
        number: str,
        due_at: datetime,
        actor: str,
        time_zone: str | None = None,
        agent: str | None = None,
        customer_id: str | None = None,
        interaction_id: str | None = None,
        campaign: str = "",
        note: str = "",
    ) -> CallbackView:
        if self._local is None:
            raise CrmUnavailable("callbacks need the built-in store (no local store configured)")
        # ids of the external CRM mean nothing to the local store: keep them in the note
        ref = f"[crm customer {customer_id}] " if customer_id else ""
        return await self._local.schedule_callback(
            number=number,
            due_at=due_at,
            actor=actor,
            time_zone=time_zone,
            agent=agent,
            campaign=campaign,
            note=(ref + note)[:20000],
        )

    async def may_contact(
        self, number_e164: str, purpose: str, channel: str = "phone"
    ) -> tuple[bool, str]:
        if self._local is None:
            return False, "no consent/do-not-call store configured: contact refused"
        return await self._local.may_contact(number_e164, purpose, channel)


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, NewPhone):
        return {"number": v.number, "kind": v.kind}
    return v
