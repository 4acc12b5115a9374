"""A Sphinx extension for the API reference page: module docstrings keep their sections.

sgdlab's module docstrings divide themselves with underlined titles ("Conventions" over a line
of dashes), which read well in the source and in ``help()``. Inside an ``automodule`` directive
docutils cannot open a section, so each such title becomes a rubric (a heading outside the
page's table of contents). Loaded from _config.yml: ``local_extensions``.
"""

import re

UNDERLINED_TITLE = re.compile(r"^(?P<title>\S.*)\n(?P<line>[-=~^]+)$")


def titles_to_rubrics(app, what, name, obj, options, lines):
    for i in range(len(lines) - 1):
        match = UNDERLINED_TITLE.match(f"{lines[i]}\n{lines[i + 1]}")
        if match and len(match["line"]) >= len(match["title"].rstrip()):
            lines[i], lines[i + 1] = f".. rubric:: {match['title'].strip()}", ""


def setup(app):
    app.connect("autodoc-process-docstring", titles_to_rubrics)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
