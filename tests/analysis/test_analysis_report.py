"""The HTML report parses, embeds every plot as a PNG data URI and links files that exist."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

from substrate_lm.analysis import analyze
from substrate_lm.analysis.report import render_fragment, write_report


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.links, self.stack, self.tables = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs)
        elif tag == "a":
            self.links.append(attrs.get("href"))
        elif tag == "table":
            self.tables += 1
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()


def _check(html_text, folder, expected_images):
    p = _Collect()
    p.feed(html_text)
    p.close()
    assert p.stack == []  # every element closed in order
    assert len(p.imgs) == expected_images and p.tables >= 1
    for img in p.imgs:
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
        assert (folder / img["data-file"]).is_file()
    for href in p.links:
        assert (folder / href).is_file(), href
    return p


def test_report_is_self_contained_and_references_existing_files(tmp_path, bpe_tokenizer, tiny_neox, neox_factory, items_factory):
    other = neox_factory(len(bpe_tokenizer), n_layer=1, seed=2)
    m = analyze(
        tiny_neox, bpe_tokenizer, items=items_factory(16, 3), compare=other, out_dir=tmp_path, maps=("pca",), n_splits=3, num_threads=1
    )
    html_text = (tmp_path / m["report"]).read_text(encoding="utf-8")
    assert html_text.startswith("<!DOCTYPE html>")
    # probe, purity, CKA layers, PCA map, probe compare, CKA compare
    _check(html_text, tmp_path, expected_images=6)
    assert "grouped by entity" in html_text and "chance" in html_text
    # the fragment for the demo embeds the same images and can be rendered again after a move
    frag = render_fragment(m, tmp_path, heading_level=3)
    assert "<html" not in frag and frag.count("<img ") == 6 and "<h3>" in frag
    moved = tmp_path / "again.html"
    write_report(m, tmp_path, filename=moved.name, title="Again <&>")
    assert "Again &lt;&amp;&gt;" in moved.read_text(encoding="utf-8")


def test_report_without_plots_still_renders(tmp_path, bpe_tokenizer, tiny_neox, items_factory):
    m = analyze(tiny_neox, bpe_tokenizer, items=items_factory(12, 2), out_dir=tmp_path, report=False, n_splits=2, control=False,
                num_threads=1)
    assert m["plots"] == {} and m["report"] is None and not (tmp_path / "report.html").exists()
    path = write_report(m, tmp_path)
    _check(path.read_text(encoding="utf-8"), tmp_path, expected_images=0)
