"""A Griffe extension for the API reference: Sphinx roles in docstrings shown as code.

wgflow's docstrings name other objects the Sphinx way (``:func:`solve```, ``:class:`~wgflow.measure.Measure```);
mkdocstrings renders Markdown, where such a role would show as ``:func:solve``. This rewrites each role to a
code span of the name (the last dotted part for ``~``), leaving the source untouched.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const|ref):`(~?)([^`<]+?)(?:\s*<[^`>]+>)?`")


def plain(text: str) -> str:
    """``:func:`a.b``` → ``a.b`` in backticks; ``:class:`~a.b``` → ``b``."""
    return ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)


class SphinxRoles(Extension):
    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
