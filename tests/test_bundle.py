"""engine/update/bundle.py: a bundle unpacks its folders and regular files only, each inside the
work folder, on every Python 3.11 (Debian 12's 3.11.2 has no `extractall(filter=...)`); links
in a static folder travel as the files they point to."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from engine.update.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, BundleError, import_bundle, write_bundle
from engine.update.state import UpdateState

MANIFEST = json.dumps({"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "urls": [], "url_entries": {}}).encode()


def _tar(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def test_folders_and_files_unpack(tmp_path: Path) -> None:
    bundle = _tar(tmp_path / "b.tar.gz", (_member("manifest.json"), MANIFEST),
                  (_member("static", tarfile.DIRTYPE), b""), (_member("static/./malware/x.txt"), b"bad.example\n"))
    work = tmp_path / "work"
    work.mkdir()
    assert import_bundle(bundle, tmp_path / "bodies", UpdateState(), work)["format"] == BUNDLE_FORMAT
    assert (work / "static" / "malware" / "x.txt").read_text() == "bad.example\n"


@pytest.mark.parametrize(("member", "problem"), [
    (_member("../escaped.txt"), "leads outside"),
    (_member("static/../../escaped.txt"), "leads outside"),
    (_member("/tmp/escaped.txt"), "leads outside"),
    (_member("static/link", tarfile.SYMTYPE, "/etc/passwd"), "not a file or folder"),
    (_member("static/hard", tarfile.LNKTYPE, "manifest.json"), "not a file or folder"),
    (_member("static/fifo", tarfile.FIFOTYPE), "not a file or folder"),
])
def test_hostile_members_are_refused(tmp_path: Path, member: tarfile.TarInfo, problem: str) -> None:
    bundle = _tar(tmp_path / "b.tar.gz", (_member("manifest.json"), MANIFEST), (member, b"x"))
    work = tmp_path / "deep" / "work"
    work.mkdir(parents=True)
    with pytest.raises(BundleError) as caught:
        import_bundle(bundle, tmp_path / "bodies", UpdateState(), work)
    message = str(caught.value)
    assert problem in message and repr(member.name) in message and "\n" not in message
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "deep" / "escaped.txt").exists()


def test_links_in_a_static_folder_travel_as_files(tmp_path: Path) -> None:
    static = tmp_path / "static"
    (static / "malware").mkdir(parents=True)
    (static / "malware" / "real.txt").write_text("bad.example\n")
    (static / "malware" / "alias.txt").symlink_to(static / "malware" / "real.txt")
    bundle, index = tmp_path / "b.tar.gz", tmp_path / "none.mtidx"
    write_bundle(bundle, tmp_path / "bodies", UpdateState(), {"urls": []}, index, static)
    work = tmp_path / "work"
    work.mkdir()
    manifest = import_bundle(bundle, tmp_path / "bodies", UpdateState(), work)
    assert manifest["static_url"] == str(work / "static")
    alias = work / "static" / "malware" / "alias.txt"
    assert not alias.is_symlink() and alias.read_text() == "bad.example\n"
