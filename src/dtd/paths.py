"""Where commands write: output checks made before any work, run folders, and the run lock.

Every command that writes checks its destination first (``check_output_file`` / ``check_output_dir``),
so a folder where a file belongs, a path under a regular file or a read-only folder is one
DtdError instead of a traceback after minutes of work. ``--force`` may only replace a folder that
``is_run_dir`` recognises; ``RunLock`` keeps two processes from training into one folder.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from dtd.errors import DtdError

RUN_MARKER = ".dtd-run"  # written into every run folder dtd creates
LOCK_FILE = ".lock"  # inside a run folder while a process trains into it (holds the PID)
CONFIG_FILE = "config.yaml"
CKPT_DIR = "checkpoints"


def temp_name(path: Path) -> Path:
    """A temporary name next to `path`, unique per process and call (pid + random), with path's suffix
    (writers that go by it work): two processes writing one file never share a temporary file."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` to a temporary file next to `path`, then rename: readers never see a half-written
    file, and a failed write leaves none behind. A failed write (a full disk: torch.save raises
    RuntimeError, not OSError) is one DtdError naming `path`."""
    write_all_atomic({Path(path): write})
    return Path(path)


def write_all_atomic(writers: dict[Path, Callable[[Path], Any]]) -> None:
    """Several files as one: every `write(tmp)` first, then the renames, so a failure (a full disk)
    leaves none of them half-written and no temporary file behind."""
    tmps = {Path(path): temp_name(Path(path)) for path in writers}
    try:
        for path, write in writers.items():
            try:
                write(tmps[Path(path)])
            except (OSError, RuntimeError) as exc:
                if isinstance(exc, RuntimeError) and not _is_write_failure(exc):
                    raise  # a bug (a failed trace, say), not the disk: keep its traceback
                raise DtdError(f"{path}: could not write it ({write_error_reason(exc)})") from None
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


_WRITE_WORDS = ("write", "disk", "space", "file too large", "unexpected pos")  # torch's zip writer: "unexpected pos"


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """exc and the exceptions behind it (__cause__, __context__), each once."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop(0)
        if cur is not None and all(cur is not seen for seen in out):
            out.append(cur)
            todo += [cur.__cause__, cur.__context__]
    return out


def _is_write_failure(exc: BaseException) -> bool:
    """A RuntimeError that a failed write caused (an OSError behind it, or a writer's own words for it)."""
    return any(isinstance(e, OSError) for e in _exception_chain(exc)) or any(
        word in str(exc).lower() for word in _WRITE_WORDS)


def write_error_reason(exc: BaseException) -> str:
    """The OS's reason for a failed write, also when a library wrapped it in a RuntimeError (torch.save
    writing to a file object keeps the OSError as the RuntimeError's context)."""
    for cur in _exception_chain(exc):
        if isinstance(cur, OSError) and cur.strerror:
            return cur.strerror
    text = str(exc).strip()
    for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO):
        if os.strerror(code).lower() in text.lower():
            return os.strerror(code)
    return text.splitlines()[0][:200] if text else type(exc).__name__


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))


# ---- output paths ----------------------------------------------------------------------------


