"""The Data Docs pages pointed at the site's own copies of what GX loads from CDNs
(orderstream/validation/site_assets.py); the browser test opens the real site offline."""

from __future__ import annotations

import hashlib
import logging
import re
from base64 import b64encode
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest

from orderstream.validation.site_assets import ASSETS_DIR, PACKAGE_FILES, SITE_IMAGES, localize_pages

pytestmark = pytest.mark.unit

BOOTSTRAP_JS = "https://cdn.example/bootstrap/4.3.1/js/bootstrap.min.js"
FONT_AWESOME = "https://cdn.example/ajax/libs/font-awesome/6.6.0/css/all.min.css"


def sri(data: bytes) -> str:
    return "sha384-" + b64encode(hashlib.sha384(data).digest()).decode()


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    """A node_modules with the two packages the pages below load."""
    root = tmp_path / "node_modules"
    (root / "bootstrap/dist/js").mkdir(parents=True)
    (root / "bootstrap/dist/js/bootstrap.min.js").write_bytes(b"/* bootstrap */")
    (root / "@fortawesome/fontawesome-free/css").mkdir(parents=True)
    (root / "@fortawesome/fontawesome-free/webfonts").mkdir(parents=True)
    (root / "@fortawesome/fontawesome-free/css/all.min.css").write_text(
        "@font-face{src:url(../webfonts/fa-solid-900.woff2) format('woff2')}"
        ".x{background:url(\"data:image/svg+xml,%3csvg%3e\")}")
    (root / "@fortawesome/fontawesome-free/webfonts/fa-solid-900.woff2").write_bytes(b"font")
    return root


def page(site: Path, relative: str, head: str) -> Path:
    path = site / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<html><head>{head}</head><body><a href=\"https://docs.example/how\">docs</a></body></html>")
    return path


def test_a_deep_page_loads_scripts_styles_and_fonts_from_the_site(tmp_path: Path, assets: Path) -> None:
    site = tmp_path / "site"
    result = page(site, "validations/suite/run/time/batch.html",
                  f'<script src="{BOOTSTRAP_JS}" integrity="{sri(b"/* bootstrap */")}" crossorigin="anonymous"></script>'
                  f'<link rel="stylesheet" href="{FONT_AWESOME}">')
    localize_pages(site, [result], assets)
    html = result.read_text()
    assert '<script src="../../../../static/vendor/bootstrap/dist/js/bootstrap.min.js"></script>' in html
    assert 'href="../../../../static/vendor/@fortawesome/fontawesome-free/css/all.min.css"' in html
    assert 'href="https://docs.example/how"' in html  # a link to follow, not a request
    vendor = site / "static" / "vendor"
    assert (vendor / "bootstrap/dist/js/bootstrap.min.js").read_bytes() == b"/* bootstrap */"
    assert (vendor / "@fortawesome/fontawesome-free/webfonts/fa-solid-900.woff2").read_bytes() == b"font"


def test_gx_logo_comes_from_the_sites_images_and_a_misplaced_favicon_is_found(tmp_path: Path, assets: Path) -> None:
    site = tmp_path / "site"
    (site / "static/images").mkdir(parents=True)
    (site / "static/images/logo-long.png").write_bytes(b"png")
    (site / "static/images/favicon.ico").write_bytes(b"ico")
    result = page(site, "validations/suite/run/time/batch.html",
                  '<link rel="shortcut icon" href="../../../static/images/favicon.ico"/>'
                  '<img src="https://assets.example/logo-long.png?d=123">'
                  "<style>.brand{background:url('https://assets.example/full_logo_dark.png') 0 0}</style>")
    localize_pages(site, [result], assets)
    html = result.read_text()
    assert 'href="../../../../static/images/favicon.ico"' in html
    assert '<img src="../../../../static/images/logo-long.png">' in html
    assert "url('../../../../static/images/logo-long.png')" in html


def test_a_copy_that_is_not_what_gx_pinned_stays_external_and_is_named(
    tmp_path: Path, assets: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = tmp_path / "site"
    head = f'<script src="{BOOTSTRAP_JS}" integrity="{sri(b"another build")}" crossorigin="anonymous"></script>'
    index = page(site, "index.html", head + '<script src="https://cdn.example/npm/left-pad@1"></script>')
    with caplog.at_level(logging.WARNING):
        localize_pages(site, [index], assets)
    assert head in index.read_text()
    assert f"2 references still load from outside the site: {BOOTSTRAP_JS}" in caplog.text
    assert "left-pad@1" in caplog.text


def test_without_installed_assets_the_pages_are_left_alone_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = page(tmp_path / "site", "index.html", f'<script src="{BOOTSTRAP_JS}"></script>')
    before = index.read_text()
    with caplog.at_level(logging.WARNING):
        localize_pages(tmp_path / "site", [index], tmp_path / "missing")
    assert index.read_text() == before
    assert "the Data Docs assets are not installed" in caplog.text and "make install" in caplog.text


def test_every_cdn_reference_of_the_installed_gx_templates_has_an_installed_copy() -> None:
    """Catches a GX upgrade that loads something new or another version."""
    import great_expectations

    if not ASSETS_DIR.is_dir():
        pytest.fail(f"the Data Docs assets are not installed in {ASSETS_DIR}: run `make install`")
    templates = Path(great_expectations.__file__).parent / "render" / "view" / "templates"
    found = {url for template in templates.glob("*.j2")
             for url in re.findall(r"""(?:src|href)=["'](https?://[^"'{]+)["']""", template.read_text())}
    found |= set(re.findall(r'static_images_dir = "(https?://[^"]+)"', (templates / "top_navbar.j2").read_text()))
    loaded = {url for url in found if not re.search(r"greatexpectations\.io", url)}  # links to follow
    assert len(loaded) >= 15, loaded
    missing = []
    for url in loaded:
        path = urlsplit(url).path
        if path.endswith("/"):  # GX's image host: its logos are named in SITE_IMAGES
            continue
        targets = [m.expand(target) for pattern, target in PACKAGE_FILES if (m := pattern.fullmatch(path))]
        if not targets or not (ASSETS_DIR / PurePosixPath(targets[0])).is_file():
            missing.append(url)
    assert missing == []
    assert set(SITE_IMAGES) >= {"logo-long.png", "full_logo_dark.png"}
