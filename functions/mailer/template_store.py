"""Templates read from the templates collection and cached per instance.

Reads, per instance:
- a template document is read (one read) the first time an email names it, and again only once its
  copy is TEMPLATE_CACHE_SECONDS old; a missing template is remembered the same way;
- partials are read with one query (one read per partial, at least one) only for templates that call
  a partial (`{{> name}}`), and cached the same way;
- so an email whose template is cached costs no read, and a change to a template reaches every email
  that starts TEMPLATE_CACHE_SECONDS or more after it was made.
Instances may run several requests at once: the cache is shared by their threads, and one refresh runs
at a time, so a burst of emails on a cold or expired cache reads each document once, not once per email.
Firestore failures: a denied or invalid read is a TemplateError (the document ends in ERROR, naming the
collection); anything else (unavailable, deadline) propagates, so the event is delivered again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from mailer.document import TemplateRef
from mailer.templates import (
    EMPTY_PARTIALS,
    PartialSet,
    Template,
    TemplateDocument,
    TemplateError,
    parse_template_document,
)

# Failures that another attempt would meet again: end the document in ERROR rather than retry.
_PERMANENT = (gexc.PermissionDenied, gexc.Unauthenticated, gexc.InvalidArgument, gexc.NotFound, gexc.FailedPrecondition)


@dataclass(frozen=True)
class _Cached:
    value: Any
    loaded_at: float  # clock reading taken before the read began, so staleness is never understated


class TemplateStore:
    def __init__(
        self,
        client: firestore.Client,
        collection: str,
        max_age_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.collection = collection
        self.origin = f"collection {collection!r}"
        self._client = client
        self._max_age = max_age_seconds
        self._clock = clock
        self._refresh = threading.Lock()
        # name -> TemplateDocument, TemplateError (a malformed document) or None (no such document)
        self._documents: dict[str, _Cached] = {}
        self._partials: _Cached | None = None
        # name -> (document, partials, Template or TemplateError) compiled from exactly those
        self._compiled: dict[str, tuple[TemplateDocument, PartialSet, Template | TemplateError]] = {}

    def template(self, ref: TemplateRef) -> Template:
        """The template `ref` names, or its fallback when that does not exist. Raises TemplateError."""
        name, document = ref.name, self._document(ref.name)
        if document is None and ref.fallback is not None:
            name, document = ref.fallback, self._document(ref.fallback)
        if document is None:
            if ref.fallback is not None:
                raise TemplateError(f"neither {ref.name!r} nor its fallback {ref.fallback!r} exists in {self.origin}")
            raise TemplateError(f"{ref.name!r} does not exist in {self.origin}")
        if isinstance(document, TemplateError):
            raise document
        if document.partial:
            raise TemplateError(f"{document.label} is a partial (partial: true); name a template, and call partials from it as {{{{> {name}}}}}")
        partials = self._partial_set() if document.uses_partials else EMPTY_PARTIALS
        return self._compile(name, document, partials)

    def _compile(self, name: str, document: TemplateDocument, partials: PartialSet) -> Template:
        cached = self._compiled.get(name)
        if cached is None or cached[0] is not document or cached[1] is not partials:
            try:
                result: Template | TemplateError = Template(document, partials)
            except TemplateError as error:
                result = error
            cached = (document, partials, result)
            self._compiled[name] = cached  # a race only compiles twice; either result is the same
        if isinstance(cached[2], TemplateError):
            raise cached[2]
        return cached[2]

    def _fresh(self, cached: _Cached | None) -> bool:
        return cached is not None and self._clock() - cached.loaded_at < self._max_age

    def _document(self, name: str) -> TemplateDocument | TemplateError | None:
        cached = self._documents.get(name)
        if self._fresh(cached):
            return cached.value
        with self._refresh:
            cached = self._documents.get(name)
            if self._fresh(cached):  # another thread refreshed it while this one waited
                return cached.value
            started = self._clock()
            snapshot = self._read(lambda: self._client.collection(self.collection).document(name).get())
            value: TemplateDocument | TemplateError | None = None
            if snapshot.exists:
                try:
                    value = parse_template_document(name, snapshot.to_dict() or {}, self.origin)
                except TemplateError as error:
                    value = error
            self._documents[name] = _Cached(value, started)
            return value

    def _partial_set(self) -> PartialSet:
        cached = self._partials
        if self._fresh(cached):
            return cached.value
        with self._refresh:
            cached = self._partials
            if self._fresh(cached):
                return cached.value
            started = self._clock()
            query = self._client.collection(self.collection).where(filter=FieldFilter("partial", "==", True))
            snapshots = self._read(lambda: list(query.stream()))
            partials = []
            for snapshot in snapshots:
                try:
                    partials.append(parse_template_document(snapshot.id, snapshot.to_dict() or {}, self.origin))
                except TemplateError:
                    continue  # a template calling it is told the partial has no such field
            self._partials = _Cached(PartialSet(partials), started)
            return self._partials.value

    def _read(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except _PERMANENT as error:
            raise TemplateError(
                f"reading {self.origin} failed: {type(error).__name__} ({error.message}); check the collection "
                "and that the function's service account may read it"
            ) from None


# Keyed by the client itself (identity), which the store keeps alive: ids of dead clients get reused.
_stores: dict[tuple[firestore.Client, str, float], TemplateStore] = {}
_stores_lock = threading.Lock()


def store_for(client: firestore.Client, collection: str, max_age_seconds: float) -> TemplateStore:
    """One store per client and collection for the life of the instance: the cache outlives requests."""
    key = (client, collection, max_age_seconds)
    with _stores_lock:
        if key not in _stores:
            _stores[key] = TemplateStore(client, collection, max_age_seconds)
        return _stores[key]
