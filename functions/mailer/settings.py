"""The function's configuration, read from the environment (names as the Firebase extension's params).

Settings are read per invocation (it costs microseconds) so that a bad value fails the documents it
affects with a clear error naming the variable, instead of failing the instance at import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from mailer.credentials import Credentials, PinnedSecret, Secret, managed_secret

TTL_UNITS: dict[str, timedelta] = {
    # Months and years are fixed lengths: TTL deletion is approximate anyway (Firestore deletes
    # expired documents within about a day), so calendar arithmetic would buy nothing.
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
    "month": timedelta(days=30),
    "year": timedelta(days=365),
}

DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024
DEFAULT_LEASE_SECONDS = 600
DEFAULT_TEMPLATE_CACHE_SECONDS = 60
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_RETRY_BACKOFF_SECONDS = 60
DEFAULT_RETRY_BACKOFF_MAX_SECONDS = 3600
DEFAULT_SWEEP_BUDGET_SECONDS = 240
DEFAULT_SWEEP_WORKERS = 4
AT_LEAST_ONCE = "at-least-once"
AT_MOST_ONCE = "at-most-once"
DELIVERY_GUARANTEES = (AT_LEAST_ONCE, AT_MOST_ONCE)


class SettingsError(ValueError):
    """A configuration value is wrong. str(e) names the environment variable; never holds a secret."""


@dataclass(frozen=True)
class Settings:
    smtp_connection_uri: str | None
    smtp_password: str | None = field(default=None, repr=False)
    # Secrets at run time and XOAUTH2 (issue 11): where each secret comes from (credentials.py).
    smtp_secrets: Credentials | None = None  # None: only the pinned SMTP_PASSWORD (the default path)
    default_from: str | None = None
    default_reply_to: str | None = None
    mail_collection: str = "mail"
    users_collection: str | None = None
    templates_collection: str | None = None
    ttl: timedelta | None = None
    database: str = "(default)"
    project: str | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # How long a PROCESSING claim holds before another attempt may take the document over. It must
    # outlast the function's timeout, or a slow send could be claimed (and sent) twice.
    lease: timedelta = timedelta(seconds=DEFAULT_LEASE_SECONDS)
    # How old a cached template may get before an email reads it again (0: read for every email).
    template_cache_seconds: int = DEFAULT_TEMPLATE_CACHE_SECONDS
    # Transient failures are retried: attempt k+1 is due at most base * 2^(k-1) (capped) after attempt k.
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_backoff: timedelta = timedelta(seconds=DEFAULT_RETRY_BACKOFF_SECONDS)
    retry_backoff_max: timedelta = timedelta(seconds=DEFAULT_RETRY_BACKOFF_MAX_SECONDS)
    # What to do when the connection is lost after the final "." (the server may have the message):
    # at-least-once sends again (same Message-ID), at-most-once ends in ERROR.
    delivery_guarantee: str = AT_LEAST_ONCE
    # One sweep stops starting attempts after this long (below the sweep function's timeout).
    sweep_budget: timedelta = timedelta(seconds=DEFAULT_SWEEP_BUDGET_SECONDS)
    sweep_workers: int = DEFAULT_SWEEP_WORKERS
    # SMTP_PROVIDER (issue 11/12): the preset name; SendGrid-only document fields check it (see `sendgrid`).
    smtp_provider: str = "custom"
    # Lifecycle events (issue 12): None when EVENTS is empty, so nothing is published or imported.
    events: EventSettings | None = None

    @property
    def at_most_once(self) -> bool:
        return self.delivery_guarantee == AT_MOST_ONCE

    @property
    def sendgrid(self) -> bool:
        """Mail goes through SendGrid: SMTP_PROVIDER=sendgrid, or custom with host smtp.sendgrid.net (as the
        extension decides), so the document's SendGrid fields (X-SMTPAPI) may be used."""
        if self.smtp_provider == "sendgrid":
            return True
        return self.smtp_provider == "custom" and _uri_host(self.smtp_connection_uri) == SENDGRID_HOST


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _positive_int(
    env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: int | None = None
) -> int:
    raw = _optional(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name}: must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name}: must be at most {maximum}, got {value}")
    return value


def _retry_backoff(env: Mapping[str, str]) -> tuple[timedelta, timedelta]:
    base = _positive_int(env, "RETRY_BACKOFF_SECONDS", DEFAULT_RETRY_BACKOFF_SECONDS, maximum=86400)
    cap = _positive_int(env, "RETRY_BACKOFF_MAX_SECONDS", max(base, DEFAULT_RETRY_BACKOFF_MAX_SECONDS), maximum=86400)
    if cap < base:
        raise SettingsError(
            f"RETRY_BACKOFF_MAX_SECONDS: {cap} is below RETRY_BACKOFF_SECONDS ({base}); the cap must be at least the base"
        )
    return timedelta(seconds=base), timedelta(seconds=cap)


