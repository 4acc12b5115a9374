"""A Sphinx extension: pages carry no saved widget state.

Executing a chapter saves the state of its widgets (the ``interact`` controls, their output
areas with a figure each) in the notebook, and myst-nb embeds it in the page as a script for
a widget manager to render. The book shows no live widget: their cells' output is removed
(tag ``remove-output``) and a static sweep stands in for each, and no manager is loaded
(``nb_ipywidgets_js: {}``). The state would only add up to 0.3 MB to a page, so it goes.
Loaded from _config.yml: ``local_extensions``.
"""

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def drop_widget_state(app, pagename, templatename, context, doctree):
    context["script_files"] = [s for s in context.get("script_files", [])
                               if s.attributes.get("type") != WIDGET_STATE]


def setup(app):
    app.connect("html-page-context", drop_widget_state, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
