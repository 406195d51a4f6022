"""A small Sphinx extension for the course site (listed in the generated ``conf.py``).

A docstring with a markup slip (``(N, *shape)`` read as the start of an emphasis) makes
docutils emit a *problematic* node that links to an error message Sphinx does not render:
a broken link on the page. Here such nodes become their plain text; the warning itself
still goes to the build's warning file, so the docstring can be fixed.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.transforms.post_transforms import SphinxPostTransform


class PlainProblematic(SphinxPostTransform):
    """Replace ``problematic`` nodes (links to unrendered system messages) by their text."""

    default_priority = 5

    def run(self, **kwargs) -> None:
        for node in list(self.document.findall(nodes.problematic)):
            plain = nodes.inline("", node.astext(), ids=list(node["ids"]))
            node["ids"] = []
            node.replace_self(plain)


def setup(app):
    app.add_post_transform(PlainProblematic)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
