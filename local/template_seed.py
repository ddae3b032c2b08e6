"""Templates for the local run: the project's templates/ folder, loaded by infra's own loader (the one the
deployment uses) and written into the emulator's templates collection.

Optional on purpose: until infra.templates and templates/ exist, the demo runs without templates.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.cloud import firestore

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = REPO_ROOT / "templates"


def _document_of(template: Any) -> Mapping[str, Any] | None:
    if isinstance(template, Mapping):
        return template
    for name in ("to_document", "as_document", "document", "fields"):
        value = getattr(template, name, None)
        value = value() if callable(value) else value
        if isinstance(value, Mapping):
            return value
    return None


def load_template_documents(folder: Path = TEMPLATES_DIR) -> dict[str, Mapping[str, Any]] | None:
    """{template name: Firestore document} from infra.templates.load_templates(folder), or None when
    templates are not available in this checkout."""
    try:
        loader = importlib.import_module("infra.templates").load_templates
    except (ImportError, AttributeError):
        return None
    if not folder.is_dir():
        return None
    loaded = loader(folder)
    items = loaded.items() if isinstance(loaded, Mapping) else ((getattr(t, "name", None), t) for t in loaded)
    documents: dict[str, Mapping[str, Any]] = {}
    for name, template in items:
        document = _document_of(template)
        if not isinstance(name, str) or document is None:
            raise TypeError(f"infra.templates.load_templates returned an entry local/template_seed.py cannot store ({type(template).__name__})")
        documents[name] = document
    return documents


def seed_templates(client: firestore.Client, collection: str, documents: Mapping[str, Mapping[str, Any]]) -> None:
    batch = client.batch()
    for name, document in documents.items():
        batch.set(client.collection(collection).document(name), dict(document))
    batch.commit()
