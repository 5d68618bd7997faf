"""The publish path: one repository setting and its copies, the GitHub Actions workflows, the book's own environment.

- saae_lib.settings.REPOSITORY is the one place the repository's address is set; _config.yml, pyproject.toml, the
  chapters' Colab install cells and pretrained.fetch's default address must agree with it, and
  scripts/sync_repository.py must bring them all along when it changes.
- .github/workflows passes actionlint, and release.yml refuses a tag other than v + saae_lib.__version__.
- make book installs the book extra of pyproject.toml, and only that.

Without actionlint or shellcheck the workflow checks are skipped, unless CI is set: then they fail.
"""

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import saae_lib
from saae_lib import pretrained, settings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the tomli package (the test extra installs it)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
# What sync_repository.py reads and writes: copied into a temporary tree to change the setting there.
SYNCED_TREE = ["saae_lib/__init__.py", "saae_lib/settings.py", "scripts/sync_repository.py",
               "scripts/package_constants.py", "_config.yml", "pyproject.toml",
               *[str(p.relative_to(ROOT)) for p in NOTEBOOKS]]


def _missing(reason: str):
    """Skip a test for a missing tool, but fail in CI, where everything must be installed."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def run_script(root: Path, name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(root / "scripts" / name), *args], cwd=root, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def install_lines(notebook: Path) -> list[str]:
    """The %pip install lines of the chapter's Colab cell (the first code cell that checks for google.colab)."""
    cells = [c for c in json.loads(notebook.read_text())["cells"]
             if c["cell_type"] == "code" and "google.colab" in "".join(c["source"])]
    return [line for line in cells[0]["source"] if "%pip install" in line] if cells else []


def workflow(name: str) -> dict:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads the key `on` as true
    return document


