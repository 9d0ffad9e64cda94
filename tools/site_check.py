"""The built site, checked in a real headless browser (Debian's chromium through selenium and chromedriver).

    python tools/site_check.py [--site build/site] [--screenshots DIR]

Every HTML page is opened from disk as a reader would open it. A page fails when it does not load, when one of its
images is not displayed (not loaded, or zero pixels wide), when it asks for anything over the network (the site
must work offline), when the browser logs an error, or when one of its links to the site is dead: the file does
not exist, or the #anchor is not on the target page. Links to the web are counted, not followed.
Exits 0 when every page passes, 1 with one line per problem otherwise, 2 when no browser can be started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ("the browser check needs chromium and chromedriver: on Debian or Ubuntu `apt-get install chromium "
           "chromium-driver` (make test installs them itself when it runs as root with apt-get), elsewhere set "
           "CHROMIUM and CHROMEDRIVER to a Chrome or Chromium and its matching chromedriver")

# What the page reports once loaded: its images, links and the resources it fetched.
PROBE = """
const images = Array.from(document.images).map(i => [i.currentSrc || i.src, i.complete, i.naturalWidth]);
const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.href);
const fetched = performance.getEntriesByType('resource').map(r => r.name);
return [document.readyState, document.title, images, links, fetched];
"""


def find(names: list[str], env: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    for name in names:
        if path := shutil.which(name):
            return path
    return None


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = find(["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"], "CHROMIUM")
    driver = find(["chromedriver"], "CHROMEDRIVER")
    if not chromium or not driver:
        raise RuntimeError(f"site_check: no {'chromium' if not chromium else 'chromedriver'} found: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--allow-file-access-from-files", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


class Ids(HTMLParser):
    """Every id= (and name=) on a page: the anchors a link may point at."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.ids |= {value for key, value in attrs if key in ("id", "name") and value}


def anchors(page: Path, cache: dict[Path, set[str]]) -> set[str]:
    if page not in cache:
        parser = Ids()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        cache[page] = parser.ids
    return cache[page]


def check(site: Path, screenshots: Path | None = None) -> tuple[list[str], dict]:
    """Open every page of `site`; returns (problems, counts)."""
    from selenium.webdriver.support.ui import WebDriverWait

    site = site.resolve()
    pages = sorted(p for p in site.rglob("*.html") if not p.relative_to(site).parts[0].startswith("_"))
    problems, ids, counts = [], {}, {"pages": 0, "images": 0, "links": 0, "web links": 0}
    driver = browser()
    try:
        for page in pages:
            name = page.relative_to(site)
            driver.get(page.as_uri())
            WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
            state, title, images, hrefs, fetched = driver.execute_script(PROBE)
            counts["pages"] += 1
            if state != "complete" or not title:
                problems.append(f"{name}: did not load (state {state!r}, title {title!r})")
            for src, complete, width in images:
                counts["images"] += 1
                if not complete or not width:
                    shown = unquote(src).replace(site.as_uri() + "/", "")
                    problems.append(f"{name}: image {shown} is not displayed (not found or not an image)")
            for url in fetched:
                if not url.startswith("file:"):
                    problems.append(f"{name}: fetches {url} over the network: the site must work offline")
            for entry in driver.get_log("browser"):
                problems.append(f"{name}: the browser logged: {entry['message']}")
            for href in hrefs:
                parts = urlsplit(href)
                if parts.scheme in ("http", "https", "mailto"):
                    counts["web links"] += 1
                    continue
                counts["links"] += 1
                if parts.scheme != "file":
                    problems.append(f"{name}: link {href} is neither a page of the site nor a web address")
                    continue
                target = Path(unquote(parts.path))
                if target.is_dir():
                    target = target / "index.html"
                if not target.is_relative_to(site):
                    problems.append(f"{name}: link {href} leaves the site")
                elif not target.exists():
                    problems.append(f"{name}: link to {target.relative_to(site)} is dead (no such file)")
                elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in anchors(
                        target, ids):
                    problems.append(f"{name}: link to {target.relative_to(site)}#{parts.fragment} is dead (no "
                                    "such anchor on that page)")
            if screenshots is not None:
                shot = screenshots / (str(name).replace("/", "__") + ".png")
                shot.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    return problems, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=ROOT / "build" / "site", help="the built site (make site)")
    parser.add_argument("--screenshots", type=Path, help="also save a screenshot of each page here")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"site_check: {args.site} holds no built site (no index.html): run make site first", file=sys.stderr)
        return 1
    try:
        problems, counts = check(args.site, args.screenshots)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 2
    summary = ", ".join(f"{n} {what}" for what, n in counts.items())
    if problems:
        print(f"site_check: {len(problems)} problems ({summary}):\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"site_check: every page loads, every image is displayed, no internal link is dead ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