def _guarantee(env: Mapping[str, str]) -> str:
    value = (_optional(env, "DELIVERY_GUARANTEE") or AT_LEAST_ONCE).lower()
    if value not in DELIVERY_GUARANTEES:
        raise SettingsError(f"DELIVERY_GUARANTEE: {value!r} is not one of {', '.join(DELIVERY_GUARANTEES)}")
    return value


def _ttl(env: Mapping[str, str]) -> timedelta | None:
    kind = (_optional(env, "TTL_EXPIRE_TYPE") or "never").lower()
    if kind == "never":
        return None
    if kind not in TTL_UNITS:
        raise SettingsError(
            f"TTL_EXPIRE_TYPE: {kind!r} is not one of never, {', '.join(TTL_UNITS)}"
        )
    return TTL_UNITS[kind] * _positive_int(env, "TTL_EXPIRE_VALUE", 1)


# --- Lifecycle events (issue 12): EVENTS, EVENTS_TOPIC | EVENTS_CHANNEL, local receiver endpoints ---
# The extension's event types, by short name (firebase.extensions.firestore-send-email.v1.<name>).
EVENT_NAMES = ("onStart", "onProcessing", "onPending", "onRetry", "onSuccess", "onError", "onComplete")
_TOPIC = re.compile(r"projects/[a-z][a-z0-9.:-]{4,61}[a-z0-9]/topics/[A-Za-z][\w.~+%-]{2,254}")
_CHANNEL = re.compile(r"projects/[a-z][a-z0-9.:-]{4,61}[a-z0-9]/locations/[a-z0-9-]+/channels/[a-z][a-z0-9-]{0,62}")
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")  # (an IPv6 one with or without brackets)


@dataclass(frozen=True)
class EventSettings:
    names: tuple[str, ...]
    topic: str | None = None  # projects/<p>/topics/<t>: Pub/Sub, CloudEvents binary mode (ce-* attributes)
    channel: str | None = None  # projects/<p>/locations/<l>/channels/<c>: Eventarc channel
    endpoint: str | None = None  # host:port of a local receiver (plaintext gRPC, loopback only)


def _loopback_endpoint(env: Mapping[str, str], name: str, example: str, what: str) -> str | None:
    """host:port of a local server the function speaks plaintext gRPC to: loopback only, so no setting
    can send events or secrets unencrypted across a network."""
    value = _optional(env, name)
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if host.strip("[]") not in _LOOPBACK_HOSTS or not port.isdigit():
        raise SettingsError(f"{name}: must be a loopback host:port such as {example} ({what}), got {value!r}")
    return value


def _events(env: Mapping[str, str]) -> EventSettings | None:
    raw = [item.strip() for item in (_optional(env, "EVENTS") or "").split(",") if item.strip()]
    if not raw:
        return None
    prefix = "firebase.extensions.firestore-send-email.v1."
    names = tuple(dict.fromkeys(item.removeprefix(prefix) for item in raw))
    unknown = [name for name in names if name not in EVENT_NAMES]
    if unknown:
        raise SettingsError(f"EVENTS: {', '.join(map(repr, unknown))} not one of {', '.join(EVENT_NAMES)}")
    topic, channel = _optional(env, "EVENTS_TOPIC"), _optional(env, "EVENTS_CHANNEL")
    if topic and channel:
        raise SettingsError("EVENTS_TOPIC and EVENTS_CHANNEL: both are set; set one")
    if not topic and not channel:
        raise SettingsError("EVENTS_TOPIC: EVENTS is set, so set EVENTS_TOPIC or EVENTS_CHANNEL")
    if topic and not _TOPIC.fullmatch(topic):
        raise SettingsError(f"EVENTS_TOPIC: expected projects/<project>/topics/<topic>, got {topic!r}")
    if channel and not _CHANNEL.fullmatch(channel):
        raise SettingsError(f"EVENTS_CHANNEL: expected projects/<project>/locations/<location>/channels/<channel>, got {channel!r}")
    endpoint = _loopback_endpoint(env, "PUBSUB_ENDPOINT" if topic else "EVENTARC_PUBLISHING_ENDPOINT",
                                  "127.0.0.1:8085", "local receivers only")
    return EventSettings(names=names, topic=topic, channel=channel, endpoint=endpoint)
# --- end lifecycle events ---


# --- Secrets at run time and XOAUTH2 (issue 11): pinned values or Secret Manager resource names ---
_SECRET_RESOURCE = re.compile(r"projects/[^/\s]+/secrets/[A-Za-z0-9_-]{1,255}")
# (pinned variable, run-time variable) per secret, in Credentials field order.
SECRET_VARIABLES = (
    ("SMTP_PASSWORD", "SMTP_PASSWORD_SECRET"),
    ("SMTP_OAUTH2_CLIENT_SECRET", "SMTP_OAUTH2_CLIENT_SECRET_SECRET"),
    ("SMTP_OAUTH2_REFRESH_TOKEN", "SMTP_OAUTH2_REFRESH_TOKEN_SECRET"),
)


