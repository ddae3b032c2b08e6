"""The attempt path: one version of a mail document in, at most one email out, and a truthful
`delivery` record written back. The Firestore trigger and the sweep both use it, never a copy.

    decide -> schedule? -> prepare (validate, compose) -> claim -> send -> record

Writes per email: one claim (PROCESSING) and one outcome; an invalid document gets a single ERROR write;
a document scheduled for later (`sendAt`) gets one PENDING write first. No document read unless the
claim loses a race, when the current version is read to decide again, or the document names a template
or uids (prepare.py says what those cost).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

from google.api_core import exceptions as gexc

from mailer import delivery
from mailer.compose import ComposedMail
from mailer.events import DocumentState, EventError, MailEvent, decode_event
from mailer.lifecycle import emit as emit_lifecycle_events
from mailer.logs import domain_of
from mailer.prepare import Lookups, Refusal, prepare
from mailer.prepare import lookups_for as build_lookups
from mailer.recipients import Unresolved
from mailer.schedule import ScheduleError, send_at
from mailer.settings import Settings, SettingsError, load_settings
from mailer.status_store import StatusStore, client_for
from mailer.transport import DeliveryError, SmtpConfigError, SmtpPool, pool_for

log = logging.getLogger("mailer.handler")

# How many times to re-read and retry a claim that lost to a concurrent change of the document.
_CLAIM_ROUNDS = 3
UNKNOWN_OUTCOME = "the connection was lost after the message was sent and before the server confirmed it"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Target:
    """Where a mail document lives."""

    project: str
    database: str
    path: str


@dataclass
class Dependencies:
    """What the handler talks to; tests swap in their own clock, settings or randomness."""

    store_for: Callable[[Target], StatusStore] = lambda target: StatusStore(client_for(target.project, target.database))
    pool_for: Callable[..., SmtpPool] = pool_for  # (uri, password[, credentials])
    settings: Callable[[], Settings] = load_settings
    # Templates and users live in the mail document's database.
    lookups_for: Callable[[Target, Settings], Lookups] = lambda target, settings: build_lookups(
        client_for(target.project, target.database), settings
    )
    clock: Callable[[], datetime] = _utcnow
    random: Callable[[], float] = random.random
    # Lifecycle events (issue 12): called after each transition this handler wrote; never raises.
    events: Callable[..., list[str]] = emit_lifecycle_events


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
        old_fields = event.old_value.fields if event.old_value else None
        if not delivery.wants_attempt(event.kind, event.value.fields, old_fields, self.deps.clock()):
            log.info(
                "no attempt: delivery state is %s",
                delivery.state_of(event.value.fields),
                extra={"fields": ctx},
            )
            return "skipped"
        return self.process(Target(event.project, event.database, event.path), event.value, ctx)

    def process(self, target: Target, seen: DocumentState, ctx: dict[str, Any]) -> str:
        """Attempt one document as last seen (from an event or a query); the entry the sweep uses too.
        Returns the state it left the document in, or "skipped" when another attempt holds or finished it."""
        store = self.deps.store_for(target)
        current: DocumentState | None = seen
        for _ in range(_CLAIM_ROUNDS):
            outcome = self._attempt(store, target, current, ctx)
            if outcome is not None:
                return outcome
            # The document changed since we saw it: read it and decide again on what is there now.
            current = store.read(target.path)
            if current is None or not delivery.is_claimable(current.fields, self.deps.clock()):
                log.info(
                    "no attempt: another attempt holds or finished the document",
                    extra={"fields": {**ctx, "state": delivery.state_of(current.fields if current else None)}},
                )
                return "skipped"
        log.warning("no attempt: the document kept changing while claiming", extra={"fields": ctx})
        return "skipped"

    def _attempt(self, store: StatusStore, target: Target, seen: DocumentState, ctx: dict[str, Any]) -> str | None:
        """Validate, claim and send one version of the document. None if a write lost a race."""
        path = target.path
        previous = delivery.delivery_of(seen.fields)
        now = self.deps.clock()
        try:
            settings_ = self.deps.settings()
        except SettingsError as exc:
            return self._refuse(store, path, seen, f"function configuration: {exc}", Settings(None), ctx)
        # Publishes the lifecycle events of a transition from `seen`, once its write succeeded.
        announce = partial(self._announce, settings_, target, delivery.state_of(seen.fields), seen.update_time)

        history = delivery.history_of(previous)
        if delivery.state_of(seen.fields) == delivery.PROCESSING:
            # Taking over a claim whose attempt died: that attempt counts, and it may have sent.
            history, verdict = self._lost_attempt(previous, history, now, settings_)
            if verdict is not None:
                record = delivery.finish({**previous, "attemptHistory": history, "outcomeUnknown": True},
                                         delivery.ERROR, now, error=verdict, info=delivery.carried_info(previous),
                                         ttl=settings_.ttl)
                return self._write_verdict(store, path, seen, record, ctx, announce)
            previous = {**previous, "outcomeUnknown": True}

        try:
            due = send_at(seen.fields)
        except ScheduleError as exc:
            return self._refuse(store, path, seen, str(exc), settings_, ctx, announce=announce)
        if due is not None and due > now:
            return self._schedule(store, path, seen, previous, due, ctx, announce)

        continuing = delivery.continues_delivery(previous)
        try:
            prepared = prepare(
                seen.fields,
                settings_,
                self.deps.lookups_for(target, settings_),
                message_id=previous.get("messageId") if continuing else None,
            )
            mail = prepared.mail
            pool = self._pool(settings_)
        except Refusal as exc:
            return self._refuse(store, path, seen, str(exc), settings_, ctx, exc.unresolved_uids, announce=announce)
        except (gexc.GoogleAPICallError, gexc.RetryError):
            # Firestore could not be read (templates, users): nothing was claimed, so let the caller retry.
            raise
        except Exception as exc:  # a defect of ours: record it rather than fail the event into a retry loop
            log.exception("unexpected failure while preparing the message", extra={"fields": ctx})
            reason = f"internal error while preparing the message ({type(exc).__name__})"
            return self._refuse(store, path, seen, reason, settings_, ctx, announce=announce)

        claimed = delivery.claim(previous, now, settings_.lease, message_id=mail.message_id, history=history)
        claim_version = store.write_if_unchanged(path, claimed, seen.update_time)
        if claim_version is None:
            return None
        announce(claimed)
        carried = delivery.carried_info(claimed) if claimed["info"] else delivery.Info(message_id=mail.message_id)
        owed = delivery.owed_recipients(mail.recipients, carried)
        ctx = {
            **ctx,
            "attempt": claimed["attempts"],
            "messageId": mail.message_id,
            "recipientDomains": sorted({domain_of(r) for r in owed}),
        }
        log.info("sending", extra={"fields": {**ctx, "state": delivery.PROCESSING, "recipients": len(owed)}})
        record, smtp_code = self._send(pool, mail, owed, carried, claimed, settings_)
        record = delivery.with_unresolved_uids(record, [uid.as_map() for uid in prepared.unresolved_uids])
        try:
            recorded = store.write(path, record)
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            # The email went out (or not) but Firestore would not take the record: the claim's lease
            # lapses and the sweep takes the document over, with the same Message-ID.
            log.error("outcome not recorded: Firestore failed (%s); the lease will lapse and the sweep "
                      "takes the document over", type(exc).__name__, extra={"fields": {**ctx, "state": record["state"]}})
            return delivery.PROCESSING
        if recorded:  # the outcome of this claim: identified by the claim's version
            self._announce(settings_, target, delivery.PROCESSING, claim_version, record)
        fields = {**ctx, "state": record["state"], "smtpCode": smtp_code}
        if record["state"] == delivery.SUCCESS:
            log.info("sent", extra={"fields": fields})
        else:
            # The server's reply text can quote addresses, so the log carries its code, the document the text.
            log.warning("not sent", extra={"fields": {**fields, "nextAttemptTime": record.get("nextAttemptTime")}})
        return record["state"]

    def _lost_attempt(
        self, previous: dict[str, Any], history: list[dict[str, Any]], now: datetime, settings_: Settings
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The history with the dead attempt added, and the final error if no attempt may follow it."""
        attempt = delivery.attempts_of(previous)
        lapsed_at = previous.get("leaseExpireTime") if isinstance(previous.get("leaseExpireTime"), datetime) else now
        history = delivery.with_history(history, delivery.history_entry(attempt, lapsed_at, delivery.LOST_ATTEMPT, outcome_unknown=True))
        if settings_.at_most_once:
            return history, (f"attempt {attempt} did not finish before its lease lapsed, so whether the message was "
                             "sent is unknown; not sent again because DELIVERY_GUARANTEE is at-most-once")
        if attempt >= settings_.max_attempts:
            return history, f"gave up after {attempt} attempts; last: {delivery.LOST_ATTEMPT}"
        return history, None

    def _write_verdict(self, store: StatusStore, path: str, seen: DocumentState, record: dict[str, Any], ctx: dict[str, Any],
                       announce: Callable[[dict[str, Any]], Any] | None = None) -> str | None:
        if store.write_if_unchanged(path, record, seen.update_time) is None:
            return None
        if announce is not None:
            announce(record)
        log.warning("not sent: the attempt holding the claim died and no other may follow it",
                    extra={"fields": {**ctx, "state": record["state"], "attempt": record.get("attempts")}})
        return record["state"]

    def _schedule(
        self, store: StatusStore, path: str, seen: DocumentState, previous: dict[str, Any], due: datetime, ctx: dict[str, Any],
        announce: Callable[[dict[str, Any]], Any] | None = None,
    ) -> str | None:
        """A `sendAt` in the future: PENDING with that time as the next attempt; the sweep sends it then."""
        if delivery.state_of(seen.fields) == delivery.PENDING and delivery.next_attempt_time(previous) == due:
            return delivery.PENDING  # already scheduled for exactly this time
        record = delivery.scheduled(previous, due)
        if store.write_if_unchanged(path, record, seen.update_time) is None:
            return None
        if announce is not None:
            announce(record)
        log.info("scheduled", extra={"fields": {**ctx, "state": delivery.PENDING, "nextAttemptTime": due}})
        return delivery.PENDING

    def _refuse(
        self,
        store: StatusStore,
        path: str,
        seen: DocumentState,
        reason: str,
        settings_: Settings,
        ctx: dict[str, Any],
        unresolved_uids: Sequence[Unresolved] = (),
        announce: Callable[[dict[str, Any]], Any] | None = None,
    ) -> str | None:
        """Record why the document cannot be sent: one write, made only if nobody else acted on it."""
        now = self.deps.clock()
        claimed = delivery.claim(delivery.delivery_of(seen.fields), now, settings_.lease)
        record = delivery.failed(claimed, now, reason, transient=False, info=None, max_attempts=settings_.max_attempts,
                                 backoff=self._backoff(settings_), ttl=settings_.ttl)
        record = delivery.with_unresolved_uids(record, [uid.as_map() for uid in unresolved_uids])
        if store.write_if_unchanged(path, record, seen.update_time) is None:
            return None
        if announce is not None:
            announce(record)
        # Only the field the reason names is logged: the reason itself may quote an address.
        field = reason.split(":", 1)[0]
        log.warning("refused: invalid %s", field, extra={"fields": {**ctx, "state": delivery.ERROR, "attempt": record["attempts"]}})
        return delivery.ERROR

    def _announce(self, settings_: Settings, target: Target, before: str | None, version: datetime | None,
                  record: dict[str, Any]) -> None:
        """Lifecycle events for a transition just written (issue 12); `version` identifies it."""
        self.deps.events(settings_, project=target.project, database=target.database, path=target.path,
                         before=before, record=record, version=version)

    def _pool(self, settings_: Settings) -> SmtpPool:
        if not settings_.smtp_connection_uri:
            raise Refusal("function configuration: SMTP_CONNECTION_URI is not set")
        try:
            if settings_.smtp_secrets is not None:  # secrets read at run time and/or XOAUTH2 (issue 11)
                return self.deps.pool_for(settings_.smtp_connection_uri, None, settings_.smtp_secrets)
            return self.deps.pool_for(settings_.smtp_connection_uri, settings_.smtp_password)
        except SmtpConfigError as exc:
            raise Refusal(f"function configuration: {exc}") from None

    def _backoff(self, settings_: Settings) -> Callable[[int], timedelta]:
        return partial(delivery.backoff_delay, base=settings_.retry_backoff, cap=settings_.retry_backoff_max, rng=self.deps.random)

    def _send(
        self,
        pool: SmtpPool,
        mail: ComposedMail,
        owed: list[str],
        carried: delivery.Info,
        claimed: dict[str, Any],
        settings_: Settings,
    ) -> tuple[dict[str, Any], int | None]:
        """Send to the recipients still owed and build the outcome record; also returns the SMTP reply
        code for the log."""
        failed = partial(delivery.failed, max_attempts=settings_.max_attempts, backoff=self._backoff(settings_), ttl=settings_.ttl)
        if not owed:  # every recipient already accepted in an earlier attempt of this delivery
            return delivery.finish(claimed, delivery.SUCCESS, self.deps.clock(), info=carried, ttl=settings_.ttl), None
        try:
            result = pool.send(mail.envelope_from, owed, mail.payload, mail.smtputf8, dsn=mail.dsn)  # dsn: issue 12
        except DeliveryError as exc:
            now = self.deps.clock()
            rejected = list(exc.rejected or [])
            if getattr(exc, "outcome_unknown", False):
                if settings_.at_most_once:
                    info = delivery.merged_info(carried, mail.message_id, rejected=rejected)
                    reason = f"{exc.message}; {UNKNOWN_OUTCOME}, so it is not sent again (DELIVERY_GUARANTEE is at-most-once)"
                    return failed(claimed, now, reason, transient=False, info=info, outcome_unknown=True), exc.code
                info = delivery.merged_info(carried, mail.message_id, pending=owed)
                return failed(claimed, now, exc.message, transient=True, info=info, outcome_unknown=True), exc.code
            # Refused for now (4xx at RCPT) is still owed, even when others were refused for good.
            pending = [r for r in owed if r not in rejected] if exc.transient or exc.pending else []
            info = delivery.merged_info(carried, mail.message_id, rejected=rejected, pending=pending)
            return failed(claimed, now, exc.message, transient=bool(pending), info=info), exc.code
        except Exception as exc:  # a defect of ours: keep the document owed, never lose it silently
            log.exception("unexpected failure while sending")
            error = f"internal error while sending ({type(exc).__name__})"
            info = delivery.merged_info(carried, mail.message_id, pending=owed)
            return failed(claimed, self.deps.clock(), error, transient=True, info=info), None
        now = self.deps.clock()
        unknown = list(getattr(result, "unknown", []) or [])
        pending = list(result.pending) + ([] if settings_.at_most_once else unknown)
        rejected = list(result.rejected) + (unknown if settings_.at_most_once else [])
        info = delivery.merged_info(carried, mail.message_id, accepted=result.accepted, rejected=rejected,
                                    pending=pending, response=result.response)
        code = int(result.response[:3]) if result.response[:3].isdigit() else None
        if info.pending:
            reason = getattr(result, "deferred_reason", None) or (
                f"{len(info.pending)} recipient(s) refused temporarily; the others accepted the message"
            )
            return failed(claimed, now, reason, transient=True, info=info, outcome_unknown=bool(unknown)), code
        return delivery.finish(claimed, delivery.SUCCESS, now, info=info, ttl=settings_.ttl), code
