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


def load_template_documents(folder: Path = TEMPLATES_DIR) -> dict[str, Mapping[str, Any]] | None:
    """{template name: Firestore document} from infra.templates.load_templates(folder), or None when
    templates are not available in this checkout."""
    try:
        loader = importlib.import_module("infra.templates").load_templates
    except (ImportError, AttributeError):
        return None
    if not folder.is_dir():
        return None
    return dict(loader(folder))


def seed_templates(client: firestore.Client, collection: str, documents: Mapping[str, Mapping[str, Any]]) -> None:
    batch = client.batch()
    for name, document in documents.items():
        batch.set(client.collection(collection).document(name), dict(document))
    batch.commit()