def _smtp_secrets(env: Mapping[str, str]) -> Credentials | None:
    """Where the SMTP password and the OAuth2 secrets come from; None when only SMTP_PASSWORD (or
    nothing) is set, which keeps the pinned path exactly as it was."""
    endpoint = _loopback_endpoint(env, "SECRET_MANAGER_ENDPOINT", "127.0.0.1:8086",
                                  "a local Secret Manager for tests and the local stack")
    sources: list[Secret | None] = []
    for pinned_name, runtime_name in SECRET_VARIABLES:
        pinned = env.get(pinned_name) or None  # (not stripped: a secret may begin or end with a space)
        resource = _optional(env, runtime_name)
        if pinned is not None and resource is not None:
            raise SettingsError(f"{pinned_name} and {runtime_name} are both set; set only one")
        if resource is not None:
            if resource.endswith("/versions/latest"):
                resource = resource[: -len("/versions/latest")]
            if not _SECRET_RESOURCE.fullmatch(resource):
                raise SettingsError(f"{runtime_name}: expected projects/<project>/secrets/<id>, got {resource!r}")
            sources.append(managed_secret(runtime_name, resource, endpoint))
        elif pinned is not None:
            sources.append(PinnedSecret(pinned_name, pinned))
        else:
            sources.append(None)
    password, client_secret, refresh_token = sources
    if client_secret is None and refresh_token is None and (password is None or not password.runtime):
        return None
    return Credentials(password, client_secret, refresh_token)


# --- SMTP_PROVIDER (issue 12 item 4: SendGrid-only fields) ---
SMTP_PROVIDERS = ("gmail", "google-workspace", "microsoft365", "sendgrid", "mailgun", "amazon-ses", "aliyun-directmail", "custom")
SENDGRID_HOST = "smtp.sendgrid.net"


def _smtp_provider(env: Mapping[str, str]) -> str:
    value = (_optional(env, "SMTP_PROVIDER") or "custom").lower()
    if value not in SMTP_PROVIDERS:
        raise SettingsError(f"SMTP_PROVIDER: {value!r} is not one of {', '.join(SMTP_PROVIDERS)}")
    return value


def _uri_host(uri: str | None) -> str | None:
    """The host of an SMTP URI, lower-cased, without port or user; None when there is none."""
    if not uri:
        return None
    rest = uri.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0]
    host = rest.rpartition("@")[2]
    if host.startswith("["):
        return host.partition("]")[0][1:].lower()
    return host.partition(":")[0].rstrip(".").lower() or None
# --- end SMTP_PROVIDER ---


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `env` (default: os.environ). Raises SettingsError naming the variable."""
    env = os.environ if env is None else env
    backoff, backoff_max = _retry_backoff(env)
    return Settings(
        smtp_connection_uri=_optional(env, "SMTP_CONNECTION_URI"),
        # Not stripped: a password may legitimately begin or end with a space.
        smtp_password=env.get("SMTP_PASSWORD") or None,
        smtp_secrets=_smtp_secrets(env),
        default_from=_optional(env, "DEFAULT_FROM"),
        default_reply_to=_optional(env, "DEFAULT_REPLY_TO"),
        mail_collection=_optional(env, "MAIL_COLLECTION") or "mail",
        users_collection=_optional(env, "USERS_COLLECTION"),
        templates_collection=_optional(env, "TEMPLATES_COLLECTION"),
        ttl=_ttl(env),
        database=_optional(env, "DATABASE") or "(default)",
        project=_optional(env, "GOOGLE_CLOUD_PROJECT") or _optional(env, "GCLOUD_PROJECT"),
        max_message_bytes=_positive_int(env, "MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES),
        lease=timedelta(seconds=_positive_int(env, "LEASE_SECONDS", DEFAULT_LEASE_SECONDS)),
        template_cache_seconds=_positive_int(env, "TEMPLATE_CACHE_SECONDS", DEFAULT_TEMPLATE_CACHE_SECONDS, minimum=0),
        max_attempts=_positive_int(env, "MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, maximum=100),
        retry_backoff=backoff,
        retry_backoff_max=backoff_max,
        delivery_guarantee=_guarantee(env),
        sweep_budget=timedelta(seconds=_positive_int(env, "SWEEP_BUDGET_SECONDS", DEFAULT_SWEEP_BUDGET_SECONDS, minimum=1)),
        sweep_workers=_positive_int(env, "SWEEP_WORKERS", DEFAULT_SWEEP_WORKERS, maximum=32),
        smtp_provider=_smtp_provider(env),
        events=_events(env),
    )
