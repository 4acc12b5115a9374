"""A Sphinx extension: the theme's icons come from its stylesheet's web fonts, without its 1.5 MB script.

pydata-sphinx-theme loads Font Awesome twice on every page: its stylesheet declares the icon
web fonts, which draw every icon the book's pages use, and ``fontawesome.js`` (1.5 MB, three
quarters of a page's weight) swaps each icon for an SVG copy. The template loads the script
by a fixed path, so once the build has finished that file is replaced by a one-line note;
the icons still show (the browser test takes a screenshot of every page). Loaded from
_config.yml: ``local_extensions``.
"""

from pathlib import Path

SCRIPT = Path("_static") / "scripts" / "fontawesome.js"
NOTE = "/* sgdlab: the icons are drawn by the theme's Font Awesome web fonts (tools/icons_from_css.py) */\n"


def drop_icon_script(app, exception):
    script = Path(app.outdir) / SCRIPT
    if exception is None and app.builder.format == "html" and script.is_file():
        script.write_text(NOTE)


def setup(app):
    app.connect("build-finished", drop_icon_script)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
