"""Templates as code: `templates/<Name>.yaml`, reviewed in pull requests, deployed by each stack as the
documents of its templates collection (only when the stack sets mailer:templatesCollection).

One file per template; the file name without `.yaml` is the template's name (the document id a mail
document names in `template.name`): letters, digits, `_`, `-` and `.`, starting with a letter or digit.

    description: Sign-in code            # optional, for reviewers; not deployed
    subject: "Your sign-in code is {{code}}"
    text: |                              # block scalars keep the text exactly as written
      Your code is {{code}}.
    html: |
      <p>Your code is <strong>{{code}}</strong>.</p>
    amp: ...                             # optional
    attachments: [...]                   # optional, as in message.attachments (inline content only)
    partial: true                        # optional: a partial, called from templates as {{> Name}}
    data:                                # sample data: the tests render the template with it; not
      code: "123456"                     # deployed. Required for templates, optional for partials.

`load_templates(folder)` returns `{name: document}`, the exact fields each document gets; local tooling
seeds the emulator with the same. This module never imports the function package.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pulumi
import pulumi_gcp as gcp
import yaml

SUFFIX = ".yaml"
TEXT_KEYS = ("subject", "text", "html", "amp")
DEPLOYED_KEYS = (*TEXT_KEYS, "attachments", "partial")
FILE_KEYS = (*DEPLOYED_KEYS, "description", "data")
ATTACHMENT_KEYS = ("filename", "content", "encoding", "contentType", "cid", "contentDisposition")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# Firestore's document limit is 1 MiB; leave room for its own overhead.
MAX_DOCUMENT_BYTES = 1_000_000


class TemplateFileError(pulumi.RunError, ValueError):
    """A template file that cannot be deployed; one line naming the file and the key."""


@dataclass(frozen=True)
class TemplateFile:
    name: str
    path: Path
    document: dict[str, Any]  # the fields the Firestore document gets
    sample_data: dict[str, Any]  # `data`, for tests and previews
    description: str


def load_template_files(folder: Path) -> dict[str, TemplateFile]:
    """Every `*.yaml` in `folder`, checked, by template name (sorted). Other files are ignored."""
    if not folder.is_dir():
        raise TemplateFileError(f"{folder}: the templates folder does not exist")
    files: dict[str, TemplateFile] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".yml":
            raise TemplateFileError(f"{path}: name template files *.yaml")
        if path.suffix == SUFFIX and path.is_file():
            template = _load_file(path)
            files[template.name] = template
    return files


def load_templates(folder: Path) -> dict[str, dict[str, Any]]:
    """{template name: the Firestore document's fields} for every template file in `folder`."""
    return {name: template.document for name, template in load_template_files(folder).items()}


def _load_file(path: Path) -> TemplateFile:
    name = path.stem
    if not NAME_PATTERN.fullmatch(name) or re.fullmatch(r"__.*__", name):
        raise TemplateFileError(
            f"{path}: {name!r} is not a usable template name; use letters, digits, '_', '-' and '.', starting with a letter or digit"
        )
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        if "unhashable key" in problem:  # YAML read `{{name}}` as a map inside a map
            problem += "; quote a value that starts with {{, or use a block scalar (|)"
        raise TemplateFileError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(content, dict):
        raise TemplateFileError(f"{path}: expected a map of keys such as subject, text, html and data")

    def fail(key: str, reason: str) -> TemplateFileError:
        return TemplateFileError(f"{path}: {key}: {reason}")

    for key in content:
        if key not in FILE_KEYS:
            raise fail(str(key), f"unknown key; a template file has {', '.join(FILE_KEYS)}")
    document: dict[str, Any] = {}
    for key in TEXT_KEYS:
        value = content.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise fail(key, f"expected text, got {type(value).__name__}; quote a value that starts with {{{{, or use a block scalar (|)")
        document[key] = value
    partial = content.get("partial", False)
    if not isinstance(partial, bool):
        raise fail("partial", "expected true or false")
    if partial:
        document["partial"] = True
    if content.get("attachments") is not None:
        document["attachments"] = _attachments(content["attachments"], fail)
    if not any(key in document for key in (*TEXT_KEYS, "attachments")):
        raise fail("subject", "the template has no subject, text, html, amp or attachments")
    data = content.get("data")
    if data is None and not partial:
        raise fail("data", "missing; give sample data, so the tests render the template before a stack gets it")
    if data is not None and not isinstance(data, dict):
        raise fail("data", "expected a map of the values the template uses")
    description = content.get("description") or ""
    if not isinstance(description, str):
        raise fail("description", "expected text")
    if len(json.dumps(firestore_fields(document)).encode()) > MAX_DOCUMENT_BYTES:
        raise fail("subject", f"the document would be over {MAX_DOCUMENT_BYTES} bytes, near Firestore's 1 MiB limit")
    return TemplateFile(name=name, path=path, document=document, sample_data=data or {}, description=description)


def _attachments(value: Any, fail: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise fail("attachments", "expected a list of attachments")
    for index, item in enumerate(value):
        where = f"attachments[{index}]"
        if not isinstance(item, dict):
            raise fail(where, "expected a map with filename and content")
        for key, field in item.items():
            if key in ("path", "href"):
                raise fail(f"{where}.{key}", "attachments carry inline content; path and href are refused by the function")
            if key not in ATTACHMENT_KEYS:
                raise fail(f"{where}.{key}", f"unknown key; an attachment has {', '.join(ATTACHMENT_KEYS)}")
            if not isinstance(field, str):
                raise fail(f"{where}.{key}", "expected text")
    return value


def firestore_value(value: Any) -> dict[str, Any]:
    """One value as Firestore's REST JSON (google.firestore.v1.Value in proto3 JSON form)."""
    if value is None:
        return {"nullValue": None}
    if isinstance(value, bool):
        return {"booleanValue": value}
    if isinstance(value, int):
        return {"integerValue": str(value)}  # int64 travels as a string in proto3 JSON
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
        return {"timestampValue": moment.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [firestore_value(item) for item in value]}}
    if isinstance(value, Mapping):
        return {"mapValue": {"fields": firestore_fields(value)}}
    raise TypeError(f"cannot store a {type(value).__name__} in a Firestore document")


def firestore_fields(document: Mapping[str, Any]) -> dict[str, Any]:
    """A document's fields as Firestore's REST JSON, what gcp.firestore.Document's `fields` takes."""
    return {str(key): firestore_value(value) for key, value in document.items()}


def document_json(document: Mapping[str, Any]) -> str:
    """The `fields` text of a template's document. Keys are sorted: reordering the keys of a file (or of
    an attachment) changes nothing, so only a real change shows as a diff."""
    return json.dumps(firestore_fields(document), sort_keys=True, ensure_ascii=False)


def template_documents(
    name: str,
    templates: Mapping[str, Mapping[str, Any]],
    *,
    project: str,
    database: str,
    collection: str,
    opts: Optional[pulumi.ResourceOptions] = None,
) -> dict[str, gcp.firestore.Document]:
    """One document per template in `collection`. A template removed from the folder is deleted from
    the collection; documents the folder never had (made in the console) are left alone."""
    return {
        template_name: gcp.firestore.Document(
            f"{name}-template-{template_name}",
            project=project,
            database=database,
            collection=collection,
            document_id=template_name,
            fields=document_json(document),
            opts=opts,
        )
        for template_name, document in sorted(templates.items())
    }
