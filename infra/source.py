"""Packages functions/ for Cloud Functions: an explicit file list, named by a hash of its contents.

The rule for what ships (walked recursively, in sorted order):
- every regular file under functions/ is included, except
- directories: hidden ones (``.venv``, ``.pytest_cache``, ``.git``...), ``__pycache__``, ``tests``/``test``,
  ``node_modules``, ``*.egg-info`` and any directory holding a ``pyvenv.cfg`` (a virtualenv by any name);
- files: hidden ones, compiled Python (``*.pyc``, ``*.pyo``, ``*.pyd``), editor backups (``*~``) and test
  modules (``test_*.py``, ``*_test.py``, ``conftest.py``).
``main.py`` and ``requirements.txt`` must be present. Symlinks are refused: they could pull in files
from outside the folder, and the archive must hold exactly what the tree holds.

The object name is ``source-<digest>.zip`` where the digest covers each shipped file's relative path
and bytes, so a code change gives a new name (and a new function revision) and an unchanged tree gives
the same name (and no diff), wherever the checkout lives and whatever the file timestamps are.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pulumi

REQUIRED_FILES = ("main.py", "requirements.txt")
_SKIPPED_DIRS = frozenset({"__pycache__", "tests", "test", "node_modules"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo", ".pyd", "~")
_TEST_MODULE_NAMES = frozenset({"conftest.py"})
_DIGEST_CHARS = 32


class SourceError(pulumi.RunError, ValueError):
    """The function source folder cannot be packaged as it is."""


@dataclass(frozen=True)
class SourceBundle:
    """The files that make up one deployable version of the function, and their content digest."""

    root: Path
    files: tuple[str, ...]
    digest: str

    @property
    def object_name(self) -> str:
        return f"source-{self.digest[:_DIGEST_CHARS]}.zip"

    def archive(self) -> pulumi.AssetArchive:
        """The zip Pulumi uploads: exactly the listed files, at their paths relative to the root."""
        return pulumi.AssetArchive({name: pulumi.FileAsset(str(self.root / name)) for name in self.files})


def _skip_dir(path: Path) -> bool:
    name = path.name
    return (
        name.startswith(".")
        or name in _SKIPPED_DIRS
        or name.endswith(".egg-info")
        or (path / "pyvenv.cfg").exists()
    )


def _skip_file(name: str) -> bool:
    return (
        name.startswith(".")
        or name.endswith(_SKIPPED_SUFFIXES)
        or name in _TEST_MODULE_NAMES
        or (name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py")))
    )


def list_source_files(root: Path) -> tuple[str, ...]:
    """Relative POSIX paths of the files that ship, sorted; SourceError if the folder is unusable."""
    if not root.is_dir():
        raise SourceError(f"function source folder {root} does not exist")
    shipped: list[str] = []
    for directory, dirnames, filenames in os.walk(root):
        here = Path(directory)
        # Prune in place so os.walk never descends into skipped folders.
        dirnames[:] = sorted(d for d in dirnames if not _skip_dir(here / d))
        kept_files = [name for name in filenames if not _skip_file(name)]
        for name in sorted(dirnames + kept_files):
            if (here / name).is_symlink():
                raise SourceError(f"{here / name} is a symlink; the function archive takes regular files only, copy it in instead")
        shipped.extend((here / name).relative_to(root).as_posix() for name in kept_files)
    for required in REQUIRED_FILES:
        if required not in shipped:
            raise SourceError(f"function source folder {root} has no {required}; Cloud Functions needs it to build the function")
    return tuple(sorted(shipped))


def digest_files(root: Path, files: tuple[str, ...]) -> str:
    """SHA-256 over (path, content hash) pairs in order: unambiguous, independent of mtimes and modes."""
    total = hashlib.sha256()
    for name in files:
        content = hashlib.sha256((root / name).read_bytes()).hexdigest()
        total.update(f"{name}\0{content}\n".encode())
    return total.hexdigest()


def collect_source(root: Path) -> SourceBundle:
    """The bundle for the function source under root (normally the repository's functions/ folder)."""
    files = list_source_files(root)
    return SourceBundle(root=root, files=files, digest=digest_files(root, files))
