"""The whole pipeline on one machine, started in order and stopped in reverse, also on failure:

    SMTP inbox (STARTTLS + AUTH, .eml files) + its web page
    Firestore emulator (node emulator/start.mjs)
    the functions under functions-framework, with the deployed environment (stacks/Pulumi.local.yaml):
        process_mail, and sweep_mail (retries, sendAt, lapsed attempts) in a second process
    the trigger bridge (the deployed trigger's event type and document filter) -> process_mail
    the scheduler (Cloud Scheduler -> Pub/Sub -> Eventarc) -> sweep_mail every `sweep_seconds`

Everything listens on 127.0.0.1, on free ports unless given.

check() says which part has died (a process exited, a thread ended); `make demo ARGS=--serve` calls it
a few times a second and stops everything when one has, rather than keep running without it.
"""

from __future__ import annotations

import base64
import os
import secrets
from contextlib import ExitStack
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from google.cloud import firestore

from infra.config import MailerSettings
from infra.sweep import MESSAGE_DATA as SWEEP_MESSAGE_DATA
from local.bridge import TriggerBridge, http_deliverer
from local.documents import emulator_client
from local.emulator import EmulatorAddress, start_emulator
from local.eventarc import pubsub_event
from local.function import SWEEP_ENTRY_POINT, launch_function, wait_until_serving
from local.inbox import FAULT_FILE, InboxFault, SmtpInbox, write_fault_file
from local.inbox_web import InboxWeb
from local.oauth import LocalTokenEndpoint
from local.scheduler import SweepScheduler
from local.stackfile import (
    LOCAL_STACK_FILE,
    function_process_environment,
    load_local_settings,
    local_smtp_uri,
    smtp_user,
    sweep_event_source,
    sweep_process_environment,
    trigger_filter,
)
from local.state import FolderLock, StackState
from local.template_seed import TEMPLATES_DIR, load_template_documents, seed_templates
from local.processes import ManagedProcess
from local.tls import create_local_tls


@dataclass(frozen=True)
class Ports:
    """0 = any free port."""

    smtp: int = 0
    inbox_web: int = 0
    function: int = 0
    sweep: int = 0
    emulator: int = 0
    emulator_admin: int = 0


# The sweep's period on this machine: short, so retries and sendAt can be watched (deployed: a cron,
# at most once a minute).
DEFAULT_SWEEP_SECONDS = 2.0
# One sweep call may run as long as the longest sweep function timeout (mailer:sweepTimeoutSeconds <= 540).
SWEEP_CALL_TIMEOUT_SECONDS = 600.0
# What the local scheduler's Pub/Sub messages carry (sweep_mail reads none of it): the deployed job's data.
SWEEP_MESSAGE = base64.b64decode(SWEEP_MESSAGE_DATA)


def xoauth2_uri(smtp_uri: str, endpoint: LocalTokenEndpoint) -> str:
    """The local SMTP URI with authMethod=XOAUTH2 and the local token endpoint (replacing any authMethod)."""
    parts = urlsplit(smtp_uri)
    options = [(name, value) for name, value in parse_qsl(parts.query)
               if name not in ("authMethod", "oauth2TokenUrl", "oauth2ClientId")]
    options += [("authMethod", "XOAUTH2"), ("oauth2TokenUrl", endpoint.url), ("oauth2ClientId", endpoint.client_id)]
    return urlunsplit(parts._replace(query=urlencode(options, quote_via=quote)))


@dataclass(frozen=True)
class DeadPart:
    """A part of the stack that stopped on its own: `name` and `what` happened, and where its log is."""

    name: str  # "function process_mail", "trigger bridge", ...
    what: str  # "exited with code -9", "stopped: change feed lost (...)"
    log: Path | None = None

    def __str__(self) -> str:
        return f"{self.name} {self.what}"


def _empty_inbox(folder: Path) -> None:
    # The emulator keeps nothing between runs; the inbox starts empty too, so it shows this run only.
    folder.mkdir(parents=True, exist_ok=True)
    for path in [*folder.glob("*.eml"), *folder.glob(".*.part")]:
        path.unlink()


