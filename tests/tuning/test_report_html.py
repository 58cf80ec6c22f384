"""report.md as one self-contained HTML page: tables, images embedded as data: URIs, text escaped."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from raypose.tuning.report_html import markdown_to_html, write_report_html


def png_bytes(color: str = "red", size: tuple[int, int] = (5, 3)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_tables_headings_lists_code_and_bold_become_html(tmp_path):
    text = ("# Study result: trial t1\n\nThe **best** recipe uses `optim.lr`.\n\n- one\n- two\n\n"
            "| trial | best oks_map |\n|---|---|\n| t0 | 0.4987 |\n| t1 | 0.1000 |\n")
    page = markdown_to_html(text, tmp_path, "my study")
    assert page.startswith("<!DOCTYPE html>") and "<title>my study</title>" in page
    assert "<h1>Study result: trial t1</h1>" in page
    assert "<strong>best</strong>" in page and "<code>optim.lr</code>" in page
    assert "<li>one</li>" in page and "<li>two</li>" in page
    table = page[page.index("<table>"):page.index("</table>")]
    assert "<th>best oks_map</th>" in table and table.count("<tr>") == 3 and "<td>0.4987</td>" in table


def test_images_are_embedded_as_data_uris_of_the_files_bytes(tmp_path):
    (tmp_path / "plots").mkdir()
    curves, imp = png_bytes("red"), png_bytes("blue", (7, 2))
    (tmp_path / "trial_curves.png").write_bytes(curves)
    (tmp_path / "plots" / "imp.png").write_bytes(imp)
    page = markdown_to_html("![curves](trial_curves.png)\n\n![imp](plots/imp.png) after\n", tmp_path, "t")
    assert data_uris(page) == [curves, imp]
    assert Image.open(io.BytesIO(data_uris(page)[1])).size == (7, 2)
    assert "trial_curves.png" not in page  # no relative link left: it would not resolve in MLflow's iframe
    assert 'alt="curves"' in page and "</span> after" not in page and " after" in page


def test_a_missing_or_outside_image_becomes_a_visible_note(tmp_path):
    (tmp_path / "inner").mkdir()
    (tmp_path / "secret.png").write_bytes(png_bytes())
    text = "![the curves](gone.png) and ![x](../secret.png) and ![r](https://example.com/a.png) end\n"
    page = markdown_to_html(text, tmp_path / "inner", "t")
    assert "<img" not in page and not data_uris(page)
    notes = re.findall(r'<span class="missing-image">(.*?)</span>', page)
    assert len(notes) == 3
    assert notes[0].startswith("[image the curves: gone.png was not found")
    assert "is outside" in notes[1] and "not embedded" in notes[2]
    assert "</span> end" in page  # the text after an image stays where it was


def test_html_in_the_text_is_escaped_not_run(tmp_path):
    text = ("An error: <script>alert(1)</script> & <b>x</b>\n\n<div onclick=\"x()\">block</div>\n\n"
            "| trial | error |\n|---|---|\n| t9 | <script>boom()</script> |\n\n[click](javascript:alert(2))\n")
    page = markdown_to_html(text, tmp_path, "<script>title</script>")
    body = page[page.index("<body>"):]
    assert "<script" not in page and "<b>" not in body and "<div" not in body and "javascript:" not in page
    assert body.count("&lt;script&gt;") == 2 and "&amp; &lt;b&gt;x&lt;/b&gt;" in body
    assert "<title>&lt;script&gt;title&lt;/script&gt;</title>" in page


def test_write_report_html_titles_the_page_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "trial_curves.png").write_bytes(png := png_bytes())
    md = tmp_path / "report.md"
    md.write_text("# Study result: trial t3\n\n![c](trial_curves.png)\n")
    out = write_report_html(md, tmp_path / "report.html")
    page = out.read_text()
    assert "<title>Study result: trial t3</title>" in page and data_uris(page) == [png]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md", "trial_curves.png"]


def test_a_crash_while_writing_leaves_the_old_page(tmp_path, monkeypatch):
    md, page = tmp_path / "report.md", tmp_path / "report.html"
    md.write_text("# new\n")
    page.write_text("old page")

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("raypose.tuning.report_html.markdown_to_html", fail)
    with pytest.raises(RuntimeError):
        write_report_html(md, page)
    assert page.read_text() == "old page"
