"""Settings of the CRM bridge: where the store lives, how numbers are normalized, which
adapter answers lookups."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpCrmSettings(_Strict):
    """External CRM over HTTP: URL templates with {number}, {account}, {email}, {id}."""

    base_url: str = ""
    identify_url: str = "/customers?phone={number}"
    search_url: str = "/customers?q={query}"
    card_url: str = "/customers/{id}"
    history_url: str = "/customers/{id}/interactions"
    interaction_url: str = "/interactions"
    #: PATCH target for wrap-up (notes, disposition, customer link) of one interaction
    interaction_update_url: str = "/interactions/{id}"
    #: POST target for a new customer, PATCH target for changed fields
    create_url: str = "/customers"
    update_url: str = "/customers/{id}"
    #: JSON field mapping: our field name -> dotted path in the CRM's JSON (list indexes are
    #: path parts too: "contact.phones.0.number"). Keys: "customers" (the list in identify
    #: and search answers), "id", "name", "kind", "street", "postcode", "city", "country",
    #: "segment", "vip", "language", "time_zone", "phones" (list of strings or objects with
    #: "number"/"kind"), "emails", "custom.<field>", "extra.<field>", "interactions" (the list
    #: in history answers), "interaction.<field>" (e.g. "interaction.notes": "comment").
    #: Unmapped keys are read under our own name.
    field_map: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=0.5, gt=0)
    cache_ttl: float = Field(default=30.0, ge=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset: float = Field(default=30.0, gt=0)
    auth_header: str = ""


class CrmSettings(_Strict):
    #: SQLAlchemy async URL; empty means a SQLite file `cti.db` in the data directory
    url: str = ""
    adapter: str = Field(default="builtin", pattern=r"^(builtin|http)$")
    default_region: str = Field(default="DE", pattern=r"^[A-Z]{2}$")
    #: area code prefixed to national numbers dialled without one (e.g. "30" for Berlin)
    default_area: str = Field(default="", pattern=r"^[0-9]{0,6}$")
    #: channel variables that carry an IVR-entered identifier, and the id type each means
    ivr_variables: dict[str, str] = Field(
        default_factory=lambda: {"ACCOUNT": "account", "CARD": "card", "CONTRACT": "contract"}
    )
    recent_interactions: int = Field(default=10, ge=0, le=200)
    lookup_timeout: float = Field(default=0.15, gt=0)
    #: at start, read a SQLite file up to this size into the OS cache (bigger files: only the
    #: lookup indexes); lookups run off the event loop until that is done. 0 = never
    preload_mb: int = Field(default=4096, ge=0)
    #: purposes that need an explicit opt-in before the dialer may call (others are allowed
    #: unless the customer opted out); the do-not-call list always wins
    consent_required_purposes: list[str] = Field(default_factory=lambda: ["marketing"])
    #: at most this many candidates are shown for a 'many' identification
    max_candidates: int = Field(default=20, ge=2, le=200)
    http: HttpCrmSettings = Field(default_factory=HttpCrmSettings)
