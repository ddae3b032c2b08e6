"""infra/source.py: the archive holds exactly the shipped files and is named by their content."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pulumi
import pytest

from infra.source import SourceError, collect_source
from tests.infra.conftest import REPO_ROOT

FUNCTIONS = REPO_ROOT / "functions"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of functions/ as it is now, without caches (a dev machine may have them)."""
    copy = tmp_path / "functions"
    shutil.copytree(FUNCTIONS, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    return copy


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_real_functions_folder_ships_its_code(tree: Path) -> None:
    files = collect_source(FUNCTIONS).files
    assert {"main.py", "requirements.txt"} <= set(files)
    package = {p.relative_to(FUNCTIONS).as_posix() for p in (FUNCTIONS / "mailer").rglob("*.py") if "__pycache__" not in p.parts}
    assert package and package <= set(files)
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc") or f.startswith("tests/")]


def test_building_twice_gives_the_same_name(tree: Path) -> None:
    assert collect_source(tree).object_name == collect_source(tree).object_name


def test_the_name_ignores_location_timestamps_and_permissions(tree: Path, tmp_path: Path) -> None:
    before = collect_source(tree)
    elsewhere = tmp_path / "elsewhere" / "functions"
    shutil.copytree(tree, elsewhere)
    os.utime(elsewhere / "main.py", (1_000_000, 1_000_000))
    (elsewhere / "main.py").chmod(0o600)
    after = collect_source(elsewhere)
    assert (after.files, after.object_name) == (before.files, before.object_name)


def test_editing_a_python_file_changes_the_name(tree: Path) -> None:
    before = collect_source(tree).object_name
    module = tree / "mailer" / "__init__.py"
    module.write_text(module.read_text() + "\n# changed\n")
    assert collect_source(tree).object_name != before


def test_editing_requirements_changes_the_name(tree: Path) -> None:
    before = collect_source(tree).object_name
    (tree / "requirements.txt").write_text((tree / "requirements.txt").read_text() + "six==1.17.0\n")
    assert collect_source(tree).object_name != before


def test_adding_or_renaming_a_module_changes_the_name(tree: Path) -> None:
    first = collect_source(tree)
    write(tree / "mailer" / "extra.py", "VALUE = 1\n")
    second = collect_source(tree)
    assert "mailer/extra.py" in second.files and second.object_name != first.object_name
    # Same content, same sort position, new path: only the path part of the digest sees this.
    (tree / "mailer" / "extra.py").rename(tree / "mailer" / "extra_renamed.py")
    third = collect_source(tree)
    assert third.object_name not in (first.object_name, second.object_name)


def test_other_source_files_ship_too(tree: Path) -> None:
    before = collect_source(tree).object_name
    write(tree / "mailer" / "templates" / "welcome.html", "<p>Hi {{ name }}</p>\n")
    bundle = collect_source(tree)
    assert "mailer/templates/welcome.html" in bundle.files and bundle.object_name != before


def test_caches_tests_and_virtualenvs_change_nothing(tree: Path) -> None:
    before = collect_source(tree)
    write(tree / "__pycache__" / "main.cpython-312.pyc", "bytecode")
    write(tree / "mailer" / "__pycache__" / "notes.txt", "not a .pyc, still a cache folder")
    write(tree / "mailer" / "__pycache__" / "handler.cpython-311.pyc", "bytecode")
    write(tree / "mailer" / "stale.pyc", "bytecode")
    write(tree / "tests" / "test_handler.py", "def test_x(): pass\n")
    write(tree / "mailer" / "test_inline.py", "def test_y(): pass\n")
    write(tree / "mailer" / "compose_test.py", "def test_z(): pass\n")
    write(tree / "conftest.py", "")
    write(tree / ".venv" / "lib" / "site.py", "")
    write(tree / "env" / "pyvenv.cfg", "home = /usr/bin\n")
    write(tree / "env" / "lib" / "thing.py", "")
    write(tree / ".pytest_cache" / "v" / "cache", "")
    write(tree / "node_modules" / "x" / "index.js", "")
    write(tree / "mailer.egg-info" / "PKG-INFO", "")
    write(tree / ".DS_Store", "")
    write(tree / "main.py~", "backup")
    after = collect_source(tree)
    assert (after.files, after.object_name) == (before.files, before.object_name)


def test_the_archive_holds_exactly_the_listed_files(tree: Path) -> None:
    bundle = collect_source(tree)
    archive = bundle.archive()
    assert isinstance(archive, pulumi.AssetArchive)
    assert sorted(archive.assets) == list(bundle.files)
    for name, asset in archive.assets.items():
        assert isinstance(asset, pulumi.FileAsset) and Path(asset.path) == tree / name


@pytest.mark.parametrize("required", ["main.py", "requirements.txt"])
def test_a_missing_required_file_is_refused(tree: Path, required: str) -> None:
    (tree / required).unlink()
    with pytest.raises(SourceError, match=f"has no {required}"):
        collect_source(tree)


def test_symlinks_are_refused(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("SECRET = 1\n")
    (tree / "mailer" / "linked.py").symlink_to(outside)
    with pytest.raises(SourceError, match="linked.py is a symlink"):
        collect_source(tree)


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        collect_source(tmp_path / "nope")
