"""Download and unpack the official KuaiRand archives: resumable, verified, atomic, safe against hostile tarballs.

Layout on disk while working, all inside `dest`: `.<name>.part` (the transfer, resumed with an HTTP Range
request), `.<name>.tar.gz` (a complete, verified archive waiting to be unpacked), `.<folder>.extracting` (the
archive being unpacked). Only a complete dataset is renamed to `dest/<folder>`, flat: the folder the KuaiRand
loader reads (`log_standard_*.csv`, `user_features_*.csv`, `video_features_basic_*.csv`, plus the LICENSE).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import posixpath
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from mfh_cli.errors import ConfigError, DataError

ZENODO_RECORD = "https://zenodo.org/records/10439422/files"


@dataclass(frozen=True)
class KnownArchive:
    """An official archive: where it lives, the folder it becomes, and what it must measure (None: unknown)."""

    url: str
    folder: str
    size: int | None = None
    sha256: str | None = None


# Sizes and checksums are not recorded here yet (Zenodo publishes md5 only): then only the size the server
# announces is checked.
ARCHIVES: dict[str, KnownArchive] = {
    "kuairand-pure": KnownArchive(f"{ZENODO_RECORD}/KuaiRand-Pure.tar.gz?download=1", "kuairand-pure"),
    "kuairand-1k": KnownArchive(f"{ZENODO_RECORD}/KuaiRand-1K.tar.gz?download=1", "kuairand-1k"),
}
# What the KuaiRand loader reads; a folder holding one file of each pattern is a complete dataset.
EXPECTED_FILES = ("log_standard_*.csv", "user_features_*.csv", "video_features_basic_*.csv")
CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60


def download(name: str, dest: Path, url: str | None = None, quiet: bool = False,
             sha256: str | None = None) -> Path:
    """Fetch the named KuaiRand archive and unpack it flat into `dest/<folder>`; returns that folder.

    A no-op (no network) when the folder already holds the dataset. `url` replaces the official address (a
    mirror, a test server); the recorded size and checksum then no longer apply, only `sha256` when given.
    """
    archive = ARCHIVES.get(name)
    if archive is None:
        raise ConfigError(f"unknown dataset '{name}': expected one of {', '.join(ARCHIVES)}")
    dest = Path(dest)
    target = dest / archive.folder
    if holds_dataset(target):
        return target
    if target.exists():
        raise DataError(f"{target}: exists but lacks {', '.join(missing_files(target))}; move it away and run "
                        "again")
    official = url is None
    source = archive.url if official else url
    expected_sha256 = sha256 or (archive.sha256 if official else None)
    make_folder(dest)

    complete = dest / f".{name}.tar.gz"
    if not complete.exists():
        part = dest / f".{name}.part"
        fetch(source, part, archive.size if official else None, quiet=quiet, label=name)
        if expected_sha256 is not None:
            verify_sha256(part, expected_sha256, source)
        os.replace(part, complete)
    try:
        extract(complete, target, source)
    except DataError:
        complete.unlink(missing_ok=True)  # a corrupt archive cannot be resumed: the next run starts afresh
        raise
    complete.unlink()
    return target


def make_folder(dest: Path) -> None:
    """Create `dest` (and its parents) unless it exists; a DataError when it cannot (a file there, no rights)."""
    if dest.exists() and not dest.is_dir():
        raise DataError(f"{dest}: is a file, not a folder (--dest must name a folder)")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{dest}: cannot create the folder ({error.strerror})") from None


def holds_dataset(folder: Path) -> bool:
    """Whether `folder` holds one file of each kind the KuaiRand loader reads."""
    return folder.is_dir() and not missing_files(folder)


def missing_files(folder: Path) -> list[str]:
    """The patterns of EXPECTED_FILES that no file in `folder` matches."""
    return [pattern for pattern in EXPECTED_FILES if not any(folder.glob(pattern))]


def fetch(url: str, part: Path, expected_size: int | None, quiet: bool = False, label: str = "") -> None:
    """Stream `url` into `part`, resuming what it already holds; checks the final size, else deletes `part`.

    An interrupted transfer keeps `part` and raises DataError (the next call resumes it).
    """
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    response, offset = _open(url, part.stat().st_size if part.exists() else 0)
    with response:
        announced = response.headers.get("Content-Length")
        total = offset + int(announced) if announced is not None else None
        if expected_size is not None and total is not None and total != expected_size:
            part.unlink(missing_ok=True)
            raise DataError(f"{url}: the server announces {total:,} bytes, the archive should have "
                            f"{expected_size:,}")
        expected = expected_size if expected_size is not None else total
        progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                            disable=quiet)
        received = offset
        with progress, part.open("ab" if offset else "wb") as output:
            task = progress.add_task(f"download {label}", total=expected, completed=offset)
            failure = None
            try:
                while chunk := response.read(CHUNK_BYTES):
                    output.write(chunk)
                    received += len(chunk)
                    progress.update(task, completed=received)
            except (http.client.HTTPException, OSError) as error:
                failure = _reason(error)
    size = part.stat().st_size
    if failure is not None or (expected is not None and size < expected):
        # A short body is an interruption, not a mismatch: keep the part file for the next run to resume.
        of_total = f" of {expected:,}" if expected is not None else ""
        raise DataError(f"download of {url} interrupted at {size:,}{of_total} bytes "
                        f"({failure or 'the connection closed early'}); run the command again to resume")
    if expected is not None and size != expected:
        part.unlink()
        raise DataError(f"{url}: received {size:,} bytes, expected {expected:,}; deleted the partial file")


def _open(url: str, offset: int) -> tuple[http.client.HTTPResponse, int]:
    """Open `url` from byte `offset` on; returns the response and the offset its body really starts at.

    A server that ignores the Range request (200), rejects it (416) or answers another range restarts at 0.
    """
    headers = {"User-Agent": "mfh-cli"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=TIMEOUT_SECONDS)
    except HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            return _open(url, 0)
        raise DataError(f"cannot download {url}: HTTP {error.code} {error.reason}") from None
    except (URLError, http.client.HTTPException, OSError) as error:
        raise DataError(f"cannot download {url}: {_reason(error)}") from None
    if not offset or response.status != 206:
        return response, 0
    # Content-Range: bytes <first>-<last>/<total>
    content_range = response.headers.get("Content-Range", "")
    first = content_range.removeprefix("bytes ").split("-", 1)[0]
    if first.strip() == str(offset):
        return response, offset
    response.close()
    return _open(url, 0)


def _reason(error: BaseException) -> str:
    """The most specific one-line reason of a network error."""
    reason = getattr(error, "reason", None) or error
    return " ".join(str(reason).split()) or type(error).__name__


def verify_sha256(path: Path, expected: str, source: str) -> None:
    """Check the sha256 of `path`; a mismatch deletes the file and raises DataError naming both digests."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(CHUNK_BYTES):
            digest.update(block)
    if digest.hexdigest() != expected.lower():
        path.unlink()
        raise DataError(f"{source}: sha256 {digest.hexdigest()} differs from the expected {expected.lower()}; "
                        "deleted the download")


