"""The air-gapped path: everything an update fetched, and the index it built, in one archive.

``maltrail update --bundle FILE`` writes a tar.gz with ``manifest.json`` (the source set and the
validators of every URL), ``bodies/`` (the last good body of every URL the build used), ``static/``
(when the static trails came from a local folder) and ``index.mtidx``. ``--from-bundle FILE``
imports the bodies into the local cache and builds from them with no network: the same sources,
the same rows, the same index.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from engine.update.errors import UpdateError
from engine.update.state import UpdateState, UrlEntry, url_key

BUNDLE_FORMAT = "maltrail-ng-bundle"
BUNDLE_VERSION = 1
LOCAL_STATIC = "bundle:static"  # manifest's static_url when the static folder travels in the bundle


class BundleError(UpdateError):
    """A bundle that cannot be read or written; one line."""


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def write_bundle(path: Path, bodies_root: Path, state: UpdateState, manifest: dict[str, Any], index: Path,
                 static_folder: Path | None) -> None:
    """Write the bundle beside `path` and rename it into place."""
    urls = {url: vars(state.urls[url]) for url in manifest["urls"] if url in state.urls}
    manifest = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, **manifest, "url_entries": urls}
    if static_folder is not None:
        manifest["static_url"] = LOCAL_STATIC
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=1, dereference=True) as tar:  # files, not links to them
            _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=1).encode())
            for url in urls:
                tar.add(bodies_root / url_key(url), f"bodies/{url_key(url)}")
            if static_folder is not None:
                tar.add(static_folder, "static")
            if index.is_file():
                tar.add(index, "index.mtidx")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"--bundle {path}: cannot write ({exc.strerror or exc})") from None


def _extract(tar: tarfile.TarFile, workdir: Path, path: Path) -> None:
    """The bundle's folders and regular files into `workdir`, refusing any other member and any name
    that leads outside it. `extractall(filter="data")` would refuse those too, but Debian 12's
    Python (3.11.2) predates that argument (3.11.4)."""
    for member in tar:
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts:
            raise BundleError(f"--from-bundle {path}: member {member.name!r} leads outside the bundle")
        target = workdir.joinpath(*name.parts)
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif member.isfile():
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file's member always has its data
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
        else:
            raise BundleError(f"--from-bundle {path}: member {member.name!r} is not a file or folder")


def import_bundle(path: Path, bodies_root: Path, state: UpdateState, workdir: Path) -> dict[str, Any]:
    """Bodies of a bundle into the local cache (with their validators); returns its manifest, whose
    ``static_url`` then names the unpacked static folder when the bundle carries one."""
    try:
        with tarfile.open(path, "r:*") as tar:
            _extract(tar, workdir, path)
    except FileNotFoundError:
        raise BundleError(f"--from-bundle {path}: not found") from None
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise BundleError(f"--from-bundle {path}: unreadable ({exc})") from None
    try:
        manifest = json.loads((workdir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise BundleError(f"--from-bundle {path}: no readable manifest.json") from None
    if manifest.get("format") != BUNDLE_FORMAT or manifest.get("version") != BUNDLE_VERSION:
        raise BundleError(f"--from-bundle {path}: not a bundle of this version")
    bodies_root.mkdir(parents=True, exist_ok=True)
    for url, entry in manifest.get("url_entries", {}).items():
        source = workdir / "bodies" / url_key(url)
        if not source.is_file():
            raise BundleError(f"--from-bundle {path}: body of {url} missing")
        shutil.copyfile(source, bodies_root / url_key(url))
        state.urls[url] = UrlEntry(**entry)
    if manifest.get("static_url") == LOCAL_STATIC:
        manifest["static_url"] = str(workdir / "static")
    return manifest