# -- one repository setting --------------------------------------------------------------------------------------
def test_every_copy_of_the_repository_agrees_with_the_setting():
    repository, version = settings.REPOSITORY, saae_lib.__version__
    assert yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"] == repository
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"] == repository
    for notebook in NOTEBOOKS:
        assert install_lines(notebook) == [f'    %pip install -q "git+{repository}@v{version}"\n'], notebook.name
    slug = repository.removeprefix("https://github.com/")
    assert pretrained.default_base_url() == f"https://raw.githubusercontent.com/{slug}/v{version}/pretrained"
    result = run_script(ROOT, "sync_repository.py", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_scripts_read_the_library_s_own_constants():
    """The publishing scripts read __version__ and REPOSITORY as literals (no torch): the values the library has."""
    code = "import package_constants as c; print(c.version()); print(c.repository())"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "scripts", capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.splitlines() == [saae_lib.__version__, settings.REPOSITORY]


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of what sync_repository.py reads and writes, to change the setting in."""
    for name in SYNCED_TREE:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def set_repository(tree: Path, repository: str) -> None:
    path = tree / "saae_lib" / "settings.py"
    text, count = re.subn(r'(?m)^REPOSITORY = "[^"]*"$', f'REPOSITORY = "{repository}"', path.read_text())
    assert count == 1
    path.write_text(text)


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_changing_the_setting_and_syncing_is_the_whole_change(tree):
    old, new = settings.REPOSITORY, "https://github.com/someone-else/aae-fork"
    version = saae_lib.__version__
    before = {name: (tree / name).read_text() for name in SYNCED_TREE}
    set_repository(tree, new)

    check = run_script(tree, "sync_repository.py", "--check")
    copies = ["_config.yml", "pyproject.toml", *[str(p.relative_to(ROOT)) for p in NOTEBOOKS]]
    assert check.returncode == 1
    assert check.stdout.splitlines() == [f"out of date: {name}" for name in sorted(copies, key=copies.index)]
    assert check.stderr.strip() == "run: python scripts/sync_repository.py"
    assert all((tree / name).read_text() == before[name] for name in copies)  # --check writes nothing

    sync = run_script(tree, "sync_repository.py")
    assert sync.returncode == 0, sync.stderr
    assert yaml.safe_load((tree / "_config.yml").read_text())["repository"]["url"] == new
    assert tomllib.loads((tree / "pyproject.toml").read_text())["project"]["urls"]["Repository"] == new
    for name in copies:
        after = (tree / name).read_text()
        assert old not in after, f"{name} still names {old}"
        # One line of each file, and nothing else (a notebook's outputs and layout included).
        assert len(changed_lines(before[name], after)) == 2, f"{name}: {changed_lines(before[name], after)}"
        if name.endswith(".ipynb"):
            assert install_lines(tree / name) == [f'    %pip install -q "git+{new}@v{version}"\n']
    assert run_script(tree, "sync_repository.py", "--check").returncode == 0


def test_sync_refuses_a_repository_that_is_not_a_github_one(tree):
    set_repository(tree, "https://gitlab.com/someone/aae-book")
    before = {name: (tree / name).read_text() for name in SYNCED_TREE}
    result = run_script(tree, "sync_repository.py")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "https://github.com/OWNER/NAME" in result.stderr
    assert "saae_lib/settings.py" in result.stderr
    assert {name: (tree / name).read_text() for name in SYNCED_TREE} == before
    with pytest.raises(pretrained.PretrainedError, match="pass base_url") as error:
        pretrained.default_base_url("https://gitlab.com/someone/aae-book")
    assert "\n" not in str(error.value)


def test_sync_refuses_a_chapter_whose_install_line_is_gone(tree):
    notebook = tree / NOTEBOOKS[0].relative_to(ROOT)
    text = notebook.read_text()
    notebook.write_text(text.replace("%pip install -q", "%pip install"))
    result = run_script(tree, "sync_repository.py", "--check")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and NOTEBOOKS[0].name in result.stderr
    assert "restore it" in result.stderr


# -- the workflows -----------------------------------------------------------------------------------------------
def actionlint() -> str:
    """actionlint from this Python's environment (the test extra), else from the PATH."""
    here = Path(sys.executable).parent / "actionlint"
    found = str(here) if here.exists() else shutil.which("actionlint")
    if not found:
        _missing("actionlint is not installed (it comes with the test extra: pip install -e '.[test]')")
    return found


def lint(files: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint(), "-no-color", "-oneline", *map(str, files)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_shellcheck_is_there_for_actionlint():
    """actionlint checks the run: scripts only when ShellCheck is on the PATH (make test installs it as root)."""
    if not shutil.which("shellcheck"):
        _missing("shellcheck is not installed (apt-get install shellcheck): actionlint would skip the run: scripts")


def test_workflows_pass_actionlint():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["book.yml", "release.yml"]
    result = lint(files, ROOT)
    assert result.returncode == 0 and result.stdout == "", f"actionlint findings:\n{result.stdout}{result.stderr}"


def test_actionlint_reports_a_broken_workflow(tmp_path):
    """The check above can fail: a workflow with a misspelt input and an unquoted variable is reported, and fails."""
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    broken = tmp_path / ".github" / "workflows" / "release.yml"
    text = (WORKFLOWS / "release.yml").read_text()
    text = text.replace("python-version:", "python_version:").replace('"$GITHUB_REF_NAME"', "$GITHUB_REF_NAME", 1)
    broken.write_text(text)
    result = lint([broken], tmp_path)
    assert result.returncode == 1
    assert 'input "python_version" is not defined' in result.stdout
    if shutil.which("shellcheck"):
        assert "SC2086" in result.stdout


def release_check_step() -> tuple[int, dict, list[dict]]:
    steps = workflow("release.yml")["jobs"]["release"]["steps"]
    checks = [i for i, step in enumerate(steps) if "check_release_tag.py" in step.get("run", "")]
    assert len(checks) == 1, "release.yml must run scripts/check_release_tag.py once"
    return checks[0], steps[checks[0]], steps


def test_release_runs_on_version_tags_and_checks_the_tag_first():
    release = workflow("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    index, _, steps = release_check_step()
    later = [i for i, step in enumerate(steps)
             if any(word in step.get("run", "") for word in ("make book", "python -m build", "gh release"))]
    assert len(later) == 3 and min(later) > index, "the tag must be checked before anything is built or released"


def run_release_check(tag: str) -> subprocess.CompletedProcess:
    """The check step of release.yml, run as the workflow runs it (bash -e, `python` on the PATH), with GitHub's
    GITHUB_REF_NAME set to `tag`."""
    _, step, _ = release_check_step()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GITHUB_REF_NAME": tag, "PATH": path})


@pytest.mark.parametrize("tag", ["v9.9.9", saae_lib.__version__, f"v{saae_lib.__version__}.1", ""])
def test_release_tag_check_rejects_a_wrong_tag(tag):
    result = run_release_check(tag)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and f"v{saae_lib.__version__}" in lines[0], result.stderr
    if tag:
        assert f"tag {tag} is not v{saae_lib.__version__}" in lines[0]


def test_release_tag_check_accepts_the_version_tag():
    result = run_release_check(f"v{saae_lib.__version__}")
    assert result.returncode == 0, result.stderr


def test_book_workflow_tests_builds_and_deploys_only_main():
    book = workflow("book.yml")
    assert set(book["on"]) == {"push", "pull_request"}
    test, deploy = book["jobs"]["test"], book["jobs"]["deploy"]
    runs = [step.get("run", "") for step in test["steps"]]
    assert runs.index("make test") < runs.index("make book")
    on_main = "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    upload = [step for step in test["steps"] if step.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert len(upload) == 1 and upload[0]["if"] == on_main and upload[0]["with"]["path"] == "_build/html"
    assert deploy["if"] == on_main and deploy["needs"] == "test"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert book["permissions"] == {"contents": "read"}


# -- make book's environment -------------------------------------------------------------------------------------
def test_make_book_installs_the_book_extra():
    """pip cannot install an extra without the library (and torch), so the Makefile names it: the same one."""
    makefile = (ROOT / "Makefile").read_text()
    named = re.findall(r"(?m)^BOOK_REQUIREMENT := (.+)$", makefile)
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["book"]
    assert named == extra
    assert re.search(r"(?m)^book: \$\(BOOK_STAMP\) ", makefile) and "PYTHON=$(BOOK_PY) bash scripts/build_book.sh" in \
        makefile
