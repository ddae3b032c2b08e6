"""One Firestore event in, at most one email out, and a truthful `delivery` record written back.

    decode -> decide -> prepare (validate, compose) -> claim -> send -> record

Writes per email: one claim (PROCESSING) and one outcome; an invalid document gets a single ERROR write.
No document read unless the claim loses a race, when the current version is read to decide again, or the
document names a template or uids (prepare.py says what those cost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from google.api_core import exceptions as gexc

from mailer import delivery
from mailer.compose import ComposedMail
from mailer.events import DocumentState, EventError, MailEvent, decode_event
from mailer.logs import domain_of
from mailer.prepare import Lookups, Refusal, prepare
from mailer.prepare import lookups_for as build_lookups
from mailer.recipients import Unresolved
from mailer.settings import Settings, SettingsError, load_settings
from mailer.status_store import StatusStore, client_for
from mailer.transport import DeliveryError, SmtpConfigError, SmtpPool, pool_for

log = logging.getLogger("mailer.handler")

# How many times to re-read and retry a claim that lost to a concurrent change of the document.
_CLAIM_ROUNDS = 3


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Dependencies:
    """What the handler talks to; tests swap in their own clock or settings."""

    store_for: Callable[[MailEvent], StatusStore] = lambda event: StatusStore(client_for(event.project, event.database))
    pool_for: Callable[[str, str | None], SmtpPool] = pool_for
    settings: Callable[[], Settings] = load_settings
    # Templates and users live in the mail document's database.
    lookups_for: Callable[[MailEvent, Settings], Lookups] = lambda event, settings: build_lookups(
        client_for(event.project, event.database), settings
    )
    clock: Callable[[], datetime] = _utcnow


class Handler:
    def __init__(self, deps: Dependencies | None = None) -> None:
        self.deps = deps or Dependencies()

    def handle_cloud_event(self, cloud_event: Any) -> str:
        """Entry point behind functions-framework. Returns the outcome (for tests and logs).

        Raises only for Firestore failures before anything was sent, so Eventarc's retry policy
        redelivers the event; an undecodable event is logged and acknowledged, since redelivering it
        can never succeed.
        """
        try:
            event = decode_event(cloud_event)
        except EventError as exc:
            log.error("event ignored: %s", exc, extra={"fields": {"eventId": cloud_event.get("id")}})
            return "ignored"
        return self.handle(event)

    def handle(self, event: MailEvent) -> str:
        ctx = {"document": event.path, "eventId": event.id, "eventKind": event.kind}
        if event.value is None:
            log.debug("document deleted; nothing to send", extra={"fields": ctx})
            return "skipped"
        now = self.deps.clock()
        old_fields = event.old_value.fields if event.old_value else None
        if not delivery.wants_attempt(event.kind, event.value.fields, old_fields, now):
            log.info(
                "no attempt: delivery state is %s",
                delivery.state_of(event.value.fields),
                extra={"fields": ctx},
            )
            return "skipped"

        store = self.deps.store_for(event)
        current: DocumentState | None = event.value
        for _ in range(_CLAIM_ROUNDS):
            outcome = self._attempt(store, event.path, current, ctx, lambda s: self.deps.lookups_for(event, s))
            if outcome is not None:
                return outcome
            # The document changed since we saw it: read it and decide again on what is there now.
            current = store.read(event.path)
            if current is None or not delivery.is_claimable(current.fields, self.deps.clock()):
                log.info(
                    "no attempt: another attempt holds or finished the document",
                    extra={"fields": {**ctx, "state": delivery.state_of(current.fields if current else None)}},
                )
                return "skipped"
        log.warning("no attempt: the document kept changing while claiming", extra={"fields": ctx})
        return "skipped"

    def _attempt(
        self,
        store: StatusStore,
        path: str,
        seen: DocumentState,
        ctx: dict[str, Any],
        lookups: Callable[[Settings], Lookups],
    ) -> str | None:
        """Validate, claim and send one version of the document. None if the claim lost a race."""
        previous = delivery.delivery_of(seen.fields)
        now = self.deps.clock()
        try:
            settings_ = self.deps.settings()
        except SettingsError as exc:
            return self._refuse(store, path, seen, f"function configuration: {exc}", Settings(None), ctx)
        try:
            prepared = prepare(seen.fields, settings_, lookups(settings_))
            mail = prepared.mail
            pool = self._pool(settings_)
        except Refusal as exc:
            return self._refuse(store, path, seen, str(exc), settings_, ctx, exc.unresolved_uids)
        except (gexc.GoogleAPICallError, gexc.RetryError):
            # Firestore could not be read (templates, users): nothing was claimed, so let Eventarc redeliver.
            raise
        except Exception as exc:  # a defect of ours: record it rather than fail the event into a retry loop
            log.exception("unexpected failure while preparing the message", extra={"fields": ctx})
            reason = f"internal error while preparing the message ({type(exc).__name__})"
            return self._refuse(store, path, seen, reason, settings_, ctx)

        claimed = delivery.claim(previous, now, settings_.lease)
        if store.write_if_unchanged(path, claimed, seen.update_time) is None:
            return None
        ctx = {
            **ctx,
            "attempt": claimed["attempts"],
            "messageId": mail.message_id,
            "recipientDomains": sorted({domain_of(r) for r in mail.recipients}),
        }
        log.info("sending", extra={"fields": {**ctx, "state": delivery.PROCESSING}})
        record, smtp_code = self._send(pool, mail, claimed, settings_)
        record = delivery.with_unresolved_uids(record, [uid.as_map() for uid in prepared.unresolved_uids])
        store.write(path, record)
        fields = {**ctx, "state": record["state"], "smtpCode": smtp_code}
        if record["state"] == delivery.SUCCESS:
            log.info("sent", extra={"fields": fields})
        else:
            # The server's reply text can quote addresses, so the log carries its code, the document the text.
            log.warning("not sent", extra={"fields": fields})
        return record["state"]

    def _refuse(
        self,
        store: StatusStore,
        path: str,
        seen: DocumentState,
        reason: str,
        settings_: Settings,
        ctx: dict[str, Any],
        unresolved_uids: Sequence[Unresolved] = (),
    ) -> str | None:
        """Record why the document cannot be sent: one write, made only if nobody else acted on it."""
        now = self.deps.clock()
        claimed = delivery.claim(delivery.delivery_of(seen.fields), now, settings_.lease)
        record = delivery.finish(claimed, delivery.ERROR, now, error=reason, ttl=settings_.ttl)
        record = delivery.with_unresolved_uids(record, [uid.as_map() for uid in unresolved_uids])
        if store.write_if_unchanged(path, record, seen.update_time) is None:
            return None
        # Only the field the reason names is logged: the reason itself may quote an address.
        field = reason.split(":", 1)[0]
        log.warning("refused: invalid %s", field, extra={"fields": {**ctx, "state": delivery.ERROR, "attempt": record["attempts"]}})
        return delivery.ERROR

    def _pool(self, settings_: Settings) -> SmtpPool:
        if not settings_.smtp_connection_uri:
            raise Refusal("function configuration: SMTP_CONNECTION_URI is not set")
        try:
            return self.deps.pool_for(settings_.smtp_connection_uri, settings_.smtp_password)
        except SmtpConfigError as exc:
            raise Refusal(f"function configuration: {exc}") from None

    def _send(
        self, pool: SmtpPool, mail: ComposedMail, claimed: dict[str, Any], settings_: Settings
    ) -> tuple[dict[str, Any], int | None]:
        """Send and build the outcome record; also returns the SMTP reply code for the log."""
        try:
            result = pool.send(mail.envelope_from, mail.recipients, mail.message, mail.smtputf8)
        except DeliveryError as exc:
            state = delivery.RETRY if exc.transient else delivery.ERROR
            info = delivery.Info(
                message_id=mail.message_id,
                rejected=list(getattr(exc, "rejected", []) or []),
                pending=list(getattr(exc, "pending", []) or []),
            )
            return delivery.finish(claimed, state, self.deps.clock(), error=exc.message, info=info, ttl=settings_.ttl), exc.code
        except Exception as exc:  # a defect of ours: keep the document owed, never lose it silently
            log.exception("unexpected failure while sending")
            error = f"internal error while sending ({type(exc).__name__}); the attempt will be retried"
            return delivery.finish(claimed, delivery.RETRY, self.deps.clock(), error=error, ttl=settings_.ttl), None
        info = delivery.Info(
            message_id=mail.message_id,
            accepted=result.accepted,
            rejected=result.rejected,
            pending=result.pending,
            response=result.response,
        )
        code = int(result.response[:3]) if result.response[:3].isdigit() else None
        return delivery.finish(claimed, delivery.SUCCESS, self.deps.clock(), info=info, ttl=settings_.ttl), code
