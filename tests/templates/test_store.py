"""mailer.template_store against the Firestore emulator: what is read, how often, and when a change shows."""

from __future__ import annotations

import threading

import pytest

from mailer.document import TemplateRef
from mailer.settings import SettingsError, load_settings
from mailer.template_store import TemplateStore, store_for
from mailer.templates import TemplateError

WELCOME = {"subject": "Hi {{name}}", "text": "Hello {{name}}\n{{> footer}}"}
FOOTER = {"partial": True, "text": "-- {{team}}"}


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def templates(firestore_client, unique_collection):
    def write(name: str, fields: dict) -> None:
        firestore_client.collection(unique_collection).document(name).set(fields)

    write.collection = unique_collection
    return write


@pytest.fixture
def clock() -> Clock:
    return Clock()


def reads_of(emulator, collection: str) -> dict[str, int]:
    by_document = emulator.stats()["readsByDocument"]
    return {path.split("/", 1)[1]: count for path, count in by_document.items() if path.startswith(f"{collection}/")}


def render(store: TemplateStore, template: str, fallback: str | None = None, **data) -> dict:
    return store.template(TemplateRef(name=template, data={}, fallback=fallback)).render(data).fields


def test_a_template_is_read_once_and_then_served_from_the_cache(firestore_emulator, firestore_client, templates, clock) -> None:
    templates("Plain", {"subject": "Hi {{name}}", "text": "no partials here"})
    store = TemplateStore(firestore_client, templates.collection, 60, clock)
    firestore_emulator.reset_stats()
    for _ in range(5):
        assert render(store, "Plain", name="Ada")["subject"] == "Hi Ada"
    assert reads_of(firestore_emulator, templates.collection) == {"Plain": 1}
    assert firestore_emulator.stats()["reads"] == 1  # no partial query: the template calls none


def test_partials_are_read_with_one_query_and_cached_too(firestore_emulator, firestore_client, templates, clock) -> None:
    templates("Welcome", WELCOME)
    templates("footer", FOOTER)
    templates("header", {"partial": True, "text": "unused"})
    store = TemplateStore(firestore_client, templates.collection, 60, clock)
    firestore_emulator.reset_stats()
    for _ in range(3):
        assert render(store, "Welcome", name="Ada", team="Acme")["text"] == "Hello Ada\n-- Acme"
    assert reads_of(firestore_emulator, templates.collection) == {"Welcome": 1, "footer": 1, "header": 1}


def test_a_change_shows_once_the_cached_copy_is_max_age_old(firestore_emulator, firestore_client, templates, clock) -> None:
    templates("Welcome", WELCOME)
    templates("footer", FOOTER)
    store = TemplateStore(firestore_client, templates.collection, 60, clock)
    assert render(store, "Welcome", name="Ada", team="A")["subject"] == "Hi Ada"
    templates("Welcome", {**WELCOME, "subject": "Welcome, {{name}}"})
    templates("footer", {**FOOTER, "text": "Regards, {{team}}"})
    clock.now += 59.9
    assert render(store, "Welcome", name="Ada", team="A") == {"subject": "Hi Ada", "text": "Hello Ada\n-- A"}
    clock.now += 0.1
    assert render(store, "Welcome", name="Ada", team="A") == {"subject": "Welcome, Ada", "text": "Hello Ada\nRegards, A"}


