"""Unpacking the released `voices.tgz` safely: only regular files, only into the target folder.

Upstream calls `tarfile.extractall` on it; here each member is checked instead, since an archive
can name `../x`, an absolute path, a link or a device. Such members are skipped with a warning.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)

VOICE_SUFFIXES = (".pt", ".wav")
ARCHIVE_FOLDER = "voices"  # upstream's archive holds voices/{name}.pt


class VoiceArchiveError(Exception):
    """`voices.tgz` cannot be read."""


def extract_voices(archive: Path, target: Path) -> Path:
    """Unpack the voice files of `archive` flat into `target`, once; later calls reuse it.

    The files are unpacked into a temporary sibling folder and renamed into place, so a
    crash or a concurrent process never leaves a half-filled `target`.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _unpack(archive, staging)
        os.rename(staging, target)
    except OSError:
        if not target.is_dir():  # else another process got there first, which is fine
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _unpack(archive: Path, folder: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = _voice_file_name(member)
                if name is None:
                    continue
                source = tar.extractfile(member)
                assert source is not None  # regular files always have data
                with source, open(folder / name, "wb") as sink:
                    shutil.copyfileobj(source, sink)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise VoiceArchiveError(f"{archive}: cannot unpack voices ({error})") from error


def _voice_file_name(member: tarfile.TarInfo) -> str | None:
    """The file name to write for `member`, or None to skip it."""
    if member.isdir():
        return None
    if not member.isreg():
        logger.warning("voices archive: skipping %s (not a regular file)", member.name)
        return None
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or "\\" in member.name:
        logger.warning("voices archive: skipping %s (path leaves the archive)", member.name)
        return None
    *folders, name = path.parts or ("",)
    if folders not in ([], [ARCHIVE_FOLDER]) or not name.endswith(VOICE_SUFFIXES):
        return None
    return name