class LocalStack:
    def __init__(self, state_dir: Path, *, stack_file: Path = LOCAL_STACK_FILE, ports: Ports = Ports(),
                 templates_dir: Path = TEMPLATES_DIR, sweep_seconds: float | None = DEFAULT_SWEEP_SECONDS,
                 inbox_faults: Sequence[InboxFault] = (), xoauth2: bool = False) -> None:
        """sweep_seconds: how often the scheduler calls sweep_mail; None starts neither (no retries,
        no sendAt: documents wait in RETRY or PENDING). inbox_faults: injected at start (see local.inbox);
        changed at run time through `fault_file`."""
        if sweep_seconds is not None and sweep_seconds <= 0:
            raise ValueError(f"sweep_seconds must be positive, not {sweep_seconds}")
        self.state_dir = state_dir
        self.sweep_seconds = sweep_seconds
        self.stack_file = stack_file
        self.templates_dir = templates_dir
        self.ports = ports
        self.inbox_faults = tuple(inbox_faults)
        # XOAUTH2 mode (issue 11): a local token endpoint; the inbox takes its bearer tokens only.
        self.xoauth2 = xoauth2
        self.token_endpoint: LocalTokenEndpoint | None = None
        self._processes: list[tuple[str, ManagedProcess]] = []  # watched by check()
        self._resources = ExitStack()
        self.settings: MailerSettings
        self.inbox: SmtpInbox
        self.web: InboxWeb
        self.emulator: EmulatorAddress
        self.function_url: str
        self.sweep_url: str | None = None
        self.bridge: TriggerBridge
        self.scheduler: SweepScheduler | None = None
        self.client: firestore.Client
        self.templates: list[str] = []  # names seeded into the templates collection
        self._smtp_password = ""  # kept only so tests can prove it appears nowhere

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def inbox_dir(self) -> Path:
        return self.state_dir / "inbox"

    @property
    def function_log(self) -> Path:
        return self.state_dir / "function.log"

    @property
    def sweep_log(self) -> Path:
        return self.state_dir / "sweep.log"

    @property
    def emulator_log(self) -> Path:
        return self.state_dir / "emulator.log"

    @property
    def fault_file(self) -> Path:
        """The inbox's faults, one SPEC a line; the inbox re-reads it when it changes."""
        return self.state_dir / FAULT_FILE

    def check(self) -> DeadPart | None:
        """The first part found dead (a process exited, a thread ended), or None while all run."""
        for name, process in self._processes:
            code = process.process.poll()
            if code is not None:
                return DeadPart(name, f"exited with code {code}", process.log_path)
        bridge = getattr(self, "bridge", None)
        if bridge is not None and not bridge.running:
            return DeadPart("trigger bridge", f"stopped: {bridge.stopped_reason or 'its thread ended'}",
                            self.emulator_log)  # its change feed
        inbox = getattr(self, "inbox", None)
        if inbox is not None and not inbox.running:
            return DeadPart("SMTP inbox", "stopped: its thread ended")
        if self.token_endpoint is not None and not self.token_endpoint.running:
            return DeadPart("OAuth2 token endpoint", "stopped: its thread ended")
        web_thread = getattr(getattr(self, "web", None), "_thread", None)
        if web_thread is not None and not web_thread.is_alive():
            return DeadPart("inbox web page", "stopped: its thread ended")
        if self.scheduler is not None and not self.scheduler.running:
            return DeadPart("sweep scheduler", "stopped: its thread ended", self.sweep_log)
        return None

    def start(self) -> None:
        settings = load_local_settings(self.stack_file)
        self.settings = settings
        with ExitStack() as started:
            lock = FolderLock(self.state_dir)
            lock.acquire()
            started.callback(lock.release)
            _empty_inbox(self.inbox_dir)
            write_fault_file(self.fault_file, self.inbox_faults)

            # The password exists only in this process and the function's environment, as a
            # Secret Manager value does in the cloud.
            password = self._smtp_password = secrets.token_urlsafe(24)
            tls = create_local_tls(self.state_dir / "tls")
            if self.xoauth2:
                self.token_endpoint = started.enter_context(LocalTokenEndpoint(smtp_user(settings.smtp_connection_uri)))
            self.inbox = started.enter_context(
                SmtpInbox(self.inbox_dir, tls, smtp_user(settings.smtp_connection_uri), password, self.ports.smtp,
                          faults=self.inbox_faults, fault_file=self.fault_file,
                          token_validator=self.token_endpoint.valid if self.token_endpoint else None)
            )
            self.web = started.enter_context(InboxWeb(self.inbox_dir, self.ports.inbox_web))

            emulator_process, self.emulator = start_emulator(
                self.emulator_log, self.ports.emulator, self.ports.emulator_admin
            )
            started.callback(emulator_process.stop)
            self._processes.append(("Firestore emulator", emulator_process))
            self.client = emulator_client(self.emulator.host, settings.project, settings.database)
            started.callback(self.client.close)
            self._seed_templates()

            smtp_uri = local_smtp_uri(
                settings.smtp_connection_uri, host=self.inbox.host, port=self.inbox.port, ca_file=str(tls.ca_file)
            )
            if self.token_endpoint is not None:
                smtp_uri = xoauth2_uri(smtp_uri, self.token_endpoint)
            secrets_and_hosts = {"smtp_uri": smtp_uri, "smtp_password": password, "emulator_host": self.emulator.host}
            self._start_functions(
                started,
                self._with_oauth2(function_process_environment(settings, **secrets_and_hosts)),
                self._with_oauth2(sweep_process_environment(settings, **secrets_and_hosts)) if self.sweep_seconds else None,
            )

            self.bridge = TriggerBridge(
                f"{self.emulator.admin_url}/changes", http_deliverer(self.function_url), **trigger_filter(settings)
            )
            self.bridge.start()
            started.callback(self.bridge.stop)

            if self.sweep_url and self.sweep_seconds:
                self.scheduler = SweepScheduler(
                    http_deliverer(self.sweep_url, SWEEP_CALL_TIMEOUT_SECONDS),
                    partial(pubsub_event, data=SWEEP_MESSAGE, **sweep_event_source(settings)),
                    self.sweep_seconds,
                )
                self.scheduler.start()
                started.callback(self.scheduler.stop)
            self._resources = started.pop_all()

    def _with_oauth2(self, environment: dict[str, str]) -> dict[str, str]:
        """XOAUTH2 mode: the OAuth2 secrets instead of the password, as Secret Manager would inject them."""
        endpoint = self.token_endpoint
        if endpoint is None:
            return environment
        environment = {name: value for name, value in environment.items() if name != "SMTP_PASSWORD"}
        environment["SMTP_OAUTH2_CLIENT_SECRET"] = endpoint.client_secret
        environment["SMTP_OAUTH2_REFRESH_TOKEN"] = endpoint.refresh_token
        return environment

    def _start_functions(self, started: ExitStack, environment: dict[str, str],
                         sweep_environment: dict[str, str] | None) -> None:
        """process_mail and (unless sweep_environment is None) sweep_mail, each in its own
        functions-framework process: both launched, then both waited for (each takes seconds to import)."""
        process, port = launch_function(environment, self.function_log, self.ports.function)
        started.callback(process.stop)
        launched = [(process, port)]
        self._processes.append(("function process_mail", process))
        if sweep_environment is not None:
            process, port = launch_function(sweep_environment, self.sweep_log, self.ports.sweep,
                                            target=SWEEP_ENTRY_POINT)
            started.callback(process.stop)
            launched.append((process, port))
            self._processes.append(("function sweep_mail", process))
        urls = [wait_until_serving(process, port) for process, port in launched]
        self.function_url = urls[0]
        self.sweep_url = urls[1] if len(urls) > 1 else None

    def stop(self) -> None:
        """Stop everything that was started, newest first; safe to call twice."""
        self._processes = []
        self._resources.close()

    def _seed_templates(self) -> None:
        collection = self.settings.templates_collection
        documents = load_template_documents(self.templates_dir) if collection else None
        if collection and documents:
            seed_templates(self.client, collection, documents)
            self.templates = sorted(documents)

    def mail(self, doc_id: str | None = None) -> firestore.DocumentReference:
        collection = self.client.collection(self.settings.mail_collection)
        return collection.document(doc_id) if doc_id else collection.document()

    def state(self) -> StackState:
        return StackState(
            pid=os.getpid(),
            emulator_host=self.emulator.host,
            emulator_admin_url=self.emulator.admin_url,
            function_url=self.function_url,
            sweep_url=self.sweep_url,
            sweep_seconds=self.sweep_seconds,
            inbox_url=self.web.url,
            inbox_dir=str(self.inbox_dir),
            smtp_address=f"{self.inbox.host}:{self.inbox.port}",
            project=self.settings.project,
            database=self.settings.database,
            mail_collection=self.settings.mail_collection,
            templates_collection=self.settings.templates_collection,
            templates_dir=str(self.templates_dir),
        )
