"""`mfh data download` against a real HTTP server on 127.0.0.1 serving tiny archives laid out like the official ones."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mfh_cli.data.download import download, fetch
from mfh_cli.errors import DataError

# A few rows in the official column layout (see shared/data/kuairand-pure/SOURCE.md beside the repository).
CSV_FILES = {
    "log_standard_4_08_to_4_21_pure.csv": (
        "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,"
        "long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab\n"
        "712,5239,20220425,0,1650812741436,1,0,0,0,0,0,1,61802,49866,0,0,0,0,1\n"
        "13414,6831,20220425,0,1650812934945,1,0,0,0,0,0,0,1184,11933,0,0,0,0,1\n"),
    "user_features_pure.csv": (
        "user_id,user_active_degree,is_lowactive_period,is_live_streamer,is_video_author,register_days\n"
        "712,full_active,0,1,1,799\n13414,2_14_day_new,0,-124,0,14\n"),
    "video_features_basic_pure.csv": (
        "video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,server_width,"
        "server_height,music_id,music_type,tag\n"
        "5239,7349781,NORMAL,2022-04-10,LongImport,0.0,87433.0,720.0,1280.0,9155697141,9.0,39\n"
        "6831,2103883,NORMAL,2022-04-10,Kmovie,0.0,218066.0,720.0,1280.0,6355810746,9.0,2\n"),
}
LICENSE_TEXT = "Creative Commons Attribution-ShareAlike 4.0 International\n"


def add_member(archive: tarfile.TarFile, name: str, payload: bytes = b"", kind: bytes = tarfile.REGTYPE,
               link: str = "") -> None:
    """Add one member (a file, or a link when `kind` says so) to an archive being built."""
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.size = kind, link, len(payload)
    archive.addfile(member, io.BytesIO(payload))


def official_archive(top: str = "KuaiRand-Pure", extra: tuple[tuple[str, bytes, bytes, str], ...] = ()) -> bytes:
    """A tar.gz laid out like the official one: `<top>/LICENSE`, `<top>/data/*.csv`, then `extra` members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        add_member(archive, f"{top}/LICENSE", LICENSE_TEXT.encode())
        for name, text in CSV_FILES.items():
            add_member(archive, f"{top}/data/{name}", text.encode())
        for name, payload, kind, link in extra:
            add_member(archive, name, payload, kind, link)
    return buffer.getvalue()


class ArchiveServer(ThreadingHTTPServer):
    """Serves `body` at any path; honours Range unless told not to; can cut the connection after N bytes."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ArchiveHandler)
        self.body = b""
        self.cut_after: int | None = None
        self.honour_range = True
        self.requests: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/KuaiRand-Pure.tar.gz?download=1"


class ArchiveHandler(BaseHTTPRequestHandler):
    server: ArchiveServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.requests.append(dict(self.headers))
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        body, start = self.server.body, 0
        requested = self.headers.get("Range")
        if requested and self.server.honour_range:
            start = int(requested.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        sent = body[start:] if self.server.cut_after is None else body[start:start + self.server.cut_after]
        self.wfile.write(sent)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        """Silent: the test reads `server.requests` instead."""


@pytest.fixture
def server():
    """A real HTTP server on 127.0.0.1 in a thread, serving the official-like Pure archive."""
    archive_server = ArchiveServer()
    archive_server.body = official_archive()
    thread = threading.Thread(target=archive_server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield archive_server
    archive_server.shutdown()
    archive_server.server_close()


def assert_dataset(folder: Path) -> None:
    """The folder is flat: exactly the archive's CSVs, byte for byte, plus its LICENSE."""
    assert sorted(path.name for path in folder.iterdir()) == sorted([*CSV_FILES, "LICENSE"])
    for name, text in CSV_FILES.items():
        assert (folder / name).read_text() == text
    assert (folder / "LICENSE").read_text() == LICENSE_TEXT


def test_fresh_download_then_noop(run_mfh, server, tmp_path):
    dest = tmp_path / "data"
    first = run_mfh("data", "download", "kuairand-pure", "--dest", str(dest), "--url", server.url, check=True)
    assert first.stdout.strip() == str(dest / "kuairand-pure")
    assert_dataset(dest / "kuairand-pure")
    assert sorted(path.name for path in dest.iterdir()) == ["kuairand-pure"]  # no part, archive or staging
    assert len(server.requests) == 1

    second = run_mfh("data", "download", "kuairand-pure", "--dest", str(dest), "--url", server.url, "-q",
                     check=True)
    assert second.stdout.strip() == str(dest / "kuairand-pure")
    assert len(server.requests) == 1  # the no-op touched no network


def test_kuairand_1k_unpacks_into_its_own_folder(server, tmp_path):
    server.body = official_archive("KuaiRand-1K")
    assert download("kuairand-1k", tmp_path, url=server.url, quiet=True) == tmp_path / "kuairand-1k"
    assert_dataset(tmp_path / "kuairand-1k")


def test_interrupted_transfer_resumes_with_range(run_mfh, server, tmp_path):
    dest = tmp_path / "data"
    server.cut_after = half = len(server.body) // 2
    cut = run_mfh("data", "download", "kuairand-pure", "--dest", str(dest), "--url", server.url, "-q")
    assert cut.returncode != 0
    assert f"interrupted at {half:,} of {len(server.body):,} bytes" in cut.stderr and server.url in cut.stderr
    assert (dest / ".kuairand-pure.part").read_bytes() == server.body[:half]
    assert not (dest / "kuairand-pure").exists()

    server.cut_after = None
    run_mfh("data", "download", "kuairand-pure", "--dest", str(dest), "--url", server.url, "-q", check=True)
    assert server.requests[-1].get("Range") == f"bytes={half}-"
    assert_dataset(dest / "kuairand-pure")
    assert not (dest / ".kuairand-pure.part").exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / ".kuairand-pure.part").write_bytes(b"stale bytes of another transfer")
    server.honour_range = False
    target = download("kuairand-pure", dest, url=server.url, quiet=True)
    assert server.requests[-1].get("Range") == f"bytes={len(b'stale bytes of another transfer')}-"
    assert_dataset(target)


