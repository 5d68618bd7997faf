"""Refuse to release a tag that is not v + saae_lib.__version__.

    python scripts/check_release_tag.py v0.2.0   # or with no argument: the tag in $GITHUB_REF_NAME (GitHub Actions)

Exit 0 when the tag names this version; else exit 1 with one line saying what to do. The chapters' install cells pin
git+REPOSITORY@v__version__, so a release under any other tag would install code other than the one it was built
from. Reads __version__ without importing the library (and torch), as setuptools does.
"""

import os
import sys

import package_constants


def main(argv) -> int:
    tag = argv[0] if argv else os.environ.get("GITHUB_REF_NAME", "")
    version = package_constants.version()
    where = package_constants.PACKAGE_INIT.relative_to(package_constants.ROOT)
    if not isinstance(version, str):
        print(f"check_release_tag: {where} assigns no __version__ string: restore it", file=sys.stderr)
        return 1
    if not tag:
        print("check_release_tag: no tag given: pass it (v" + version + ") or set GITHUB_REF_NAME", file=sys.stderr)
        return 1
    if tag != f"v{version}":
        print(f"check_release_tag: tag {tag} is not v{version}, the version in {where}: delete the tag, and tag a "
              "commit whose __version__ matches it", file=sys.stderr)
        return 1
    print(f"tag {tag} is saae_lib {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
