"""A study's ``report.md`` as one self-contained HTML page, for MLflow's artifact viewer.

MLflow shows an HTML artifact inside a sandboxed iframe, where a relative ``<img src="x.png">``
does not resolve; the Markdown view shows the images' alt text only. So every image the report
names is embedded as a ``data:`` URI, and one the folder lacks becomes a visible note.

The conversion is Python-Markdown's (with its ``tables`` extension) rather than a converter of our
own: the report is headings, paragraphs, lists, pipe tables, inline code, bold and images today,
and whatever a later section adds (a link, a nested list, an escaped ``|``) keeps working without
a parser to maintain. Its raw-HTML pass-through is switched off, so text such as a trial's error
message saying ``<script>`` is shown as text, never run.
"""

from __future__ import annotations

import base64
import html
import logging
import os
import xml.etree.ElementTree as etree
from pathlib import Path
from urllib.parse import unquote, urlsplit

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

from raypose.io import write_text_atomic

logger = logging.getLogger(__name__)

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml", ".webp": "image/webp"}
LINK_SCHEMES = ("", "http", "https", "mailto")  # anything else (javascript:, data:) loses its href

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 1.5em auto; padding: 0 1em;
       line-height: 1.45; color: #222; }
/* MLflow's viewer is narrow: a table too wide for it scrolls on its own, the text beside it does not */
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; display: block; max-width: 100%;
        overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
code { background: #f4f4f4; padding: 0 0.2em; border-radius: 3px; }
img { max-width: 100%; height: auto; }
.missing-image { display: inline-block; border: 1px dashed #c00; color: #c00; padding: 0.4em 0.8em; }
"""


def markdown_to_html(text: str, folder: str | os.PathLike, title: str) -> str:
    """``text`` (Markdown) as a complete HTML page titled ``title``.

    Images (``![alt](plots/x.png)``) are read from ``folder``, where the Markdown's relative paths
    point, and embedded as base64 ``data:`` URIs; one that is missing, outside ``folder``, remote
    or not an image type is replaced by a visible note naming it. Raw HTML in ``text`` is escaped.
    """
    md = markdown.Markdown(extensions=["tables", _EmbedImages(Path(folder))], output_format="html")
    md.preprocessors.deregister("html_block")  # raw HTML blocks and inline tags are text, escaped
    md.inlinePatterns.deregister("html")
    body = md.convert(text)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def write_report_html(md_path: str | os.PathLike, html_path: str | os.PathLike) -> Path:
    """Convert the Markdown file ``md_path`` (its images relative to its folder) with
    :func:`markdown_to_html` and write the page atomically to ``html_path``; return that path.

    The page's title is the Markdown's first ``# `` heading, else the file's name.
    """
    md_path = Path(md_path)
    text = md_path.read_text(encoding="utf-8")
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), md_path.name)
    return write_text_atomic(html_path, markdown_to_html(text, md_path.parent, title))


class _EmbedImages(Extension):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (Python-Markdown's name)
        # Priority -1: after "inline" has made the <img> elements and "unescape" restored their src.
        md.treeprocessors.register(_EmbedImagesProcessor(md, self.folder), "raypose_embed_images", -1)


class _EmbedImagesProcessor(Treeprocessor):
    def __init__(self, md: markdown.Markdown, folder: Path) -> None:
        super().__init__(md)
        self.folder = folder

    def run(self, root: etree.Element) -> None:
        for element in root.iter():
            if element.tag == "img":
                self._embed(element)
            elif element.tag == "a" and urlsplit(element.get("href", "")).scheme.lower() not in LINK_SCHEMES:
                del element.attrib["href"]

    def _embed(self, img: etree.Element) -> None:
        src, alt = img.get("src", ""), img.get("alt", "")
        uri, problem = self._data_uri(src)
        if uri:
            img.set("src", uri)
            return
        logger.warning("report image %s (%s): %s; the HTML report shows a note instead", src, alt, problem)
        img.tag = "span"  # in place: the element keeps its position and its tail text
        img.attrib.clear()
        img.set("class", "missing-image")
        img.text = f"[image {alt or src}: {src} {problem}]"

    def _data_uri(self, src: str) -> tuple[str | None, str]:
        """``(data URI, "")`` for an image file under the folder, else ``(None, why not)``."""
        parts = urlsplit(src)
        if parts.scheme or parts.netloc or src.startswith("/"):
            return None, "is not a file beside the report (not embedded)"
        folder = self.folder.resolve()
        path = (folder / unquote(parts.path)).resolve()
        if not path.is_relative_to(folder):
            return None, f"is outside {self.folder} (not embedded)"
        mime = IMAGE_TYPES.get(path.suffix.lower())
        if mime is None:
            return None, f"is not an image type ({', '.join(IMAGE_TYPES)})"
        if not path.is_file():
            return None, f"was not found in {self.folder}"
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}", ""
