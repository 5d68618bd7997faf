"""The library's own code, shown in the chapters: `show(models.Autoencoder.training_step, ...)`.

A chapter never copies library code into its text: it shows the current source of the real function or class, so
what the reader sees is what runs. The stored outputs of these listing cells are refreshed from the library by
`python scripts/refresh_listings.py` (no training needed), and a test checks that they equal the current source.
"""

import inspect
import textwrap
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def where(obj) -> str:
    """'saae_lib/models.py: Autoencoder.training_step' (of a decorated function, the file it is defined in)."""
    obj = inspect.unwrap(obj)  # @contextmanager's wrapper lives in contextlib.py; its __wrapped__ in the library
    path = Path(inspect.getsourcefile(obj)).resolve()
    try:
        path = path.relative_to(PACKAGE_ROOT)
    except ValueError:
        pass
    return f"{path.as_posix()}: {obj.__qualname__}"


def listing(obj) -> str:
    """The source of a library function, method or class, dedented, under a line that says where it lives."""
    return f"# {where(obj)}\n{textwrap.dedent(inspect.getsource(obj))}"


def show(*objects) -> None:
    """Print the listings of `objects`, one after another."""
    print("\n".join(listing(obj) for obj in objects), end="")
