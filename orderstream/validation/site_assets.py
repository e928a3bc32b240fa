"""The Data Docs site without the internet: its stylesheets, scripts and fonts served from the site.

GX's page templates load bootstrap, jQuery, popper.js, bootstrap-table, bootstrap-datepicker,
bootstrap-dark, Font Awesome and Vega from public CDNs, and its logo from GX's web host; GX has
no setting for that. After a build, `localize_pages` points the pages it wrote at copies under
the site's static/vendor/, taken from the npm packages `make install` puts in the venv
(package.json and package-lock.json pin their versions and integrity). Nothing is fetched at
run time: a reference with no local copy stays as it is and is named in a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sys
from base64 import b64encode
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

ASSETS_DIR = Path(sys.prefix) / "share" / "orderstream" / "data-docs" / "node_modules"
VENDOR = PurePosixPath("static", "vendor")
IMAGES = PurePosixPath("static", "images")

# A CDN URL's path, as GX's templates write it -> the file in ASSETS_DIR. The host is not
# looked at: the package, its version and the file are all in the path.
PACKAGE_FILES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"/bootstrap/4\.3\.1/(css|js)/([\w.-]+)"), r"bootstrap/dist/\1/\2"),
    (re.compile(r"/jquery-3\.7\.1\.min\.js"), "jquery/dist/jquery.min.js"),
    (re.compile(r"/ajax/libs/popper\.js/1\.12\.9/umd/([\w.-]+)"), r"popper.js/dist/umd/\1"),
    # GX asks for the filter-control stylesheet at 1.19.0; 1.19.1's styles the script it loads.
    (re.compile(r"/bootstrap-table@1\.19\.[01]/dist/([\w./-]+)"), r"bootstrap-table/dist/\1"),
    (re.compile(r"/ajax/libs/bootstrap-datepicker/1\.9\.0/(css|js)/([\w.-]+)"), r"bootstrap-datepicker/dist/\1/\2"),
    (re.compile(r"/npm/@forevolve/bootstrap-dark@1\.1\.0/dist/css/([\w.-]+)"), r"@forevolve/bootstrap-dark/dist/css/\1"),
    (re.compile(r"/ajax/libs/font-awesome/6\.6\.0/css/([\w.-]+)"), r"@fortawesome/fontawesome-free/css/\1"),
    # GX asks for the newest release of each major version; the lockfile pins one.
    (re.compile(r"/npm/vega@5"), "vega/build/vega.min.js"),
    (re.compile(r"/npm/vega-lite@5"), "vega-lite/build/vega-lite.min.js"),
    (re.compile(r"/npm/vega-embed@6"), "vega-embed/build/vega-embed.min.js"),
)
# GX's logos from its web host -> the copy GX puts in the site's static/images.
SITE_IMAGES = {"logo-long.png": "logo-long.png", "full_logo_dark.png": "logo-long.png"}

_TAG = re.compile(r"<(?:script|link|img)\b[^>]*>", re.IGNORECASE)
_TAG_URL = re.compile(r"""\b(src|href)=(["'])([^"']+)\2""")
_INTEGRITY = re.compile(r"""\sintegrity=(["'])([^"']*)\1""")
_CROSSORIGIN = re.compile(r"""\scrossorigin(=(["'])[^"']*\2)?""")
_CSS_URL = re.compile(r"""url\((["']?)(https?://[^"')]+)\1\)""")
_CSS_RELATIVE_URL = re.compile(r"""url\((["']?)(?!data:|https?:|/)([^"')?#]+)[^"')]*\1\)""")


def localize_pages(site: Path, pages: Iterable[Path], assets: Path = ASSETS_DIR) -> None:
    """Rewrite `pages` of the Data Docs `site` to load everything from the site itself."""
    if not assets.is_dir():
        log.warning("the Data Docs assets are not installed (%s; `make install` puts them there): "
                    "the pages load their stylesheets and scripts from public CDNs", assets)
        return
    localizer = _Localizer(site, assets)
    for page in pages:
        html = page.read_text(encoding="utf-8")
        local = localizer.rewrite(html, page)
        if local != html:
            page.write_text(local, encoding="utf-8")
    if localizer.external:
        log.warning("Data Docs: %d references still load from outside the site: %s",
                    len(localizer.external), ", ".join(sorted(localizer.external)))


class _Localizer:
    """Rewrites pages of one site and copies the files they need into it, each once."""

    def __init__(self, site: Path, assets: Path) -> None:
        self.site, self.assets = site, assets
        self.copied: set[PurePosixPath] = set()
        self.external: set[str] = set()

    def rewrite(self, html: str, page: Path) -> str:
        to_root = PurePosixPath(Path(os.path.relpath(self.site, page.parent)).as_posix())
        html = _TAG.sub(lambda tag: self._tag(tag.group(0), page, to_root), html)
        return _CSS_URL.sub(lambda m: self._css_url(m, to_root), html)

    def _tag(self, tag: str, page: Path, to_root: PurePosixPath) -> str:
        found = _TAG_URL.search(tag)
        if found is None:
            return tag
        url = found.group(3)
        if url.startswith(("http://", "https://")):
            integrity = _INTEGRITY.search(tag)
            local = self._local(url, integrity.group(2) if integrity else None)
        else:
            local = self._misplaced(url, page)
        if local is None:
            return tag
        attribute = f"{found.group(1)}={found.group(2)}{to_root / local}{found.group(2)}"
        tag = tag[: found.start()] + attribute + tag[found.end():]
        # A file:// page is an opaque origin: CORS and SRI checks would refuse the local copy
        # (its integrity was just checked against the hash GX pinned).
        return _CROSSORIGIN.sub("", _INTEGRITY.sub("", tag))

    def _css_url(self, found: re.Match[str], to_root: PurePosixPath) -> str:
        local = self._local(found.group(2), None)
        return found.group(0) if local is None else f"url({found.group(1)}{to_root / local}{found.group(1)})"

    def _local(self, url: str, integrity: str | None) -> PurePosixPath | None:
        """The site-relative path serving `url`, its file copied in; None if there is none."""
        path = urlsplit(url).path
        name = PurePosixPath(path).name
        if name in SITE_IMAGES and (self.site / IMAGES / SITE_IMAGES[name]).is_file():
            return IMAGES / SITE_IMAGES[name]
        for pattern, target in PACKAGE_FILES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            asset = PurePosixPath(match.expand(target))
            source = self.assets / asset
            if source.is_file() and (integrity is None or _sri(source, integrity) == integrity):
                self._copy(asset)
                return VENDOR / asset
            break
        self.external.add(url)
        return None

    def _misplaced(self, url: str, page: Path) -> PurePosixPath | None:
        """GX points the favicon of result pages one directory short of the site's static/:
        the site-relative path of the file meant, when `url` misses it."""
        if "static/" not in url or (page.parent / url).exists():
            return None
        meant = PurePosixPath(url[url.index("static/"):])
        return meant if (self.site / meant).is_file() else None

    def _copy(self, asset: PurePosixPath) -> None:
        """Copy one package file into the site, with the files a stylesheet refers to (fonts)."""
        if asset in self.copied:
            return
        self.copied.add(asset)
        source, target = self.assets / asset, self.site / VENDOR / asset
        if not target.is_file() or target.stat().st_size != source.stat().st_size:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        if asset.suffix == ".css":
            for found in _CSS_RELATIVE_URL.finditer(source.read_text(encoding="utf-8")):
                neighbour = PurePosixPath(os.path.normpath(asset.parent / found.group(2)))
                if (self.assets / neighbour).is_file():
                    self._copy(neighbour)


def _sri(path: Path, integrity: str) -> str:
    """The subresource-integrity string of the file, in the algorithm `integrity` names."""
    algorithm = integrity.split("-", 1)[0]
    return f"{algorithm}-{b64encode(hashlib.new(algorithm, path.read_bytes()).digest()).decode()}"
