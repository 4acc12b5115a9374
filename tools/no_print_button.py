"""A Sphinx extension: the page's download menu offers the notebook and its source, not ".pdf".

sphinx-book-theme's ".pdf" entry only calls ``window.print()``: it builds no PDF. The book
has no PDF edition, so the entry goes. Loaded from _config.yml: ``local_extensions``.
"""

PRINT_BUTTON = "download-pdf-button"


def drop_print_button(app, pagename, templatename, context, doctree):
    for group in context.get("header_buttons", []):
        if "buttons" in group:
            group["buttons"] = [b for b in group["buttons"] if b.get("label") != PRINT_BUTTON]


def setup(app):
    # after sphinx-book-theme adds its source buttons (priority 501)
    app.connect("html-page-context", drop_print_button, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
