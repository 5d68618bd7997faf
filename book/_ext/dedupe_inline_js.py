"""Sphinx extension: drop duplicated <script> tags from every HTML page.

Sphinx 7 (which Jupyter Book 1.x requires) adds each inline script registered after the builder
started twice, because it stores its file name once as None and once as '' (fixed in Sphinx 8.2,
sphinx-doc/sphinx#13402). With sphinx-thebe this gives every page the browser error
"Identifier 'THEBE_JS_URL' has already been declared". This keeps the first copy of each script.
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        key = (
            getattr(js, "filename", js) or "",
            getattr(js, "priority", None),
            tuple(sorted(getattr(js, "attributes", {}).items())),
        )
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique  # in place: the page template reads this same list


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
