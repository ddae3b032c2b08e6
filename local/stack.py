"""The whole pipeline on one machine, started in order and stopped in reverse, also on failure:

    SMTP inbox (STARTTLS + AUTH, .eml files) + its web page
    Firestore emulator (node emulator/start.mjs)
    the function under functions-framework, with the deployed environment (stacks/Pulumi.local.yaml)
    the trigger bridge (the deployed trigger's event type and document filter)

Everything listens on 127.0.0.1, on free ports unless given.
"""

from __future__ import annotations

import os
import secrets
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from google.cloud import firestore

from infra.config import MailerSettings
from local.bridge import TriggerBridge, http_deliverer
from local.documents import emulator_client
from local.emulator import EmulatorAddress, start_emulator
from local.function import start_function
from local.inbox import SmtpInbox
from local.inbox_web import InboxWeb
from local.stackfile import (
    LOCAL_STACK_FILE,
    function_process_environment,
    load_local_settings,
    local_smtp_uri,
    smtp_user,
    trigger_filter,
)
from local.state import FolderLock, StackState
from local.template_seed import TEMPLATES_DIR, load_template_documents, seed_templates
from local.tls import create_local_tls


@dataclass(frozen=True)
class Ports:
    """0 = any free port."""

    smtp: int = 0
    inbox_web: int = 0
    function: int = 0
    emulator: int = 0
    emulator_admin: int = 0


def _empty_inbox(folder: Path) -> None:
    # The emulator keeps nothing between runs; the inbox starts empty too, so it shows this run only.
    folder.mkdir(parents=True, exist_ok=True)
    for path in [*folder.glob("*.eml"), *folder.glob(".*.part")]:
        path.unlink()


class LocalStack:
    def __init__(self, state_dir: Path, *, stack_file: Path = LOCAL_STACK_FILE, ports: Ports = Ports(),
                 templates_dir: Path = TEMPLATES_DIR) -> None:
        self.state_dir = state_dir
        self.stack_file = stack_file
        self.templates_dir = templates_dir
        self.ports = ports
        self._resources = ExitStack()
        self.settings: MailerSettings
        self.inbox: SmtpInbox
        self.web: InboxWeb
        self.emulator: EmulatorAddress
        self.function_url: str
        self.bridge: TriggerBridge
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
    def emulator_log(self) -> Path:
        return self.state_dir / "emulator.log"

    def start(self) -> None:
        settings = load_local_settings(self.stack_file)
        self.settings = settings
        with ExitStack() as started:
            lock = FolderLock(self.state_dir)
            lock.acquire()
            started.callback(lock.release)
            _empty_inbox(self.inbox_dir)

            # The password exists only in this process and the function's environment, as a
            # Secret Manager value does in the cloud.
            password = self._smtp_password = secrets.token_urlsafe(24)
            tls = create_local_tls(self.state_dir / "tls")
            self.inbox = started.enter_context(
                SmtpInbox(self.inbox_dir, tls, smtp_user(settings.smtp_connection_uri), password, self.ports.smtp)
            )
            self.web = started.enter_context(InboxWeb(self.inbox_dir, self.ports.inbox_web))

            emulator_process, self.emulator = start_emulator(
                self.emulator_log, self.ports.emulator, self.ports.emulator_admin
            )
            started.callback(emulator_process.stop)
            self.client = emulator_client(self.emulator.host, settings.project, settings.database)
            started.callback(self.client.close)
            self._seed_templates()

            smtp_uri = local_smtp_uri(
                settings.smtp_connection_uri, host=self.inbox.host, port=self.inbox.port, ca_file=str(tls.ca_file)
            )
            environment = function_process_environment(
                settings, smtp_uri=smtp_uri, smtp_password=password, emulator_host=self.emulator.host
            )
            function_process, self.function_url = start_function(environment, self.function_log, self.ports.function)
            started.callback(function_process.stop)

            self.bridge = TriggerBridge(
                f"{self.emulator.admin_url}/changes", http_deliverer(self.function_url), **trigger_filter(settings)
            )
            self.bridge.start()
            started.callback(self.bridge.stop)
            self._resources = started.pop_all()

    def stop(self) -> None:
        """Stop everything that was started, newest first; safe to call twice."""
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
            inbox_url=self.web.url,
            inbox_dir=str(self.inbox_dir),
            smtp_address=f"{self.inbox.host}:{self.inbox.port}",
            project=self.settings.project,
            database=self.settings.database,
            mail_collection=self.settings.mail_collection,
            templates_collection=self.settings.templates_collection,
            templates_dir=str(self.templates_dir),
        )
