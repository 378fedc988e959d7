import io
import tarfile
from pathlib import Path

import pytest

from voices.archive import VoiceArchiveError, extract_voices


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.fixture
def hostile_archive(tmp_path: Path) -> Path:
    """Voices in upstream's layout, mixed with members that try to leave the target folder."""
    path = tmp_path / "voices.tgz"
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "voices", kind=tarfile.DIRTYPE)
        add(tar, "voices/NATF2.pt", b"natf2")
        add(tar, "voices/NATF2.wav", b"natf2 wav")
        add(tar, "./voices/NATM1.pt", b"natm1")
        add(tar, "../evil.pt", b"evil")
        add(tar, "voices/../../evil2.pt", b"evil")
        add(tar, "/tmp/evil3.pt", b"evil")
        add(tar, "voices/link.pt", kind=tarfile.SYMTYPE, link="../../outside.pt")
        add(tar, "voices/hard.pt", kind=tarfile.LNKTYPE, link="voices/NATF2.pt")
        add(tar, "voices/fifo.pt", kind=tarfile.FIFOTYPE)
        add(tar, "voices/nested/deep.pt", b"deep")
        add(tar, "voices/README.txt", b"readme")
    return path


def test_only_voice_files_are_unpacked(hostile_archive, tmp_path):
    target = tmp_path / "cache" / "released"

    folder = extract_voices(hostile_archive, target)

    assert folder == target
    assert sorted(p.name for p in target.iterdir()) == ["NATF2.pt", "NATF2.wav", "NATM1.pt"]
    assert (target / "NATF2.pt").read_bytes() == b"natf2"
    assert all(p.is_file() and not p.is_symlink() for p in target.iterdir())


def test_nothing_is_written_outside_the_target(hostile_archive, tmp_path):
    target = tmp_path / "a" / "b" / "released"
    before = set(tmp_path.rglob("*"))

    extract_voices(hostile_archive, target)

    written = set(tmp_path.rglob("*")) - before
    parents = {tmp_path / "a", tmp_path / "a" / "b"}
    assert [p for p in written if p not in parents and not p.is_relative_to(target)] == []
    assert not Path("/tmp/evil3.pt").exists()


def test_skipped_members_are_logged(hostile_archive, tmp_path, caplog):
    extract_voices(hostile_archive, tmp_path / "released")

    skipped = " ".join(caplog.messages)
    for name in ("../evil.pt", "voices/../../evil2.pt", "/tmp/evil3.pt", "voices/link.pt", "voices/fifo.pt"):
        assert name in skipped


def test_unpacked_once(hostile_archive, tmp_path):
    target = tmp_path / "released"
    extract_voices(hostile_archive, target)
    (target / "NATF2.pt").write_bytes(b"changed")

    extract_voices(hostile_archive, target)

    assert (target / "NATF2.pt").read_bytes() == b"changed"


def test_corrupt_archive_leaves_no_folder(tmp_path):
    archive = tmp_path / "voices.tgz"
    archive.write_bytes(b"\x1f\x8b" + b"not really gzip" * 20)
    target = tmp_path / "cache" / "released"

    with pytest.raises(VoiceArchiveError, match="voices.tgz: cannot unpack voices"):
        extract_voices(archive, target)

    assert list((tmp_path / "cache").iterdir()) == []