def extract(archive_path: Path, target: Path, source: str) -> None:
    """Unpack `archive_path` into a staging folder beside `target`, flatten it, then rename it into place.

    Refuses links and members that would leave the staging folder; anything unreadable becomes a DataError, and the
    staging folder is removed whatever happens.
    """
    staging = target.parent / f".{target.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)  # a leftover of a killed run
    staging.mkdir()
    try:
        _unpack(archive_path, staging, source)
        dataset = _dataset_folder(staging, source)
        _keep_license(staging, dataset)
        os.replace(dataset, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(archive_path: Path, staging: Path, source: str) -> None:
    """Extract every member into `staging`; an unreadable archive becomes a DataError."""
    try:
        with tarfile.open(archive_path, "r:*") as archive:
            # The "data" filter is a second line of defence behind the explicit member check.
            archive.extractall(staging, members=_safe_members(archive, source), filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DataError(f"{source}: corrupt or truncated archive ({_reason(error)}); deleted it, run the "
                        "command again to download it afresh") from None


def _safe_members(archive: tarfile.TarFile, source: str) -> Iterator[tarfile.TarInfo]:
    """The archive's members, read lazily; raises DataError at the first one that could write outside."""
    for member in archive:
        problem = _member_problem(member)
        if problem is not None:
            raise DataError(f"{source}: refusing archive member '{member.name}': {problem}")
        yield member


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Why a member is unsafe to unpack (None when it is safe)."""
    # Links are refused outright: a dataset needs none, and a link checked against the archive root could still
    # point outside `dest` once the data folder is moved up (flattened) into place.
    if member.issym() or member.islnk():
        return f"a {'symbolic' if member.issym() else 'hard'} link (to '{member.linkname}'); links are not allowed " \
               "in a dataset archive"
    if not (member.isfile() or member.isdir()):
        return "not a regular file or folder"
    if _leaves_root(member.name):
        return "absolute path or '..' leaving the destination"
    return None


def _leaves_root(path: str) -> bool:
    """Whether an archive path is absolute or climbs above the archive root with '..'."""
    if posixpath.isabs(path) or os.path.isabs(path):
        return True
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _dataset_folder(staging: Path, source: str) -> Path:
    """The one unpacked folder holding the log files (`KuaiRand-Pure/data` in the official archives)."""
    folders = {path.parent for path in staging.rglob(EXPECTED_FILES[0])}
    if len(folders) != 1:
        found = "no folder" if not folders else f"{len(folders)} folders"
        raise DataError(f"{source}: archive has {found} holding {EXPECTED_FILES[0]}, expected exactly one")
    folder = folders.pop()
    missing = missing_files(folder)
    if missing:
        raise DataError(f"{source}: archive folder {folder.relative_to(staging)} lacks {', '.join(missing)}")
    return folder


def _keep_license(staging: Path, dataset: Path) -> None:
    """Move the archive's LICENSE (beside the data folder in the official archives) into the dataset folder."""
    for path in sorted(staging.rglob("LICENSE*")):
        destination = dataset / path.name
        if path.is_file() and path.parent != dataset and not destination.exists():
            os.replace(path, destination)
