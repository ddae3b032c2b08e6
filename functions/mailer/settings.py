"""The function's configuration, read from the environment (names as the Firebase extension's params).

Settings are read per invocation (it costs microseconds) so that a bad value fails the documents it
affects with a clear error naming the variable, instead of failing the instance at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

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

    @property
    def at_most_once(self) -> bool:
        return self.delivery_guarantee == AT_MOST_ONCE


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


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `env` (default: os.environ). Raises SettingsError naming the variable."""
    env = os.environ if env is None else env
    backoff, backoff_max = _retry_backoff(env)
    return Settings(
        smtp_connection_uri=_optional(env, "SMTP_CONNECTION_URI"),
        # Not stripped: a password may legitimately begin or end with a space.
        smtp_password=env.get("SMTP_PASSWORD") or None,
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
    )
