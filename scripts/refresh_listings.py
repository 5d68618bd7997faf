"""Refresh the stored outputs of the chapters' listing and exercise cells from the library, without training.

    python scripts/refresh_listings.py          # rewrite those cells' outputs where they changed
    python scripts/refresh_listings.py --check  # exit 1 (naming the cells) if a stored output is out of date

A listing cell is a code cell whose statements are all `show(...)` calls (saae_lib.listings.show); an exercise
cell defines functions and calls checkers of saae_lib.exercises (`passed = exercises.check_...(...)`), nothing
else (comments aside). Their outputs depend on the library's source alone, so reformatting the library never
needs a full run of the chapters to bring them up to date.
"""

import ast
import contextlib
import io
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


def _is_call(statement, accepts) -> bool:
    """`f(...)` or `name = f(...)` where accepts(f)."""
    return (isinstance(statement, (ast.Expr, ast.Assign)) and isinstance(statement.value, ast.Call)
            and accepts(statement.value.func))


def _is_show(func) -> bool:
    return getattr(func, "id", "") == "show"


def _is_checker(func) -> bool:
    return (isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "exercises"
            and func.attr.startswith("check_"))


def _statements(cell):
    if cell.cell_type != "code":
        return []
    try:
        return ast.parse(cell.source).body
    except SyntaxError:  # cells with IPython magics are never listings
        return []


def is_listing(cell) -> bool:
    statements = _statements(cell)
    return bool(statements) and all(_is_call(s, _is_show) for s in statements)


def is_exercise(cell) -> bool:
    statements = _statements(cell)
    return any(_is_call(s, _is_checker) for s in statements) and all(
        _is_call(s, _is_checker) or isinstance(s, ast.FunctionDef) for s in statements)


def imports_of(notebook) -> str:
    """The import statements of the notebook's code cells: all a listing cell needs to name library objects."""
    lines = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                continue
            lines += [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(lines)


def listing_output(cell, imports: str) -> str:
    namespace: dict = {}
    exec(imports, namespace)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(cell.source, namespace)
    return buffer.getvalue()


def stale_listings(path: Path, write: bool) -> list[str]:
    """The listing and exercise cells of one chapter whose stored output is out of date (rewritten if write)."""
    notebook = nbformat.read(path, as_version=4)
    imports = imports_of(notebook)
    stale = []
    for index, cell in enumerate(notebook.cells):
        if not (is_listing(cell) or is_exercise(cell)):
            continue
        wanted = listing_output(cell, imports)
        streams = [o for o in cell.outputs if o.output_type == "stream"]
        if len(cell.outputs) == 1 and len(streams) == 1 and streams[0].text == wanted:
            continue
        stale.append(f"{path.name}, cell {index}")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=wanted)]
    if write and stale:
        nbformat.write(notebook, path)
    return stale


def main(argv) -> int:
    check = "--check" in argv
    stale = [entry for path in NOTEBOOKS for entry in stale_listings(path, write=not check)]
    for entry in stale:
        print(f"{'out of date' if check else 'refreshed'}: {entry}")
    if check and stale:
        print("run: python scripts/refresh_listings.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
