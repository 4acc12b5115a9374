"""A Sphinx extension: the execution table's Status column in words, not glyphs.

myst-nb's ``nb-exec-table`` marks each notebook with the emoji check mark or cross; the
page's font has neither, so readers saw empty boxes. Loaded from _config.yml:
``local_extensions``.
"""

from docutils import nodes

WORDS = {"\N{WHITE HEAVY CHECK MARK}": "ran", "\N{CROSS MARK}": "failed"}


def status_in_words(app, doctree, docname):
    for text in list(doctree.findall(nodes.Text)):
        if str(text) in WORDS:
            text.parent.replace(text, nodes.Text(WORDS[str(text)]))


def setup(app):
    app.connect("doctree-resolved", status_in_words)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
