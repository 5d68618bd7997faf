"""The library's publishing constants, read without importing it: __version__ (saae_lib/__init__.py) and REPOSITORY
(saae_lib/settings.py).

The publishing scripts (sync_repository.py, check_release_tag.py) run where torch is not installed (the release
job); setuptools reads __version__ from the same file in the same way (`attr:` in pyproject.toml).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_INIT = ROOT / "saae_lib" / "__init__.py"
SETTINGS = ROOT / "saae_lib" / "settings.py"


def package_constants(path: Path) -> dict:
    """Each `NAME = literal` at the top level of `path`, as {NAME: value}."""
    constants = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:  # not a literal: not one of ours
                continue
    return constants


def version() -> str | None:
    return package_constants(PACKAGE_INIT).get("__version__")


def repository() -> str | None:
    return package_constants(SETTINGS).get("REPOSITORY")