@pytest.mark.parametrize("body", [b"this is not a gzip archive at all" * 10, "truncated"])
def test_corrupt_or_truncated_archive_leaves_nothing(server, tmp_path, body):
    server.body = server.body[: len(server.body) // 2] if body == "truncated" else body
    with pytest.raises(DataError, match=r"^\S+: corrupt or truncated archive \([^\n]+\); deleted it, run") as error:
        download("kuairand-pure", tmp_path, url=server.url, quiet=True)
    assert server.url in str(error.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("member", "kind", "link"), [
    ("../../evil", tarfile.REGTYPE, ""),
    ("/tmp/mfh-test-evil", tarfile.REGTYPE, ""),
    ("KuaiRand-Pure/data/evil", tarfile.SYMTYPE, "../../../../evil"),
    ("KuaiRand-Pure/data/evil", tarfile.LNKTYPE, "../evil"),
])
def test_member_escaping_destination_is_refused(server, tmp_path, member, kind, link):
    server.body = official_archive(extra=((member, b"owned", kind, link),))
    dest = tmp_path / "deep" / "data"
    with pytest.raises(DataError, match=f"refusing archive member '{member}'"):
        download("kuairand-pure", dest, url=server.url, quiet=True)
    assert list(dest.iterdir()) == []
    assert not [path for path in tmp_path.rglob("*evil*")]
    assert not Path("/tmp/mfh-test-evil").exists()


@pytest.mark.parametrize(("member", "kind", "link"), [
    # Inside the archive root as written, outside --dest once a/b/c/d/e/data is moved up to dest/kuairand-pure.
    ("a/b/c/d/e/data/passwords.csv", tarfile.SYMTYPE, "../../../../../../outside.txt"),
    ("a/b/c/d/e/data/copy.csv", tarfile.LNKTYPE, "a/b/c/d/e/LICENSE"),  # even a harmless hard link
])
def test_links_are_refused_in_a_dataset(server, tmp_path, member, kind, link):
    server.body = official_archive(top="a/b/c/d/e", extra=((member, b"", kind, link),))
    dest = tmp_path / "deep" / "data"
    with pytest.raises(DataError, match=f"refusing archive member '{member}': a (symbolic|hard) link .*links are "
                                        "not allowed in a dataset archive"):
        download("kuairand-pure", dest, url=server.url, quiet=True)
    assert list(dest.iterdir()) == []


def test_dest_that_is_a_file_is_one_line(run_mfh, server, tmp_path):
    (tmp_path / "data").write_text("not a folder")
    result = run_mfh("data", "download", "kuairand-pure", "--dest", str(tmp_path / "data"), "--url", server.url)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'data'}: is a file, not a folder (--dest must name a folder)"
    assert server.requests == []


def test_sha256_is_checked(server, tmp_path):
    right = hashlib.sha256(server.body).hexdigest()
    with pytest.raises(DataError, match=f"sha256 {right} differs from the expected {'0' * 64}"):
        download("kuairand-pure", tmp_path / "wrong", url=server.url, quiet=True, sha256="0" * 64)
    assert list((tmp_path / "wrong").iterdir()) == []
    assert_dataset(download("kuairand-pure", tmp_path / "right", url=server.url, quiet=True, sha256=right))


def test_size_differing_from_the_known_size_is_refused(server, tmp_path):
    part = tmp_path / ".kuairand-pure.part"
    with pytest.raises(DataError, match=f"announces {len(server.body):,} bytes, the archive should have "
                                        f"{len(server.body) + 1:,}"):
        fetch(server.url, part, expected_size=len(server.body) + 1, quiet=True)
    assert not part.exists()


def test_incomplete_dataset_folder_is_not_overwritten(server, tmp_path):
    (tmp_path / "kuairand-pure").mkdir()
    (tmp_path / "kuairand-pure" / "user_features_pure.csv").write_text("user_id\n1\n")
    lacking = r"log_standard_\*.csv, video_features_basic_\*.csv;"
    with pytest.raises(DataError, match=f"kuairand-pure: exists but lacks {lacking}"):
        download("kuairand-pure", tmp_path, url=server.url, quiet=True)
    assert server.requests == []
    assert [path.name for path in (tmp_path / "kuairand-pure").iterdir()] == ["user_features_pure.csv"]


def test_network_errors_name_url_and_reason(server, tmp_path):
    missing = server.url.replace("/KuaiRand", "/missing")
    with pytest.raises(DataError, match=r"cannot download .*/missing.* HTTP 404"):
        download("kuairand-pure", tmp_path, url=missing, quiet=True)
    closed = ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
    refused = f"http://127.0.0.1:{closed.server_address[1]}/archive.tar.gz"
    closed.server_close()
    with pytest.raises(DataError, match=rf"cannot download {refused}: .*refused"):
        download("kuairand-pure", tmp_path, url=refused, quiet=True)


def test_unknown_dataset_is_a_usage_error(run_mfh, tmp_path):
    result = run_mfh("data", "download", "kuairand-27k", "--dest", str(tmp_path))
    assert result.returncode == 2
    assert "unknown dataset 'kuairand-27k'" in result.stderr and "kuairand-pure" in result.stderr
