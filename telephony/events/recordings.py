"""Recordings on disk, for the admin API: found by tenant and call, repaired, deleted, and swept.

Workers write them (`agent.recording`) under the recordings folder, which in distributed mode
must be a folder every worker and control plane shares (a network volume). Files older than
the retention period are deleted by the control plane's sweep.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from agent.contracts.recordings import recording_path, repair

log = logging.getLogger(__name__)


class RecordingStore:
    def __init__(self, root: Path):
        self.root = root

    def find(self, tenant: str, call_id: str) -> Path | None:
        """The recording of a finished call, its header made to match its data (blocking)."""
        path = recording_path(self.root, tenant, call_id)
        if not path.is_file():
            return None
        repair(path)  # its writer may have died between an append and the header's update
        return path

    def delete(self, tenant: str, call_id: str) -> bool:
        path = recording_path(self.root, tenant, call_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def sweep(self, retention_seconds: float) -> int:
        """Delete recordings last written more than `retention_seconds` ago (blocking)."""
        cutoff = time.time() - retention_seconds
        removed = 0
        for path in self.root.glob("*/*.wav"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.info("recordings past their retention deleted", extra={"count": removed})
        return removed
