"""Stack configuration: read in this one place, validated by a typed model before any resource exists.

Every error names the key as the operator types it (``mailer:smtpConnectionUri``), says what is wrong
and how to fix it, on one line. ``ConfigError`` is a ``pulumi.RunError``, so ``pulumi preview`` prints
the message without a stack trace. No message ever echoes the SMTP URI or the password.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

import pulumi
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from infra.locations import FIRESTORE_LOCATIONS, FIRESTORE_MULTI_REGIONS, FUNCTION_REGIONS
from infra.providers import AUTH_METHODS, PROVIDERS, ProviderError, check_token_url, resolve

NAMESPACE = "mailer"
PASSWORD_KEY = f"{NAMESPACE}:smtpPassword"
# OAuth2 (XOAUTH2) secrets, required with mailer:smtpAuthMethod XOAUTH2 and refused without it.
OAUTH2_CLIENT_SECRET_KEY = f"{NAMESPACE}:oauth2ClientSecret"
OAUTH2_REFRESH_TOKEN_KEY = f"{NAMESPACE}:oauth2RefreshToken"
TTL_EXPIRE_TYPES = ("never", "hour", "day", "week", "month", "year")

# Cloud Run limits for a 2nd-gen function (Cloud Run "CPU limits" / "Memory limits" pages).
MIN_MEMORY_BYTES = 128 * 2**20
MAX_MEMORY_BYTES = 32 * 2**30
WHOLE_CPUS = (1.0, 2.0, 4.0, 6.0, 8.0)
MIN_FRACTIONAL_CPU = 0.08
# (memory above this many bytes, CPUs it needs at least)
CPU_NEEDED_FOR_MEMORY = (
    (24 * 2**30, 8.0),
    (16 * 2**30, 6.0),
    (8 * 2**30, 4.0),
    (4 * 2**30, 2.0),
    (1 * 2**30, 1.0),
    (512 * 2**20, 0.5),
)
# (CPUs, memory in bytes they need at least)
MEMORY_NEEDED_FOR_CPU = ((6.0, 4 * 2**30), (4.0, 2 * 2**30))
MAX_EVENT_TIMEOUT_SECONDS = 540  # event-driven functions stop at 9 minutes
MAX_INSTANCES_LIMIT = 1000
MAX_CONCURRENCY = 1000
MAX_MESSAGE_BYTES_LIMIT = 64 * 2**20
MAX_TEMPLATE_CACHE_SECONDS = 86400
# Retries and the sweep (DESIGN.md section 7; the function reads the same bounds in mailer/settings.py).
MAX_ATTEMPTS_LIMIT = 100
MAX_BACKOFF_SECONDS = 86400
DELIVERY_GUARANTEES = ("at-least-once", "at-most-once")
MIN_SWEEP_TIMEOUT_SECONDS = 60
MAX_SWEEP_WORKERS = 32
# The sweep stops taking new documents this long before its timeout, so it returns instead of being killed.
SWEEP_MARGIN_SECONDS = 30
# unix-cron, as Cloud Scheduler reads it: (field name, lowest, highest, names allowed instead of numbers)
CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day-of-week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)

_MEMORY_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "Mi": 2**20, "Gi": 2**30}
_MEMORY_PATTERN = re.compile(r"^(\d+)(k|M|G|Mi|Gi)?$")
_PROJECT_PATTERN = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_DATABASE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{2,61}[a-z0-9]$")
_RUNTIME_PATTERN = re.compile(r"^python3(\d+)$")
_PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,20}[a-z0-9]$")
_RESERVED_ID = re.compile(r"^__.*__$")
# Lifecycle events (issue 12): the extension's event types (firebase.extensions.firestore-send-email.v1.<name>).
EVENT_TYPE_PREFIX = "firebase.extensions.firestore-send-email.v1."
EVENT_NAMES = ("onStart", "onProcessing", "onPending", "onRetry", "onSuccess", "onError", "onComplete")
EVENTS_EXAMPLE = '["onStart", "onSuccess", "onError", "onComplete"]'
_TOPIC_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.~+%-]{2,254}$")
_CHANNEL_NAME = re.compile(r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/locations/[a-z0-9-]+/channels/[a-z][a-z0-9-]{0,62}$")
_CRON_ITEM = re.compile(r"^(?:\*|(?P<low>\w+)(?:-(?P<high>\w+))?)(?:/(?P<step>\d+))?$")


class ConfigError(pulumi.RunError, ValueError):
    """A one-line configuration error that names the offending key."""


def _key(name: str) -> str:
    return f"{NAMESPACE}:{name}"


def parse_memory_bytes(value: str) -> int:
    """Bytes in a Cloud Functions memory string ("256Mi", "1Gi", "512M"); ValueError if malformed."""
    match = _MEMORY_PATTERN.match(value.strip())
    if not match:
        raise ValueError(value)
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""]


def _check_collection_path(path: str) -> str:
    segments = path.split("/")
    if any(segment == "" for segment in segments):
        raise ValueError("has an empty path segment; write it like mail or tenants/acme/mail (no leading, trailing or double slashes)")
    if len(segments) % 2 == 0:
        raise ValueError("names a document, not a collection (a collection path has an odd number of segments, e.g. mail or tenants/acme/mail)")
    for segment in segments:
        if _RESERVED_ID.match(segment):
            raise ValueError(f"uses the reserved id {segment!r} (ids matching __.*__ are reserved by Firestore); pick another name")
        if segment in (".", ".."):
            raise ValueError("uses '.' or '..' as an id, which Firestore forbids; pick another name")
        if any(char in segment for char in "{}*"):
            raise ValueError("contains '{', '}' or '*', which the trigger's path pattern would read as a wildcard; pick another name")
        if len(segment.encode()) > 1500:
            raise ValueError("has an id longer than 1500 bytes; pick a shorter name")
    return path


def _cron_item_ok(item: str, low: int, high: int, names: tuple[str, ...]) -> bool:
    """One comma-separated item of a cron field: *, N, N-M, each optionally /step (step >= 1)."""
    match = _CRON_ITEM.match(item)
    if not match or (match.group("step") is not None and int(match.group("step")) == 0):
        return False
    values: list[int] = []
    for token in (match.group("low"), match.group("high")):
        if token is None:
            continue
        if token.isdigit():
            values.append(int(token))
        elif token.upper() in names:
            values.append(names.index(token.upper()) + low)
        else:
            return False
    return all(low <= value <= high for value in values) and values == sorted(values)


def check_cron(expression: str) -> str:
    """A 5-field unix-cron expression as Cloud Scheduler takes it (lists, ranges, steps, month and day
    names); ValueError naming the field otherwise. The shape and the bounds are checked, not the meaning
    (31 in February passes, as it does in Cloud Scheduler)."""
    example = "write 5 fields (minute hour day-of-month month day-of-week), e.g. '* * * * *' (every minute) or '*/5 * * * *'"
    fields = expression.split()
    if len(fields) != len(CRON_FIELDS):
        raise ValueError(f"is {expression!r}, which has {len(fields)} field(s); {example}")
    for text, (field, low, high, names) in zip(fields, CRON_FIELDS):
        if not all(_cron_item_ok(item, low, high, names) for item in text.split(",")):
            allowed = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
            raise ValueError(f"is {expression!r}: its {field} field {text!r} is not *, a number {allowed}, a range, a list or a /step; {example}")
    return " ".join(fields)


def _check_address(value: str, example: str) -> str:
    try:
        validate_email(value, check_deliverability=False, allow_display_name=True)
    except EmailNotValidError as error:
        raise ValueError(f"is not a valid email address ({error}); use e.g. {example}") from None
    return value


class MailerSettings(BaseModel):
    """Every plain (non-secret) setting of a stack, typed and checked. Aliases are the config keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    project: str = Field(alias="gcp:project")
    region: str = Field(alias=_key("region"))
    firestore_location: str = Field(alias=_key("firestoreLocation"))
    database: str = Field("(default)", alias=_key("database"))
    mail_collection: str = Field("mail", alias=_key("mailCollection"))
    users_collection: Optional[str] = Field(None, alias=_key("usersCollection"))
    templates_collection: Optional[str] = Field(None, alias=_key("templatesCollection"))
    template_cache_seconds: int = Field(60, alias=_key("templateCacheSeconds"))
    # Unset only with a preset (mailer:smtpProvider); after validation it holds the effective URI the
    # function gets (built from the preset, plus authMethod/oauth2* options), see _smtp_provider below.
    smtp_connection_uri: Optional[str] = Field(None, alias=_key("smtpConnectionUri"), repr=False)
    allow_password_in_uri: bool = Field(False, alias=_key("allowPasswordInUri"))
    default_from: str = Field(alias=_key("defaultFrom"))
    default_reply_to: Optional[str] = Field(None, alias=_key("defaultReplyTo"))
    ttl_expire_type: str = Field("never", alias=_key("ttlExpireType"))
    ttl_expire_value: int = Field(1, alias=_key("ttlExpireValue"))
    max_message_bytes: int = Field(10 * 2**20, alias=_key("maxMessageBytes"))
    runtime: str = Field("python312", alias=_key("runtime"))
    min_instances: int = Field(0, alias=_key("minInstances"))
    max_instances: int = Field(10, alias=_key("maxInstances"))
    concurrency: int = Field(1, alias=_key("concurrency"))
    memory: str = Field("256Mi", alias=_key("memory"))
    cpu: str = Field("0.167", alias=_key("cpu"))
    timeout_seconds: int = Field(60, alias=_key("timeoutSeconds"))
    resource_prefix: str = Field("mailer", alias=_key("resourcePrefix"))
    max_attempts: int = Field(5, alias=_key("maxAttempts"))
    retry_backoff_seconds: int = Field(60, alias=_key("retryBackoffSeconds"))
    retry_backoff_max_seconds: int = Field(3600, alias=_key("retryBackoffMaxSeconds"))
    delivery_guarantee: str = Field("at-least-once", alias=_key("deliveryGuarantee"))
    sweep_schedule: str = Field("* * * * *", alias=_key("sweepSchedule"))
    sweep_timeout_seconds: int = Field(300, alias=_key("sweepTimeoutSeconds"))
    sweep_workers: int = Field(4, alias=_key("sweepWorkers"))
    # Lifecycle events (issue 12): the extension's event short names, published to a topic this program
    # creates (eventsTopic: its id) or to an existing Eventarc channel (eventsChannel: its full name).
    events: list[str] = Field([], alias=_key("events"))
    events_topic: Optional[str] = Field(None, alias=_key("eventsTopic"))
    events_channel: Optional[str] = Field(None, alias=_key("eventsChannel"))
    # Provider presets and authentication (issue 11, infra/providers.py). After validation smtp_user,
    # smtp_auth_method and oauth2_* hold the effective values (from the key, the URI or the preset).
    smtp_provider: str = Field("custom", alias=_key("smtpProvider"))
    smtp_provider_region: Optional[str] = Field(None, alias=_key("smtpProviderRegion"))
    smtp_user: Optional[str] = Field(None, alias=_key("smtpUser"))
    smtp_auth_method: Optional[str] = Field(None, alias=_key("smtpAuthMethod"))
    oauth2_token_url: Optional[str] = Field(None, alias=_key("oauth2TokenUrl"))
    oauth2_client_id: Optional[str] = Field(None, alias=_key("oauth2ClientId"))
    smtp_secrets_at_runtime: bool = Field(False, alias=_key("smtpSecretsAtRuntime"))

    @field_validator("project")
    @classmethod
    def _project_id(cls, value: str) -> str:
        if not _PROJECT_PATTERN.match(value):
            raise ValueError("is not a Google Cloud project id (6-30 characters: lowercase letters, digits, hyphens); use the id, not the name or number")
        return value

    @field_validator("region")
    @classmethod
    def _function_region(cls, value: str) -> str:
        if value in FIRESTORE_MULTI_REGIONS:
            raise ValueError(f"is {value!r}, a Firestore multi-region; a function needs a region such as us-central1 (put {value!r} in mailer:firestoreLocation)")
        if value not in FUNCTION_REGIONS:
            raise ValueError(f"is {value!r}, not a Cloud Functions (2nd gen) region; use one such as us-central1 or europe-west1 (list in infra/locations.py)")
        return value

    @field_validator("firestore_location")
    @classmethod
    def _firestore_location(cls, value: str) -> str:
        if value not in FIRESTORE_LOCATIONS:
            raise ValueError(f"is {value!r}, not a Firestore location; copy the database's location from the console, e.g. nam5, eur3 or us-east1 (list in infra/locations.py)")
        return value

    @field_validator("database")
    @classmethod
    def _database_id(cls, value: str) -> str:
        if value != "(default)" and not _DATABASE_PATTERN.match(value):
            raise ValueError("is not a Firestore database id; use (default) or 4-63 lowercase letters, digits and hyphens starting with a letter")
        return value

    @field_validator("mail_collection", "users_collection", "templates_collection")
    @classmethod
    def _collection(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else _check_collection_path(value)

    @field_validator("template_cache_seconds")
    @classmethod
    def _template_cache(cls, value: int) -> int:
        if not 0 <= value <= MAX_TEMPLATE_CACHE_SECONDS:
            raise ValueError(f"must be between 0 and {MAX_TEMPLATE_CACHE_SECONDS} seconds (how stale a cached template may get; 0 reads it for every email)")
        return value

    @field_validator("smtp_connection_uri")
    @classmethod
    def _smtp_uri(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        parts = urlsplit(value)
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise ValueError("must start with smtp:// (STARTTLS, port 587) or smtps:// (implicit TLS, port 465)")
        if not parts.hostname:
            raise ValueError("has no host; write it like smtp://user@smtp.example.com:587")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("has a port that is not a number from 1 to 65535; write it like smtp://user@smtp.example.com:587") from None
        if port is None:
            raise ValueError("has no port; add :587 for smtp:// (STARTTLS) or :465 for smtps:// (implicit TLS)")
        if port == 25:
            raise ValueError("uses port 25, which Google Cloud blocks for outbound traffic; use 587 with smtp:// (STARTTLS) or 465 with smtps:// (implicit TLS)")
        if scheme == "smtp" and port == 465:
            raise ValueError("uses smtp:// with port 465, which expects implicit TLS; use smtps:// for 465 (or port 587 for STARTTLS)")
        if scheme == "smtps" and port == 587:
            raise ValueError("uses smtps:// with port 587, which expects STARTTLS; use smtp:// for 587 (or port 465 for implicit TLS)")
        return value

    @field_validator("default_from")
    @classmethod
    def _from_address(cls, value: str) -> str:
        return _check_address(value, '"Acme <noreply@acme.example>"')

    @field_validator("default_reply_to")
    @classmethod
    def _reply_to_address(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else _check_address(value, "support@acme.example")

    @field_validator("ttl_expire_type")
    @classmethod
    def _ttl_type(cls, value: str) -> str:
        if value not in TTL_EXPIRE_TYPES:
            raise ValueError(f"is {value!r}; use one of {', '.join(TTL_EXPIRE_TYPES)}")
        return value

    @field_validator("ttl_expire_value")
    @classmethod
    def _ttl_value(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be a positive whole number (how many mailer:ttlExpireType units a delivered document is kept)")
        return value

    @field_validator("max_message_bytes")
    @classmethod
    def _message_limit(cls, value: int) -> int:
        if not 1024 <= value <= MAX_MESSAGE_BYTES_LIMIT:
            raise ValueError(f"must be between 1024 and {MAX_MESSAGE_BYTES_LIMIT} bytes; 10485760 (10 MiB) suits most SMTP servers")
        return value

    @field_validator("runtime")
    @classmethod
    def _python_runtime(cls, value: str) -> str:
        match = _RUNTIME_PATTERN.match(value)
        if not match or int(match.group(1)) < 12:
            raise ValueError(f"is {value!r}; use python312 or newer (e.g. python313)")
        return value

    @field_validator("min_instances")
    @classmethod
    def _min_instances(cls, value: int) -> int:
        if not 0 <= value <= MAX_INSTANCES_LIMIT:
            raise ValueError(f"must be between 0 and {MAX_INSTANCES_LIMIT}; 0 lets the function scale to zero")
        return value

    @field_validator("max_instances")
    @classmethod
    def _max_instances(cls, value: int) -> int:
        if not 1 <= value <= MAX_INSTANCES_LIMIT:
            raise ValueError(f"must be between 1 and {MAX_INSTANCES_LIMIT}")
        return value

    @field_validator("concurrency")
    @classmethod
    def _concurrency(cls, value: int) -> int:
        if not 1 <= value <= MAX_CONCURRENCY:
            raise ValueError(f"must be between 1 and {MAX_CONCURRENCY} requests per instance")
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        try:
            size = parse_memory_bytes(value)
        except ValueError:
            raise ValueError(f"is {value!r}; write a size with unit k, M, G, Mi or Gi, e.g. 256Mi or 1Gi") from None
        if not MIN_MEMORY_BYTES <= size <= MAX_MEMORY_BYTES:
            raise ValueError(f"is {value!r}; a function takes 128Mi to 32Gi")
        return value

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str) -> str:
        try:
            cpus = float(value)
        except ValueError:
            raise ValueError(f"is {value!r}; use a number of vCPUs such as 0.167, 1 or 2") from None
        if not (MIN_FRACTIONAL_CPU <= cpus < 1 or cpus in WHOLE_CPUS):
            raise ValueError(f"is {value!r}; use a fraction from 0.08 to below 1, or 1, 2, 4, 6 or 8")
        return value

    @field_validator("timeout_seconds")
    @classmethod
    def _timeout(cls, value: int) -> int:
        if not 1 <= value <= MAX_EVENT_TIMEOUT_SECONDS:
            raise ValueError(f"must be between 1 and {MAX_EVENT_TIMEOUT_SECONDS} seconds (the limit for event-driven functions)")
        return value

    @field_validator("resource_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX_PATTERN.match(value):
            raise ValueError("must be 3-22 lowercase letters, digits or hyphens, starting with a letter (it prefixes service account ids)")
        return value

    @field_validator("max_attempts")
    @classmethod
    def _max_attempts(cls, value: int) -> int:
        if not 1 <= value <= MAX_ATTEMPTS_LIMIT:
            raise ValueError(f"must be between 1 and {MAX_ATTEMPTS_LIMIT} (attempts per email before it ends in ERROR; 1 never retries)")
        return value

    @field_validator("retry_backoff_seconds")
    @classmethod
    def _retry_backoff(cls, value: int) -> int:
        if not 1 <= value <= MAX_BACKOFF_SECONDS:
            raise ValueError(f"must be between 1 and {MAX_BACKOFF_SECONDS} seconds (the wait after the first failed attempt; it doubles after each one)")
        return value

    @field_validator("retry_backoff_max_seconds")
    @classmethod
    def _retry_backoff_max(cls, value: int) -> int:
        if not 1 <= value <= MAX_BACKOFF_SECONDS:
            raise ValueError(f"must be between 1 and {MAX_BACKOFF_SECONDS} seconds (the longest wait between two attempts)")
        return value

    @field_validator("delivery_guarantee")
    @classmethod
    def _delivery_guarantee(cls, value: str) -> str:
        if value not in DELIVERY_GUARANTEES:
            raise ValueError(
                f"is {value!r}; use at-least-once (retry when the outcome of a send is unknown) "
                "or at-most-once (end in ERROR instead)"
            )
        return value

    @field_validator("sweep_schedule")
    @classmethod
    def _sweep_schedule(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("sweep_timeout_seconds")
    @classmethod
    def _sweep_timeout(cls, value: int) -> int:
        if not MIN_SWEEP_TIMEOUT_SECONDS <= value <= MAX_EVENT_TIMEOUT_SECONDS:
            raise ValueError(
                f"must be between {MIN_SWEEP_TIMEOUT_SECONDS} and {MAX_EVENT_TIMEOUT_SECONDS} seconds "
                f"(the sweep stops taking documents {SWEEP_MARGIN_SECONDS} s before it)"
            )
        return value

    @field_validator("sweep_workers")
    @classmethod
    def _sweep_workers(cls, value: int) -> int:
        if not 1 <= value <= MAX_SWEEP_WORKERS:
            raise ValueError(f"must be between 1 and {MAX_SWEEP_WORKERS} (emails one sweep sends at once)")
        return value

    # --- provider presets and authentication (issue 11) ---
    @field_validator("smtp_provider")
    @classmethod
    def _provider_name(cls, value: str) -> str:
        if value not in PROVIDERS:
            raise ValueError(f"is {value!r}; use one of {', '.join(PROVIDERS)}")
        return value

    @field_validator("smtp_auth_method")
    @classmethod
    def _auth_method(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and value.upper() not in AUTH_METHODS:
            raise ValueError(f"is {value!r}; use PLAIN, LOGIN or XOAUTH2 (or leave it unset for the provider's default)")
        return None if value is None else value.upper()

    @field_validator("oauth2_token_url")
    @classmethod
    def _token_url(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and re.search(r"\s", value):
            raise ValueError("contains whitespace; paste the token endpoint URL alone")
        return None if value is None else check_token_url(value)

    @field_validator("oauth2_client_id", "smtp_user")
    @classmethod
    def _no_whitespace(cls, value: Optional[str]) -> Optional[str]:
        # The function refuses both with whitespace or control characters (a stray newline from a paste).
        if value is not None and re.search(r"[\s\x00-\x1f\x7f]", value):
            raise ValueError("contains whitespace or a control character; set it without them")
        return value

    @model_validator(mode="after")
    def _smtp_provider(self) -> "MailerSettings":
        """Apply the preset: fill the effective URI, user and auth method, refuse what contradicts it."""
        try:
            resolved = resolve(
                self.smtp_provider,
                region=self.smtp_provider_region,
                uri=self.smtp_connection_uri,
                user=self.smtp_user,
                auth_method=self.smtp_auth_method,
                token_url=self.oauth2_token_url,
                client_id=self.oauth2_client_id,
            )
        except ProviderError as error:
            raise ValueError(str(error)) from None
        # The model is frozen for everyone else; this validator is where the effective values are set.
        for name, value in (("smtp_connection_uri", resolved.uri), ("smtp_user", resolved.user),
                            ("smtp_auth_method", resolved.auth_method), ("oauth2_token_url", resolved.oauth2_token_url),
                            ("oauth2_client_id", resolved.oauth2_client_id)):
            object.__setattr__(self, name, value)
        return self

    # --- lifecycle events (issue 12) ---
    @field_validator("events", mode="before")
    @classmethod
    def _event_names(cls, value: Any) -> list[str]:
        """A list (`pulumi config set --path 'mailer:events[0]' onStart`, read back as JSON) or a comma list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise ValueError(f"is not a valid list; use e.g. {EVENTS_EXAMPLE}") from None
            else:
                value = text.split(",")
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"must be a list of event names, e.g. {EVENTS_EXAMPLE}")
        names = list(dict.fromkeys(item.strip().removeprefix(EVENT_TYPE_PREFIX) for item in value if item.strip()))
        unknown = [name for name in names if name not in EVENT_NAMES]
        if unknown:
            raise ValueError(f"has {', '.join(map(repr, unknown))}, not an event of the extension; use any of {', '.join(EVENT_NAMES)}")
        return names

    @field_validator("events_topic")
    @classmethod
    def _events_topic(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (not _TOPIC_ID.match(value) or value.lower().startswith("goog")):
            raise ValueError(
                f"is {value!r}; give the id of the topic to create (3-255 letters, digits, - _ . ~ + %, starting with a "
                "letter, not goog...), e.g. mail-events"
            )
        return value

    @field_validator("events_channel")
    @classmethod
    def _events_channel(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _CHANNEL_NAME.match(value):
            raise ValueError(f"is {value!r}; give the channel's full name, projects/<project>/locations/<region>/channels/<id>")
        return value

    @model_validator(mode="after")
    def _events_destination(self) -> "MailerSettings":
        topic, channel, events = _key("eventsTopic"), _key("eventsChannel"), _key("events")
        if self.events and self.events_topic and self.events_channel:
            raise ValueError(f"{topic} and {channel} are both set; events go to one: remove one of them")
        if self.events and not (self.events_topic or self.events_channel):
            raise ValueError(f"{events} is set but not where to publish; set {topic} (a topic to create, e.g. mail-events) or {channel}")
        if not self.events and (self.events_topic or self.events_channel):
            raise ValueError(f"{topic if self.events_topic else channel} is set but {events} is empty; set {events} to the events to publish, e.g. {EVENTS_EXAMPLE}")
        if self.events_channel and self.events_channel.split("/")[1] != self.project:
            raise ValueError(f"{channel} is in project {self.events_channel.split('/')[1]!r}, not gcp:project {self.project!r}; the runtime account is granted eventarc.publisher in its own project only")
        return self
    # --- end lifecycle events ---

    @model_validator(mode="after")
    def _consistent(self) -> "MailerSettings":
        if self.retry_backoff_max_seconds < self.retry_backoff_seconds:
            raise ValueError(
                f"{_key('retryBackoffMaxSeconds')} is {self.retry_backoff_max_seconds} but {_key('retryBackoffSeconds')} is "
                f"{self.retry_backoff_seconds}; the longest wait cannot be shorter than the first: raise "
                f"{_key('retryBackoffMaxSeconds')} or lower {_key('retryBackoffSeconds')}"
            )
        if self.has_password_in_uri and not self.allow_password_in_uri:
            raise ValueError(
                f"{_key('smtpConnectionUri')} contains a password; remove it from the URI and run "
                f"`pulumi config set --secret {PASSWORD_KEY}` (or set {_key('allowPasswordInUri')} true to keep it there)"
            )
        if self.min_instances > self.max_instances:
            raise ValueError(
                f"{_key('minInstances')} ({self.min_instances}) is greater than {_key('maxInstances')} "
                f"({self.max_instances}); lower the first or raise the second"
            )
        cpus, memory = float(self.cpu), parse_memory_bytes(self.memory)
        if self.concurrency > 1 and cpus < 1:
            raise ValueError(
                f"{_key('concurrency')} is {self.concurrency} but {_key('cpu')} is {self.cpu}; "
                f"concurrency above 1 needs at least 1 vCPU: set {_key('cpu')} to 1 or {_key('concurrency')} to 1"
            )
        for threshold, needed in CPU_NEEDED_FOR_MEMORY:
            if memory > threshold and cpus < needed:
                raise ValueError(
                    f"{_key('memory')} {self.memory} needs at least {needed:g} vCPU but {_key('cpu')} is {self.cpu}; "
                    f"raise {_key('cpu')} or lower {_key('memory')}"
                )
        for cpu_floor, needed_memory in MEMORY_NEEDED_FOR_CPU:
            if cpus >= cpu_floor and memory < needed_memory:
                raise ValueError(
                    f"{_key('cpu')} {self.cpu} needs at least {needed_memory // 2**30}Gi of memory but "
                    f"{_key('memory')} is {self.memory}; raise {_key('memory')} or lower {_key('cpu')}"
                )
        return self

    @property
    def has_password_in_uri(self) -> bool:
        return self.smtp_connection_uri is not None and urlsplit(self.smtp_connection_uri).password is not None

    @property
    def uses_xoauth2(self) -> bool:
        """True when the function authenticates with OAuth2 (no SMTP password; client secret and refresh token)."""
        return self.smtp_auth_method == "XOAUTH2"

    @property
    def ttl_enabled(self) -> bool:
        return self.ttl_expire_type != "never"

    @property
    def sweep_budget_seconds(self) -> int:
        """How long one sweep keeps taking documents: its timeout less a margin to finish and return."""
        return self.sweep_timeout_seconds - SWEEP_MARGIN_SECONDS

    @property
    def mail_collection_group(self) -> str:
        """The collection id a TTL policy applies to (Firestore TTL works per collection group)."""
        return self.mail_collection.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class StackConfig:
    """What the program needs from a stack: the checked settings and the secrets as secret Outputs
    (the SMTP password, or with XOAUTH2 the OAuth2 client secret and refresh token instead)."""

    settings: MailerSettings
    smtp_password: Optional[pulumi.Output[str]]
    smtp_uri_is_secret: bool
    oauth2_client_secret: Optional[pulumi.Output[str]] = None
    oauth2_refresh_token: Optional[pulumi.Output[str]] = None


def _describe(error: Any) -> str:
    """One line for one pydantic error, naming the key as the operator types it."""
    key = str(error["loc"][0]) if error["loc"] else ""
    if error["type"] == "missing":
        return f"{key} is not set; run `pulumi config set {key} <value>`"
    if error["type"] == "value_error":
        text = str(error["ctx"]["error"])
        return f"{key} {text}" if key else text
    return f"{key}: {error['msg'].lower()}; run `pulumi config set {key} <value>` with a valid value"


def _read_settings(namespaces: dict[str, pulumi.Config]) -> dict[str, str]:
    values: dict[str, Optional[str]] = {}
    for field in MailerSettings.model_fields.values():
        assert field.alias is not None
        namespace, name = field.alias.split(":", 1)
        values[field.alias] = namespaces[namespace].get(name)
    return values


def settings_problems(values: Mapping[str, Optional[str]]) -> tuple[Optional[MailerSettings], list[str]]:
    """Validate config values keyed as the operator types them (`mailer:region`); keys that are not
    settings (the password, other namespaces) are ignored. Returns the settings or one line per bad key."""
    known = {field.alias for field in MailerSettings.model_fields.values()}
    # An empty value (e.g. an unset optional default in Pulumi.yaml) means "not set".
    raw = {key: value.strip() for key, value in values.items() if key in known and value is not None and value.strip()}
    try:
        return MailerSettings.model_validate(raw), []
    except ValidationError as error:
        return None, [_describe(item) for item in error.errors()]


def _secret_problem(mailer_config: pulumi.Config, full_key: str, what: str) -> Optional[str]:
    # Only presence is checked here; the value itself is read below with require_secret.
    if not mailer_config.get(full_key.split(":", 1)[1]):
        return f"{full_key} is not set; run `pulumi config set --secret {full_key}` and type {what} when asked"
    if not pulumi.runtime.is_config_secret(full_key):
        return (
            f"{full_key} is stored in plain text in the stack file; run `pulumi config rm {full_key}` "
            f"and then `pulumi config set --secret {full_key}`"
        )
    return None


def _password_problem(mailer_config: pulumi.Config) -> Optional[str]:
    return _secret_problem(mailer_config, PASSWORD_KEY, "the SMTP password")


def _uses_xoauth2(settings: Optional[MailerSettings], mailer_config: pulumi.Config) -> bool:
    """Whether the stack authenticates with XOAUTH2; from the raw keys when the settings are invalid."""
    if settings is not None:
        return settings.uses_xoauth2
    method = (mailer_config.get("smtpAuthMethod") or "").strip().upper()
    return method == "XOAUTH2" or (not method and (mailer_config.get("smtpProvider") or "").strip() == "microsoft365")


def _credential_problems(mailer_config: pulumi.Config, xoauth2: bool) -> list[str]:
    """The secrets the authentication method needs are set (as secrets); the ones it does not use are not."""
    needed = (
        [(OAUTH2_CLIENT_SECRET_KEY, "the OAuth2 client secret"), (OAUTH2_REFRESH_TOKEN_KEY, "the OAuth2 refresh token")]
        if xoauth2 else [(PASSWORD_KEY, "the SMTP password")]
    )
    unused = [PASSWORD_KEY] if xoauth2 else [OAUTH2_CLIENT_SECRET_KEY, OAUTH2_REFRESH_TOKEN_KEY]
    problems = [problem for full_key, what in needed if (problem := _secret_problem(mailer_config, full_key, what))]
    for full_key in unused:
        if mailer_config.get(full_key.split(":", 1)[1]):
            problems.append(
                f"{full_key} is set but the stack authenticates with XOAUTH2, which uses no SMTP password; run `pulumi config rm {full_key}`"
                if xoauth2 else
                f"{full_key} is set but the stack does not use XOAUTH2; run `pulumi config rm {full_key}`, "
                f"or `pulumi config set {_key('smtpAuthMethod')} XOAUTH2`"
            )
    return problems


def load_config(mailer_config: pulumi.Config, gcp_config: pulumi.Config) -> StackConfig:
    """Read and validate the whole stack configuration; raise ConfigError naming every bad key."""
    settings, problems = settings_problems(_read_settings({NAMESPACE: mailer_config, "gcp": gcp_config}))
    xoauth2 = _uses_xoauth2(settings, mailer_config)
    problems.extend(_credential_problems(mailer_config, xoauth2))
    if problems or settings is None:
        raise ConfigError("; ".join(problems))
    return StackConfig(
        settings=settings,
        smtp_password=None if xoauth2 else mailer_config.require_secret("smtpPassword"),
        smtp_uri_is_secret=settings.has_password_in_uri or pulumi.runtime.is_config_secret(_key("smtpConnectionUri")),
        oauth2_client_secret=mailer_config.require_secret("oauth2ClientSecret") if xoauth2 else None,
        oauth2_refresh_token=mailer_config.require_secret("oauth2RefreshToken") if xoauth2 else None,
    )
