"""Drop repeated <script> entries from every page.

sphinx-thebe, as Jupyter Book 1.x loads it, registers its inline configuration script twice, so every
page declares `const THEBE_JS_URL` twice and the browser logs a SyntaxError. Identical scripts are
identical in effect, so keeping the first of each is safe.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (str(getattr(script, "filename", None) or ""), tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