def test_a_burst_of_threads_on_a_cold_cache_reads_each_document_once(firestore_emulator, firestore_client, templates, clock) -> None:
    templates("Welcome", WELCOME)
    templates("footer", FOOTER)
    store = TemplateStore(firestore_client, templates.collection, 60, clock)
    firestore_emulator.reset_stats()
    threads_count = 12
    barrier = threading.Barrier(threads_count)
    results: list[str] = []
    failures: list[BaseException] = []

    def send() -> None:
        try:
            barrier.wait()
            results.append(render(store, "Welcome", name="Ada", team="Acme")["text"])
        except BaseException as error:  # surfaced below: a thread's failure must fail the test
            failures.append(error)

    threads = [threading.Thread(target=send) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert results == ["Hello Ada\n-- Acme"] * threads_count
    assert reads_of(firestore_emulator, templates.collection) == {"Welcome": 1, "footer": 1}


def test_a_missing_template_names_itself_and_the_collection_and_is_remembered(firestore_emulator, firestore_client, templates, clock) -> None:
    store = TemplateStore(firestore_client, templates.collection, 60, clock)
    firestore_emulator.reset_stats()
    for _ in range(3):
        with pytest.raises(TemplateError) as raised:
            render(store, "Nope")
        assert str(raised.value) == f"template: 'Nope' does not exist in collection '{templates.collection}'"
    assert firestore_emulator.stats()["reads"] == 1  # a missing document costs one read, once
    templates("Nope", {"text": "now here"})
    clock.now += 60
    assert render(store, "Nope") == {"text": "now here"}


def test_the_fallback_serves_when_the_named_template_does_not_exist(firestore_client, templates, clock) -> None:
    templates("Generic", {"subject": "Code {{code}}"})
    store = TemplateStore(firestore_client, templates.collection, 60, clock)
    assert render(store, "SignIn", fallback="Generic", code="42") == {"subject": "Code 42"}
    templates("SignIn", {"subject": "Sign in with {{code}}"})
    assert render(store, "SignIn", fallback="Generic", code="42") == {"subject": "Code 42"}  # still cached as missing
    clock.now += 60
    assert render(store, "SignIn", fallback="Generic", code="42") == {"subject": "Sign in with 42"}
    with pytest.raises(TemplateError, match=rf"^template: neither 'A' nor its fallback 'B' exists in collection '{templates.collection}'$"):
        render(store, "A", fallback="B")


def test_a_partial_cannot_be_sent_as_a_template(firestore_client, templates, clock) -> None:
    templates("footer", FOOTER)
    store = TemplateStore(firestore_client, templates.collection, 60, clock)
    with pytest.raises(TemplateError, match=r"'footer' in collection '.*' is a partial \(partial: true\)"):
        render(store, "footer")


def test_a_broken_template_is_reported_with_its_position_and_not_read_again(firestore_emulator, firestore_client, templates, clock) -> None:
    templates("Broken", {"subject": "ok", "html": "<p>\n{{#if a}}x</p>"})
    templates("Typed", {"subject": 42})
    store = TemplateStore(firestore_client, templates.collection, 60, clock)
    firestore_emulator.reset_stats()
    for _ in range(2):
        with pytest.raises(TemplateError, match=r"'Broken' in collection '.*': html has a syntax error at line 2, column 1 \('\{\{#if a\}\}'\): unclosed block"):
            render(store, "Broken")
        with pytest.raises(TemplateError, match=r"'Typed' in collection '.*': subject must be a string, got number"):
            render(store, "Typed")
    assert reads_of(firestore_emulator, templates.collection) == {"Broken": 1, "Typed": 1}


def test_max_age_zero_reads_for_every_email(firestore_emulator, firestore_client, templates, clock) -> None:
    templates("Plain", {"text": "t"})
    store = TemplateStore(firestore_client, templates.collection, 0, clock)
    firestore_emulator.reset_stats()
    for _ in range(3):
        render(store, "Plain")
    assert reads_of(firestore_emulator, templates.collection) == {"Plain": 3}


def test_an_instance_keeps_one_store_per_client_and_collection(firestore_client, unique_collection) -> None:
    store = store_for(firestore_client, unique_collection, 60)
    assert store_for(firestore_client, unique_collection, 60) is store
    assert store_for(firestore_client, f"{unique_collection}-other", 60) is not store


def test_the_cache_age_setting_defaults_to_a_minute_and_names_itself_when_wrong() -> None:
    assert load_settings({}).template_cache_seconds == 60
    assert load_settings({"TEMPLATE_CACHE_SECONDS": "0"}).template_cache_seconds == 0
    for bad, reason in (("-1", "must be at least 0, got -1"), ("soon", "expected a whole number, got 'soon'")):
        with pytest.raises(SettingsError) as raised:
            load_settings({"TEMPLATE_CACHE_SECONDS": bad})
        assert str(raised.value) == f"TEMPLATE_CACHE_SECONDS: {reason}"
