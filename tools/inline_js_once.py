"""A Sphinx extension: emit each inline <script> of a page once.

Sphinx 7.4 emits twice the inline scripts that extensions register after the builder starts
(once with filename None, once with ''; see StandaloneHTMLBuilder.prepare_writing).
sphinx-thebe's script declares its names with ``const``, so the second copy throws
"Identifier 'THEBE_JS_URL' has already been declared" on every page (the browser test
counts every JavaScript error). Loaded from _config.yml: ``local_extensions``.
"""


def drop_repeated_inline_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", drop_repeated_inline_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