def _existing_ancestor(path: Path) -> Path:
    """The nearest part of `path` (itself or a parent) that exists; DtdError if that is not a folder."""
    probe = path
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: writing through it would fail late
            raise DtdError(f"{probe}: a broken symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        raise DtdError(f"{path}: cannot be created, {probe} is a file, not a folder")
    return probe


def _check_writable(folder: Path, what: str) -> None:
    """A real probe: os.access is not enough (read-only mounts, ACLs, root in containers)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DtdError(f"{what}: the folder {folder} is not writable")
    try:
        fd, name = tempfile.mkstemp(prefix=".dtd-probe-", dir=folder)
    except OSError as exc:
        raise DtdError(f"{what}: cannot write in {folder} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(name)


def check_output_file(path: str | Path, what: str = "output") -> Path:
    """A file the command will write (replacing an existing file is fine): its folder must exist or be
    creatable and writable, and the path must not be a folder. Returns it; creates nothing."""
    raw, path = str(path), Path(path).expanduser()
    if not raw.strip():
        raise DtdError(f"{what}: an empty path")
    if raw.endswith(("/", os.sep)) or path.name in ("", ".", ".."):
        raise DtdError(f"{what}: {path} names a folder; give a file name")
    if path.is_dir():
        raise DtdError(f"{what}: {path} is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise DtdError(f"{what}: {path} exists and is not a regular file")
    _refuse_checkpoint_folder(path, what)
    folder = _existing_ancestor(path.parent)
    _check_writable(folder, what)  # files are replaced by a rename, so the folder is what counts
    return path


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """A folder the command will create or write into: not a file, creatable, writable. Creates nothing."""
    if not str(path).strip():
        raise DtdError(f"{what}: an empty path")
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise DtdError(f"{what}: {path} exists and is not a folder")
    _refuse_checkpoint_folder(path, what)
    _check_writable(_existing_ancestor(path), what)
    return path


def _refuse_checkpoint_folder(path: Path, what: str) -> None:
    """A run's checkpoints/ folder is the trainer's alone: an export, a JSON or a figure written there can
    replace the run's only checkpoint (issue #32), so no command's output may go inside one."""
    resolved = path.resolve()
    for folder in (resolved, *resolved.parents):
        if folder.name == CKPT_DIR and is_run_dir(folder.parent):
            raise DtdError(f"{what}: {path} is inside the run {folder.parent}'s {CKPT_DIR}/ folder, which holds its "
                           "checkpoints; choose a path outside it")


def make_dirs(path: Path) -> list[Path]:
    """mkdir -p that returns the folders it created (deepest last), so a failure can remove them."""
    made = []
    for folder in reversed([path, *path.parents]):
        if not folder.exists():
            folder.mkdir()
            made.append(folder)
    return made


def remove_made(made: list[Path]) -> None:
    """Remove folders make_dirs created, deepest first, as long as they are empty."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:
            break


# ---- run folders -----------------------------------------------------------------------------


def auto_run_name(what: str, dataset: str, seed: int) -> str:
    """<what>-<dataset>-s<seed>-<timestamp> (both trainers): unique, so repeated runs never collide."""
    data = dataset.replace("embedded:", "embedded-").replace("/", "-").replace("+", "_")
    data = Path(data).stem if os.sep in dataset else data
    return f"{what.replace('/', '-')}-{data}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_run_name(name: str, flag: str = "--run_name") -> str:
    """A run name is one plain folder name: no separators, not '.' or '..', nothing hidden."""
    if name in (".", "..") or "/" in name or "\\" in name or os.sep in name or "\0" in name:
        raise DtdError(f"{flag}: {name!r} is not a plain folder name (no '/', '.' or '..')")
    if name.startswith(".") or name != name.strip():
        raise DtdError(f"{flag}: {name!r} is not a plain folder name (no leading dot or spaces)")
    if not name.isprintable():
        raise DtdError(f"{flag}: {name!r} is not a plain folder name (printable characters only, no newline or "
                       "control characters)")
    return name


def is_run_dir(path: str | Path) -> bool:
    """True for a folder dtd made for a run: its marker, or (runs from before the marker) a dtd
    config.yaml next to a checkpoints/ folder. Anything else is never replaced by --force."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    if (path / RUN_MARKER).is_file():
        return True
    if not ((path / CONFIG_FILE).is_file() and (path / CKPT_DIR).is_dir()):
        return False
    import yaml

    try:  # a run's config.yaml is the full TrainConfig / IQLConfig: it names a dataset and its fields
        config = yaml.safe_load((path / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and "dataset" in config and "seed" in config and "out_dir" in config


def has_checkpoint(path: str | Path) -> bool:
    folder = Path(path) / CKPT_DIR
    return folder.is_dir() and any(p.suffix == ".pt" for p in folder.iterdir())


def check_run_target(out_dir: str | Path, name: str, force: bool, hint: str) -> Path:
    """out_dir/name if a new run may be written there, else DtdError; changes nothing on disk.

    An existing folder is refused unless it is a dtd run and `force` is given, or it is a run that
    never saved a checkpoint (a failed start holds nothing to lose). A run that another live process
    is training is always refused.
    """
    check_run_name(name)
    out = check_output_dir(out_dir, "--out_dir")
    path = out / name
    if path.resolve() in (out.resolve(), *out.resolve().parents) or path.resolve().parent != out.resolve():
        raise DtdError(f"--run_name {name!r}: the run folder must lie directly inside {out}")
    if path.exists() or path.is_symlink():
        if not is_run_dir(path):
            raise DtdError(f"{path}: exists and is not a dtd run folder; not touching it (choose another --run_name)")
        RunLock(path).check_free()
        if has_checkpoint(path) and not force:
            raise DtdError(f"{path}: run folder exists ({hint})")
        _check_writable(path, "run folder")
    return path


def prepare_run_dir(out_dir: str | Path, name: str, force: bool, hint: str) -> tuple[Path, "RunLock", list[Path]]:
    """Create (or replace, as check_run_target allows) out_dir/name as an empty, locked run folder.

    Returns (folder, the held lock, the folders this call created).
    """
    path = check_run_target(out_dir, name, force, hint)
    made = make_dirs(path.parent)
    try:
        if path.exists():
            lock = RunLock(path).acquire()
            try:
                if has_checkpoint(path) and not force:  # checked again under the lock
                    raise DtdError(f"{path}: run folder exists ({hint})")
                _clear_run_dir(path)
            except BaseException:
                lock.release()
                raise
        else:
            try:
                path.mkdir()
            except FileExistsError:
                raise DtdError(f"{path}: another process just created this run folder") from None
            made.append(path)
            lock = RunLock(path).acquire()
        (path / RUN_MARKER).write_text("a dtd run folder: dtd train --force may replace it\n")
        (path / CKPT_DIR).mkdir(exist_ok=True)
    except BaseException:
        if path in made:
            shutil.rmtree(path, ignore_errors=True)
        remove_made(made)
        raise
    return path, lock, made


def _clear_run_dir(path: Path) -> None:
    """Empty a run folder for --force, keeping the lock this process holds in it."""
    for child in path.iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def discard_failed_run(path: Path, lock: "RunLock", made: list[Path], keep_checkpoints: bool = True) -> None:
    """After a run failed before its first checkpoint (or, with keep_checkpoints=False, at all): remove
    its folder and the parents this run created, so the failure leaves nothing that blocks the next try."""
    if keep_checkpoints and has_checkpoint(path):
        return
    shutil.rmtree(path, ignore_errors=True)
    lock.release()
    remove_made([m for m in made if m != path])


# ---- the run lock ----------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class RunLock:
    """run_dir/.lock: the PID of the process training into the folder.

    Taken with flock where the OS has it (the kernel drops it when the process dies, however it
    dies), else by exclusive creation; a lock file whose process is gone is stale and taken over.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def _refuse(self) -> None:
        try:
            pid = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        who = f"process {pid}" if pid else "another process"
        raise DtdError(f"{self.path.parent}: {who} is training this run right now (its lock {self.path}); "
                       "wait for it or stop it first")

    def check_free(self) -> None:
        """DtdError when a live process holds this lock; takes nothing and creates no file."""
        if not self.path.exists():
            return
        try:
            import fcntl
        except ImportError:
            try:
                pid = int(self.path.read_text().strip() or 0)
            except (OSError, ValueError):
                return
            if pid_alive(pid) and pid != os.getpid():
                self._refuse()
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self._refuse()
        os.close(fd)

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # no flock: exclusive creation with a PID check
            return self._acquire_excl()
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    self._refuse()
                raise DtdError(f"{self.path}: cannot lock ({exc.strerror})") from None
            try:  # the file may have been unlinked by its releasing owner between open and flock
                same = os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except OSError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            return self
        raise DtdError(f"{self.path}: could not take the run lock")

    def _acquire_excl(self) -> "RunLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid_alive(pid) and pid != os.getpid():
                    self._refuse()
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            return self
        self._refuse()
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


# ---- temporary folders ------------------------------------------------------------------------


def temp_dir(parent: Path, prefix: str) -> Path:
    """A hidden temporary folder in `parent` whose name carries this PID, so a later start can tell
    one left by a killed process (``clean_stale_temp``) from one a live process is filling."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def clean_stale_temp(parent: Path, prefix: str) -> list[Path]:
    """Remove `prefix`<pid>-* folders in `parent` whose process is dead; returns what was removed."""
    removed = []
    if not parent.is_dir():
        return removed
    for child in parent.glob(f"{prefix}*"):
        pid_text = child.name[len(prefix):].split("-", 1)[0]
        if not child.is_dir() or not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        shutil.rmtree(child, ignore_errors=True)
        removed.append(child)
    return removed
