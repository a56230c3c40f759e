"""Rendering: every page earlyhelp writes (meeting packs, the chair's summary, the linkage
report, the model card, the IG pack, the ATRS record, the programme report) comes from a
jinja2 template in `templates/` inside one shared page shell (`page.html.j2`), so they
look alike, print alike and escape alike. Documents written as Markdown (they are also
published as `.md`) are rendered by mistune, a kept Markdown library, not by hand.

Pages are self-contained: no script, nothing fetched, so they open on a machine without
internet and print as they show.
"""

from __future__ import annotations

import mistune
from jinja2 import Environment, PackageLoader
from markupsafe import Markup

# HTML templates (*.html.j2) escape what they are given; Markdown ones (*.md.j2) are text
ENVIRONMENT = Environment(
    loader=PackageLoader("reports"), autoescape=lambda name: bool(name) and name.endswith(".html.j2"), trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True,
)
# raw HTML in a document's text is shown as text: documents quote partners' field names, never markup
_MARKDOWN = mistune.create_markdown(escape=True, plugins=["table", "url"])


def render(template: str, **context: object) -> str:
    return ENVIRONMENT.get_template(template).render(**context)


def page(title: str, body: str, layout: str = "document") -> str:
    """A whole page: `body` is HTML already made safe (a template's output, or escaped)."""
    return render("page.html.j2", title=title, body=Markup(body), layout=layout)


def markdown_page(markdown: str, title: str) -> str:
    """A Markdown document as a page of the shared shell."""
    return page(title, _MARKDOWN(markdown))
