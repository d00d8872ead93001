"""Minari I/O for both collectors (``dtd data collect``, ``dtd data collect-maze``): where a new
dataset goes, and writing it atomically and compactly.

A dataset is built by Minari in a temporary Minari root next to its destination, compacted, then
renamed into place: a killed collector leaves no half-written dataset, only a temporary folder
that the next run removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from dtd.config import SEED_RANGE
from dtd.errors import DtdError
from dtd.paths import check_output_dir, clean_stale_temp, make_dirs, remove_made, temp_dir, write_error_reason


@contextlib.contextmanager
def minari_root(root: Path):
    """Point Minari (which reads MINARI_DATASETS_PATH) at `root` for the duration."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def check_collect_args(steps: int, noise: float, seed: int, message: str = "--{}: must be {}, got {}") -> None:
    """The collectors' common arguments, before any work; `message`.format(flag, rule, value) is the error."""
    if steps < 1:
        raise DtdError(message.format("steps", ">= 1", steps))
    if not noise >= 0 or not np.isfinite(noise):  # also refuses nan
        raise DtdError(message.format("noise", ">= 0", noise))
    rule, ok = SEED_RANGE
    if not ok(seed):
        raise DtdError(message.format("seed", rule, seed))


def dataset_destination(dataset_id: str, out: str | Path | None, what: str = "",
                        exists: str = "{}: already exists") -> Path:
    """The folder a new dataset goes to: `out`, else <Minari root>/<dataset_id>; must not exist yet,
    and its parent must be creatable and writable (checked now, before the rollout). `what` prefixes
    the error messages (e.g. "collect-maze: "), `exists`.format(dest) starts the one for an existing folder."""
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.storage.datasets_root_dir import get_dataset_path

    try:
        parse_dataset_id(dataset_id)
    except ValueError as exc:
        raise DtdError(f"{what}--dataset-id: {exc}") from None
    if out is not None and not str(out).strip():
        raise DtdError(f"{what}--out: an empty path")
    dest = Path(get_dataset_path(dataset_id)) if out is None else Path(out).expanduser()
    dest = dest.resolve()  # Minari needs an absolute root
    if dest.exists() or dest.is_symlink():
        raise DtdError(f"{what}{exists.format(dest)}; remove it or choose another --out/--dataset-id")
    check_output_dir(dest.parent, f"{what}dataset destination")
    return dest


def write_dataset(buffers: list, dest: Path, dataset_id: str, env, temp_prefix: str, compress: bool = True,
                  **metadata) -> Path:
    """Write minari EpisodeBuffers as a Minari dataset at `dest`, atomically.

    minari.create_dataset_from_buffers builds it in a temporary Minari root (`temp_prefix` + a
    unique suffix) next to `dest`; the finished folder is then compacted (`compress`) and renamed
    into place. `metadata`: keyword arguments of create_dataset_from_buffers (algorithm_name,
    ref_min_score, description, ...).
    """
    import minari
    from minari.dataset.minari_storage import MinariStorage

    made = make_dirs(dest.parent)
    clean_stale_temp(dest.parent, temp_prefix)  # left by a killed collector
    tmp_root = temp_dir(dest.parent, temp_prefix)
    made_ds = tmp_root / dataset_id
    done = False

    def write() -> None:
        with minari_root(tmp_root), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # author_email / eval_env advice
            minari.create_dataset_from_buffers(dataset_id, buffers, env=env, author="dtd", **metadata)
        if compress:
            compress_hdf5(made_ds / "data" / "main_data.hdf5")
            storage = MinariStorage.read(made_ds / "data")
            storage.update_metadata({"dataset_size": storage.get_size()})

    try:
        run_isolated(write, f"{dest}: could not write the dataset")
        os.rename(made_ds, dest)
        done = True
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
        if not done:
            remove_made(made)
    return dest


def run_isolated(write: Callable[[], None], failure: str) -> None:
    """Run `write` in a forked child and raise one DtdError (`failure` and the reason) if it fails.

    h5py does not survive a failed write: on a full disk HDF5 prints an error stack per open object (about
    a thousand lines) and the process then segfaults while closing them. The child keeps that away from
    the command: its stderr goes to /dev/null, it reports the first error's reason through a pipe and
    leaves with os._exit, before h5py tears anything down. Without fork, `write` runs here."""
    if not hasattr(os, "fork"):
        write()
        return
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the parent's code
        code, told = 1, []

        def tell(exc: BaseException | None) -> None:  # the first error only: the ones after it are its echoes
            if exc is not None and not told:
                told.append(os.write(write_fd, write_error_reason(exc).encode(errors="replace")[:500]))

        try:
            os.close(read_fd)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            sys.unraisablehook = lambda u: tell(u.exc_value)  # h5py's failing deallocs, before it may crash
            write()
            code = 0
        except BaseException as exc:
            tell(exc)
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        reason = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        reason = reason or f"the writer died of signal {signal.Signals(os.WTERMSIG(status)).name}"
    if status != 0:
        raise DtdError(f"{failure} ({reason or 'unknown error'})")


def compress_hdf5(path: Path) -> None:
    """Rewrite Minari's hdf5 compactly: gzip+shuffle, float64 stored as float32 (dtd reads float32
    anyway) and the newest hdf5 object format (much smaller per-episode overhead).

    Readers, minari.load_dataset included, decompress transparently.
    """
    import h5py

    tmp = path.with_name(path.name + ".tmp")

    def copy(src: h5py.Group, dst: h5py.Group) -> None:
        dst.attrs.update(src.attrs)
        for name, item in src.items():
            if isinstance(item, h5py.Group):
                copy(item, dst.create_group(name))
                continue
            data = item[()]
            if data.dtype == np.float64:
                data = data.astype(np.float32)
            kw = dict(compression="gzip", compression_opts=9, shuffle=True) if np.ndim(data) else {}
            dst.create_dataset(name, data=data, **kw).attrs.update(item.attrs)

    with h5py.File(path, "r") as src, h5py.File(tmp, "w", libver="latest") as dst:
        copy(src, dst)
    os.replace(tmp, path)
