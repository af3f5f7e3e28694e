"""The CRM's vocabulary and column sizes, without SQLAlchemy.

Kept apart from :mod:`crm_bridge.models` so that code validating input (the CSV parser, the
custom field rules) can run in a process that never imports the ORM: the import's worker
processes start in a fraction of the time.
"""

CUSTOMER_KINDS = ("person", "organisation")
PHONE_KINDS = ("mobile", "landline", "work", "fax", "other")
CUSTOM_FIELD_TYPES = ("text", "number", "date", "bool", "choice")
MAX_CUSTOM_FIELDS = 64
INTERACTION_DIRECTIONS = ("inbound", "outbound", "internal")
INTERACTION_CHANNELS = ("phone", "email", "chat", "sms")
CASE_STATUSES = ("open", "pending", "closed")
CALLBACK_STATES = ("scheduled", "offered", "done", "missed", "cancelled")

#: column sizes; the store validates against these before writing so a too long value is a
#: clear error naming the field, not a database-specific truncation or failure
LIMITS = {
    "name": 200,
    "street": 200,
    "postcode": 20,
    "city": 100,
    "country": 2,
    "segment": 50,
    "language": 35,
    "time_zone": 64,
    "phone_raw": 64,
    "e164": 20,
    "extension": 10,
    "email": 254,
    "id_type": 32,
    "id_value": 64,
    "field_name": 64,
    "field_label": 200,
    "text_value": 1000,
    "call_id": 64,
    "leg": 128,
    "queue": 80,
    "agent": 80,
    "campaign": 80,
    "outcome": 32,
    "disposition": 64,
    "notes": 20000,
    "taxonomy": 80,
    "subject": 200,
    "owner": 80,
    "purpose": 50,
    "source": 100,
    "actor": 80,
}
