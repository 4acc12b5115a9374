"""A Sphinx extension: the page's header buttons, as the book wants them.

- The download menu offers the notebook and its source, not ".pdf": sphinx-book-theme's
  ".pdf" entry only calls ``window.print()``, and the book has no PDF edition.
- The repository button's icon comes from Font Awesome's solid set, which every page loads
  for its other icons, instead of the brands set (a 118 kB font for this one icon).

Loaded from _config.yml: ``local_extensions``.
"""

PRINT_BUTTON = "download-pdf-button"
BRAND_ICONS = "fab "               # sphinx-book-theme's repository icons: "fab fa-github", ...
REPOSITORY_ICON = "fas fa-code-branch"


def tidy_header_buttons(app, pagename, templatename, context, doctree):
    for button in context.get("header_buttons", []):
        if "buttons" in button:
            button["buttons"] = [b for b in button["buttons"] if b.get("label") != PRINT_BUTTON]
            for inner in button["buttons"]:
                if inner.get("icon", "").startswith(BRAND_ICONS):
                    inner["icon"] = REPOSITORY_ICON
        elif button.get("icon", "").startswith(BRAND_ICONS):
            button["icon"] = REPOSITORY_ICON


def setup(app):
    # after sphinx-book-theme adds its source buttons (priority 501)
    app.connect("html-page-context", tidy_header_buttons, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
