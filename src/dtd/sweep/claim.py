"""One job, one runner, across processes and machines: an exclusive claim file next to the run folders.

Two sweeps over the same records (two terminals, two Ray clusters, a retried Ray task) may both see a job
without a record. Whoever creates `<runs>/claims/<job>.claim` first (O_EXCL, atomic on local disks and on
NFS v3+) runs it; the file names the pid and host and its mtime is a heartbeat, touched while the job runs.
A claim whose process is gone (same host) or whose heartbeat stopped (another host, `stale_after` seconds) is
taken over: that job's run folder then resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from dtd.paths import pid_alive, temp_name

HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0  # a claim not touched for this long (another host) belongs to a dead process


class Claim:
    def __init__(self, runs: Path, name: str, stale_after: float = STALE_AFTER_S):
        self.path = runs / "claims" / f"{name}.claim"
        self.stale_after = stale_after
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def holder(self) -> dict | None:
        """The live claim's contents, or None when there is none or it is stale."""
        try:
            info = json.loads(self.path.read_text())
            age = time.time() - self.path.stat().st_mtime
        except (OSError, ValueError):
            return None  # gone, or half-written by its creator a moment ago (then it is fresh: see acquire)
        if info.get("host") == socket.gethostname() and not pid_alive(int(info.get("pid", 0))):
            return None
        return None if age > self.stale_after else info

    def try_acquire(self) -> bool:
        """Claim the job; False while another live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if self._fresh_or_live():
                    return False
                self._take_over()
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, fh)
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()
            return True
        return False

    def _fresh_or_live(self) -> bool:
        try:
            young = time.time() - self.path.stat().st_mtime < 5.0  # its creator may not have written it yet
        except OSError:
            return False
        return young and self.path.stat().st_size == 0 or self.holder() is not None

    def _take_over(self) -> None:
        """Move a stale claim aside (a rename: of two takers only one moves it); a live one moved by mistake
        (it was renewed between our check and the rename) goes back."""
        aside = temp_name(self.path)
        try:
            os.rename(self.path, aside)
        except OSError:
            return
        try:
            renewed = time.time() - aside.stat().st_mtime < self.stale_after / 2
            if renewed and self._alive_in(aside):
                os.link(aside, self.path)
        except OSError:
            pass
        aside.unlink(missing_ok=True)

    @staticmethod
    def _alive_in(path: Path) -> bool:
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return info.get("host") != socket.gethostname() or pid_alive(int(info.get("pid", 0)))

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
