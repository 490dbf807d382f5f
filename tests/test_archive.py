"""Downloads, checksums, safe extraction and ``prepare``: all or nothing, never outside dest."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from _fixtures import evil_tar, make_cars, make_cub, make_sop, make_tgz, serve, truncated_response

from mobile_distill.data.archive import download_file, safe_extract, verify_checksum
from mobile_distill.data.prepare import SOURCES, prepare
from mobile_distill.errors import ConfigError, DataError, DownloadError, RegistryError


@pytest.fixture(scope="module")
def cub_tgz(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("cub_src")
    make_cub(work)
    return make_tgz(work / "CUB_200_2011", work / "CUB_200_2011.tgz")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _listing(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- download ------------------------------------------------------------------------------------


def test_download_ok_with_checksum(tmp_path, cub_tgz):
    body = cub_tgz.read_bytes()
    with serve({"/CUB.tgz": body}) as base:
        out = download_file(f"{base}/CUB.tgz", tmp_path / "dl" / "CUB.tgz",
                            checksum=hashlib.sha256(body).hexdigest(), progress=False, timeout=5)
    assert out.read_bytes() == body
    assert _listing(tmp_path / "dl") == ["CUB.tgz"]  # no temp file left beside it


def test_download_checksum_mismatch_leaves_nothing(tmp_path, cub_tgz):
    dest = tmp_path / "dl" / "CUB.tgz"
    with serve({"/CUB.tgz": cub_tgz.read_bytes()}) as base:
        mismatch = r"checksum mismatch for CUB\.tgz from http.*expected md5 0{32}, got [0-9a-f]{32}"
        with pytest.raises(DownloadError, match=mismatch):
            download_file(f"{base}/CUB.tgz", dest, checksum="0" * 32, algorithm="md5", progress=False, timeout=5)
    assert _listing(tmp_path / "dl") == []


def test_download_interrupted_leaves_nothing(tmp_path, cub_tgz):
    dest = tmp_path / "dl" / "CUB.tgz"
    with serve({"/CUB.tgz": (cub_tgz.read_bytes(), truncated_response)}) as base:
        with pytest.raises(DownloadError, match=r"interrupted|closed early") as e:
            download_file(f"{base}/CUB.tgz", dest, progress=False, timeout=5)
    assert "--archive" in str(e.value) and "/CUB.tgz" in str(e.value)
    assert _listing(tmp_path / "dl") == []


def test_download_404(tmp_path):
    with serve({}) as base:
        with pytest.raises(DownloadError, match=r"HTTP 404"):
            download_file(f"{base}/missing.tgz", tmp_path / "x.tgz", progress=False, timeout=5)
    assert _listing(tmp_path) == []


def test_download_unreachable(tmp_path):
    with serve({}) as base:
        port = base.rsplit(":", 1)[1]
    # The server is shut down: nothing listens on that port any more.
    with pytest.raises(DownloadError, match="cannot reach the server"):
        download_file(f"http://127.0.0.1:{port}/x.tgz", tmp_path / "x.tgz", progress=False, timeout=5)
    assert _listing(tmp_path) == []


def test_verify_checksum(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"hello")
    verify_checksum(f, hashlib.md5(b"hello").hexdigest().upper(), "md5")
    with pytest.raises(DownloadError, match=r"f\.bin.*expected sha256"):
        verify_checksum(f, "ab" * 32, "sha256")
    with pytest.raises(ConfigError, match="unknown checksum algorithm"):
        verify_checksum(f, "ab", "nope")


# --- safe_extract --------------------------------------------------------------------------------


def test_extract_tgz_and_zip(tmp_path, cub_tgz):
    out = safe_extract(cub_tgz, tmp_path / "a")
    assert (out / "CUB_200_2011" / "images.txt").is_file()
    z = tmp_path / "d.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("pkg/a.txt", "a")
    assert (safe_extract(z, tmp_path / "b") / "pkg" / "a.txt").read_text() == "a"
    assert _listing(tmp_path) == ["a", "b", "d.zip"]


def _symlink(name, target):
    m = tarfile.TarInfo(name)
    m.type, m.linkname = tarfile.SYMTYPE, target
    return m


def _hardlink(name, target):
    m = tarfile.TarInfo(name)
    m.type, m.linkname = tarfile.LNKTYPE, target
    return m


def _device(name):
    m = tarfile.TarInfo(name)
    m.type = tarfile.CHRTYPE
    return m


@pytest.mark.parametrize(
    "member, why",
    [
        (tarfile.TarInfo("../evil.txt"), "'..' component"),
        (tarfile.TarInfo("pkg/../../evil.txt"), "'..' component"),
        (tarfile.TarInfo("/tmp/evil.txt"), "absolute path"),
        (_symlink("pkg/link", "../../outside"), "symlink pointing outside"),
        (_symlink("pkg/link", "/etc/passwd"), "symlink to an absolute path"),
        (_hardlink("pkg/hard", "../outside"), "hard link pointing outside"),
        (_device("pkg/dev"), "device file"),
    ],
)
def test_extract_refuses_unsafe_tar_member(tmp_path, member, why):
    archive = evil_tar(tmp_path / "evil.tgz", member)
    dest = tmp_path / "out" / "dest"
    with pytest.raises(DataError, match=rf"evil\.tgz: member '{member.name}' .*{why}"):
        safe_extract(archive, dest)
    assert _listing(tmp_path / "out") == []  # nothing extracted, no temp folder
    assert not (tmp_path / "evil.txt").exists()


def test_extract_refuses_unsafe_zip_member(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "ok")
        zf.writestr("../evil.txt", "evil")
    with pytest.raises(DataError, match=r"member '\.\./evil\.txt' contains a '\.\.'"):
        safe_extract(archive, tmp_path / "out" / "dest")
    assert _listing(tmp_path / "out") == []


def test_extract_refuses_symlink_chain_escape(tmp_path):
    # Each target looks inside on its own ("d/q/.." is "d"), but d/q points at the root, so
    # d/l really points at the root's parent: only the 'data' filter's realpath check sees it.
    archive = evil_tar(tmp_path / "chain.tgz", _symlink("d/q", ".."), _symlink("d/l", "q/.."))
    with pytest.raises(DataError, match=r"refusing to extract .*chain\.tgz: member 'd/l'"):
        safe_extract(archive, tmp_path / "out" / "dest")
    assert _listing(tmp_path / "out") == []


def test_extract_allows_symlink_inside(tmp_path):
    archive = evil_tar(tmp_path / "ok.tgz", _symlink("pkg/link", "ok.txt"))
    out = safe_extract(archive, tmp_path / "dest")
    assert (out / "pkg" / "link").read_text() == "ok"


@pytest.mark.parametrize("suffix", [".tgz", ".zip"])
def test_extract_truncated_archive(tmp_path, cub_tgz, suffix):
    if suffix == ".tgz":
        data = cub_tgz.read_bytes()
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("a.bin", bytes(range(256)) * 64)
        data = buf.getvalue()
    archive = tmp_path / f"cut{suffix}"
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"cut\{suffix}: the archive is corrupt or truncated.*download it again"):
        safe_extract(archive, tmp_path / "out" / "dest")
    assert _listing(tmp_path / "out") == []


def test_extract_refuses_existing_dest(tmp_path, cub_tgz):
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="already exists"):
        safe_extract(cub_tgz, tmp_path / "dest")
    assert _listing(tmp_path / "dest") == ["keep.txt"]


def test_extract_unknown_type(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"plain bytes")
    with pytest.raises(DataError, match=r"not a \.tar"):
        safe_extract(f, tmp_path / "dest")


# --- prepare -------------------------------------------------------------------------------------


def test_prepare_cub_download_end_to_end(tmp_path, cub_tgz, monkeypatch):
    monkeypatch.setenv("MDISTILL_HOME", str(tmp_path / "home"))
    with serve({"/CUB_200_2011.tgz": cub_tgz.read_bytes()}) as base:
        dest = prepare("cub", download=True, url=f"{base}/CUB_200_2011.tgz", checksum=_md5(cub_tgz), progress=False)
    assert dest == tmp_path / "home" / "data" / "cub"
    assert _listing(dest.parent) == ["cub"]  # downloads and temp folders are gone

    from mobile_distill.data.cub import cub

    splits = cub(None)
    assert len(splits.train) == 9 and len(splits.test) == 9


def test_prepare_cub_bad_checksum_leaves_nothing(tmp_path, cub_tgz):
    dest = tmp_path / "data" / "cub"
    with serve({"/CUB_200_2011.tgz": cub_tgz.read_bytes()}) as base:
        with pytest.raises(DownloadError, match="checksum mismatch"):
            prepare("cub", download=True, url=f"{base}/CUB_200_2011.tgz", dest=dest, progress=False)
    assert _listing(dest.parent) == []


def test_prepare_cars_from_folder_and_from_two_archives(tmp_path):
    src = make_cars(tmp_path / "src")
    tgz = make_tgz(src / "car_ims", tmp_path / "car_ims.tgz")
    annos = src / "cars_annos.mat"
    sums = {"car_ims.tgz": _md5(tgz), "cars_annos.mat": _md5(annos)}
    (tmp_path / "both").mkdir()
    for f in (tgz, annos):
        (tmp_path / "both" / f.name).write_bytes(f.read_bytes())

    from mobile_distill.data.cars import cars

    a = prepare("cars", archive=tmp_path / "both", dest=tmp_path / "a", checksum=sums)
    b = prepare("cars", archive=[annos, tgz], dest=tmp_path / "b", checksum=sums)
    for dest in (a, b):
        assert sorted(p.name for p in dest.iterdir()) == ["car_ims", "cars_annos.mat"]
        assert len(cars(dest).train) == 9
    with pytest.raises(DataError, match=r"needs car_ims\.tgz, cars_annos\.mat; cars_annos\.mat not found"):
        prepare("cars", archive=tgz, dest=tmp_path / "c", checksum=sums)
    with pytest.raises(ConfigError, match="per file name"):
        prepare("cars", archive=tmp_path / "both", dest=tmp_path / "c", checksum="0" * 32)


def test_prepare_sop_zip_and_wrong_archive(tmp_path, cub_tgz):
    src = make_sop(tmp_path / "src")
    z = tmp_path / "Stanford_Online_Products.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src.parent).as_posix())
    dest = prepare("sop", archive=z, dest=tmp_path / "sop", checksum=_md5(z))
    assert (dest / "Stanford_Online_Products" / "Ebay_train.txt").is_file()
    # A CUB archive given for SOP: unpacks fine, fails the layout check, leaves nothing.
    with pytest.raises(DataError, match="unpacked, but not into the sop layout: missing Ebay_train.txt"):
        prepare("sop", archive=cub_tgz, dest=tmp_path / "wrong", checksum=_md5(cub_tgz))
    assert not (tmp_path / "wrong").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_prepare_arguments(tmp_path, cub_tgz):
    with pytest.raises(RegistryError, match="prepare knows: cars, cub, sop"):
        prepare("mnist", archive=cub_tgz)
    with pytest.raises(ConfigError, match="either --archive"):
        prepare("cub")
    with pytest.raises(ConfigError, match="either --archive"):
        prepare("cub", archive=cub_tgz, download=True)
    with pytest.raises(DownloadError, match=r"expected md5 97eceeb196236b17998738112f37df78"):
        prepare("cub", archive=cub_tgz, dest=tmp_path / "cub")  # the official md5 applies
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DataError, match="already exists"):
        prepare("cub", archive=cub_tgz, dest=tmp_path / "full", checksum=_md5(cub_tgz))


def test_sources_table_is_complete():
    for name, files in SOURCES.items():
        assert sum(f.unpack for f in files) == 1, name
        for f in files:
            assert f.md5 is None or len(f.md5) == 32
            assert f.url.startswith(("http://", "https://"))
