"""Write the book's repository address (saae_lib.settings.REPOSITORY) into the files that repeat it.

    python scripts/sync_repository.py          # rewrite the copies that differ
    python scripts/sync_repository.py --check  # exit 1 (naming the files) if a copy is out of date

saae_lib/settings.py holds the address once, as REPOSITORY (the pin is saae_lib.__version__). The copies:
  _config.yml            repository.url (the book's repository and Colab buttons)
  pyproject.toml         [project.urls] Repository (the wheel's and sdist's metadata)
  notebooks/0*.ipynb     the Colab install cell: %pip install -q "git+{REPOSITORY}@v{__version__}"
Each is rewritten on its one line, nothing else: notebooks are loaded as JSON and written back in the layout they
are stored in (indent 1, UTF-8 as is), so the diff is that line and a notebook's outputs are never touched.
The default address of pretrained.fetch is derived from REPOSITORY at run time and needs no copy.
"""

import json
import re
import sys
from pathlib import Path

import package_constants  # beside this file
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the tomli package (the test extra installs it)
    import tomli as tomllib

ROOT = package_constants.ROOT
CONFIG = ROOT / "_config.yml"
PYPROJECT = ROOT / "pyproject.toml"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
GITHUB = re.compile(r"https://github\.com/[A-Za-z0-9-]+/[A-Za-z0-9._-]+")
# The install line of a chapter's Colab cell; group 2 is what this script writes.
INSTALL = re.compile(r'^(\s*%pip install -q ")(git\+[^"@]+@v[^"]+)(".*)$', re.S)


class SyncError(Exception):
    """A file this script cannot bring up to date by itself; the message says what to fix."""


def repository_and_version() -> tuple[str, str]:
    repository, version = package_constants.repository(), package_constants.version()
    settings = package_constants.SETTINGS.relative_to(ROOT)
    if not isinstance(repository, str) or not isinstance(version, str):
        raise SyncError(f"{settings} must assign REPOSITORY, and saae_lib/__init__.py __version__, as plain strings")
    # The Colab buttons and install cells only work for a GitHub repository, named without .git or a slash.
    if not GITHUB.fullmatch(repository) or repository.endswith(".git"):
        raise SyncError(f"REPOSITORY = {repository!r} in {settings} is not of the form https://github.com/OWNER/NAME "
                        "(no .git, no trailing slash): correct it")
    return repository, version


def synced_config(text: str, repository: str) -> str:
    """_config.yml with repository.url set, by rewriting that one line (PyYAML would drop the comments)."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "repository:"), None)
    if start is not None:
        for i in range(start + 1, len(lines)):
            if lines[i].strip() and not lines[i][0].isspace():
                break  # past the repository: block
            match = re.match(r"^(\s+url:\s*)\S*(.*)$", lines[i], re.S)
            if match:
                lines[i] = match[1] + repository + match[2]
                new = "".join(lines)
                if (yaml.safe_load(new).get("repository") or {}).get("url") == repository:
                    return new
                break
    raise SyncError(f"{CONFIG.name} has no 'repository:' block with a 'url:' line this script can rewrite: "
                    f"restore it (repository: / url: {repository})")


def synced_pyproject(text: str, repository: str) -> str:
    """pyproject.toml with [project.urls] Repository set, by rewriting that one line."""
    new, count = re.subn(r'(?m)^(Repository\s*=\s*")[^"]*(")', lambda m: m[1] + repository + m[2], text)
    if count == 1 and tomllib.loads(new)["project"].get("urls", {}).get("Repository") == repository:
        return new
    raise SyncError(f"{PYPROJECT.name} must have one line 'Repository = \"...\"' under [project.urls]: restore it")


def synced_notebook(text: str, path: Path, pinned: str) -> str:
    """A chapter with its Colab install line pinned to `pinned` (git+REPOSITORY@vVERSION)."""
    book = json.loads(text)
    cells = [c for c in book["cells"] if c["cell_type"] == "code" and "google.colab" in "".join(c["source"])]
    lines = [(cell, i) for cell in cells[:1] for i, line in enumerate(cell["source"]) if INSTALL.match(line)]
    if len(lines) != 1:
        raise SyncError(f"{path.relative_to(ROOT)}: its Colab cell (the first code cell that checks for google.colab) "
                        f"must have one line '%pip install -q \"{pinned}\"': restore it")
    cell, i = lines[0]
    line = INSTALL.sub(lambda m: m[1] + pinned + m[3], cell["source"][i])
    if line == cell["source"][i]:
        return text  # up to date: left byte for byte as it is
    cell["source"][i] = line
    return json.dumps(book, indent=1, ensure_ascii=False) + "\n"


def stale_files(write: bool) -> list[str]:
    """The files whose copy of the address (or pin) differs from saae_lib's; rewritten if `write`."""
    repository, version = repository_and_version()
    wanted = {CONFIG: lambda text: synced_config(text, repository),
              PYPROJECT: lambda text: synced_pyproject(text, repository)}
    for path in NOTEBOOKS:
        wanted[path] = lambda text, path=path: synced_notebook(text, path, f"git+{repository}@v{version}")
    stale = []
    for path, sync in wanted.items():
        text = path.read_text(encoding="utf-8")
        new = sync(text)
        if new != text:
            stale.append(str(path.relative_to(ROOT)))
            if write:
                path.write_text(new, encoding="utf-8")
    return stale


def main(argv) -> int:
    check = "--check" in argv
    try:
        stale = stale_files(write=not check)
    except SyncError as error:
        print(f"sync_repository: {error}", file=sys.stderr)
        return 1
    for name in stale:
        print(f"{'out of date' if check else 'rewritten'}: {name}")
    if check and stale:
        print("run: python scripts/sync_repository.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
