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


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _positive_int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = _optional(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name}: must be at least {minimum}, got {value}")
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
    )
