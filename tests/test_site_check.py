"""tools/site_check.py catches what it is about: a page opened in headless chromium with a missing image, a dead
link, a dead anchor or a resource fetched over the network fails, and a good page passes. Skipped only where no
chromium and chromedriver are installed (`make test-site` installs them on Debian as root and runs this first)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("qvlearn_tools_site_check", ROOT / "tools" / "site_check.py")
site_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(site_check)

pytestmark = pytest.mark.skipif(
    not (site_check.find(["chromium", "chromium-browser", "google-chrome"], "CHROMIUM")
         and site_check.find(["chromedriver"], "CHROMEDRIVER")), reason=site_check.INSTALL)

PAGE = '<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head><body>{body}</body></html>'


def _site(tmp_path: Path, body: str) -> Path:
    site = tmp_path / "site"
    (site / "_images").mkdir(parents=True)
    shutil.copy(ROOT / "images" / "tour.png", site / "_images" / "tour.png")
    (site / "index.html").write_text(PAGE.format(title="index", body='<a href="page.html#here">page</a>'))
    (site / "page.html").write_text(PAGE.format(title="page", body=body))
    return site


def test_a_good_site_passes(tmp_path):
    site = _site(tmp_path, '<h1 id="here">x</h1><img src="_images/tour.png"><a href="index.html">back</a>'
                           '<a href="https://example.org">web</a>')
    problems, counts = site_check.check(site)
    assert problems == []
    assert counts == {"pages": 2, "images": 1, "links": 2, "web links": 1}


def test_each_kind_of_breakage_is_named(tmp_path):
    site = _site(tmp_path, '<h1 id="here">x</h1><img src="_images/missing.png"><a href="gone.html">dead</a>'
                           '<a href="index.html#nowhere">dead anchor</a><img src="http://127.0.0.1:9/x.png">')
    problems, _ = site_check.check(site)
    text = "\n".join(problems)
    assert "page.html: image _images/missing.png is not displayed" in text
    assert "page.html: link to gone.html is dead (no such file)" in text
    assert "page.html: link to index.html#nowhere is dead (no such anchor on that page)" in text
    assert "page.html#here" not in text  # the good anchor on index.html
    assert "127.0.0.1:9" in text  # the network fetch, as a fetch, a failed image or a logged error
