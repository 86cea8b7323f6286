"""Named datasets: lookup in the data homes, shared-data fallbacks, clear not-found errors, checked download."""

from __future__ import annotations

import hashlib
import shutil
import zipfile

import pytest

from recvae.data import datasets
from recvae.data.datasets import ChecksumError, DatasetNotFoundError, DatasetSpec, Remote


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RECVAE_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_official_layout_is_found(home):
    touch(home / "ml-100k" / "u.data")
    src = datasets.resolve("ml-100k")
    expected = ("movielens", str(home / "ml-100k" / "u.data"), "ml-100k", False)
    assert (src.format, src.path, src.dataset, src.implicit) == expected
    touch(home / "ml-10M100K" / "ratings.dat")
    assert datasets.resolve("ml-10m").path.endswith("ml-10M100K/ratings.dat")


def test_ml1m_falls_back_to_the_implicit_parquet_but_prefers_ratings_dat(home):
    touch(home / "ml-1m" / "ratings_implicit.parquet")
    src = datasets.resolve("ml-1m")
    assert (src.format, src.implicit, src.user_col, src.item_col, src.rating_col) == (
        "parquet", True, "userId", "movieId", None)
    touch(home / "ml-1m" / "ratings.dat")
    src = datasets.resolve("ml-1m")
    assert (src.format, src.implicit) == ("movielens", False)


def test_shared_layouts_of_split_datasets(home):
    touch(home / "ml-1m" / "pro_sg" / "train.csv")
    touch(home / "gowalla-lightgcn" / "train.txt")
    assert datasets.resolve("ml-1m-pro-sg").format == "pro_sg"
    assert datasets.resolve("gowalla").path == str(home / "gowalla-lightgcn")
    touch(home / "gowalla" / "train.txt")  # the official folder name wins
    assert datasets.resolve("gowalla").path == str(home / "gowalla")


def test_cache_dir_is_searched_after_the_data_home(home, tmp_path):
    touch(tmp_path / "cache" / "recvae" / "ml-20m" / "ratings.csv")
    assert datasets.cache_dir() == tmp_path / "cache" / "recvae"
    assert datasets.resolve("ml-20m").path == str(tmp_path / "cache" / "recvae" / "ml-20m" / "ratings.csv")


def test_default_cache_dir_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert datasets.cache_dir() == tmp_path / ".cache" / "recvae"


def test_not_found_names_where_it_looked_and_how_to_get_it(home, tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.resolve("ml-20m")
    msg = str(info.value)
    assert str(home / "ml-20m" / "ratings.csv") in msg
    assert str(tmp_path / "cache" / "recvae" / "ml-20m" / "ratings.csv") in msg
    assert "https://files.grouplens.org/datasets/movielens/ml-20m.zip" in msg
    with pytest.raises(DatasetNotFoundError, match="unknown dataset 'ml-30m'; known: ml-100k"):
        datasets.resolve("ml-30m")


def test_synthetic_needs_no_files(home):
    src = datasets.resolve("synthetic", seed=5)
    assert src.format == "synthetic" and src.synthetic == {"preset": "small", "seed": 5}
    assert datasets.resolve("synthetic-ml-20m").synthetic["preset"] == "ml-20m"


def test_every_movielens_download_has_a_checksum():
    for name in ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-latest-small"):
        (remote,) = datasets.REGISTRY[name].remotes
        assert remote.url.startswith("https://files.grouplens.org/datasets/movielens/")
        algorithm, _, digest = remote.checksum.partition(":")
        assert len(digest) == {"sha256": 64, "md5": 32}[algorithm]


# --- download with a fake fetcher ------------------------------------------------------------------


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return path


def test_download_verifies_then_extracts(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "toy.zip", {"toy/u.data": "1\t2\t3\t4\n"})
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    spec = DatasetSpec(name="toy", format="movielens", candidates=("toy/u.data",), description="toy",
                       remotes=(Remote("https://example.invalid/toy.zip", f"sha256:{digest}", "toy.zip"),))
    monkeypatch.setitem(datasets.REGISTRY, "toy", spec)
    calls = []

    def fake_fetch(url, dest):
        calls.append(url)
        shutil.copy(archive, dest)

    out = datasets.download("toy", tmp_path / "home", fetch=fake_fetch)
    assert out == tmp_path / "home" / "toy" / "u.data" and out.read_text() == "1\t2\t3\t4\n"
    assert calls == ["https://example.invalid/toy.zip"]
    datasets.download("toy", tmp_path / "home", fetch=fake_fetch)  # present and verified: not fetched again
    assert len(calls) == 1


def test_download_with_wrong_checksum_is_refused_and_removed(tmp_path):
    def fake_fetch(url, dest):
        dest.write_bytes(b"not the GroupLens archive")

    with pytest.raises(ChecksumError, match="does not match"):
        datasets.download("ml-100k", tmp_path / "home", fetch=fake_fetch)
    assert not (tmp_path / "home" / "ml-100k.zip").exists()
    assert [p.name for p in (tmp_path / "home").iterdir()] == []


def test_verify_checksum_md5_and_sha256(tmp_path):
    f = touch(tmp_path / "f.bin", "hello")
    datasets.verify_checksum(f, "md5:5d41402abc4b2a76b9719d911017c592")
    datasets.verify_checksum(f, "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
    with pytest.raises(ChecksumError):
        datasets.verify_checksum(f, "md5:" + "0" * 32)
    with pytest.raises(ValueError, match="checksum must be"):
        datasets.verify_checksum(f, "crc32:1234")


def test_archive_members_outside_the_home_are_refused(tmp_path, monkeypatch):
    archive = _zip(tmp_path / "evil.zip", {"../evil.txt": "x"})
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    spec = DatasetSpec(name="evil", format="movielens", candidates=("evil/u.data",), description="",
                       remotes=(Remote("https://example.invalid/evil.zip", f"sha256:{digest}", "evil.zip"),))
    monkeypatch.setitem(datasets.REGISTRY, "evil", spec)
    with pytest.raises(ChecksumError, match="outside"):
        datasets.download("evil", tmp_path / "home", fetch=lambda url, dest: shutil.copy(archive, dest))
    assert not (tmp_path / "evil.txt").exists()


def test_datasets_without_a_verified_download(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no verified download"):
        datasets.download("yelp2018", tmp_path)


@pytest.mark.realdata
def test_real_shared_data_names(data_home, monkeypatch):
    monkeypatch.setenv("RECVAE_DATA_HOME", str(data_home))
    assert datasets.resolve("ml-100k").format == "movielens"
    assert datasets.resolve("ml-latest-small").format == "movielens"
    assert (datasets.resolve("ml-1m").format, datasets.resolve("ml-1m").implicit) == ("parquet", True)
    assert datasets.resolve("ml-1m-pro-sg").format == "pro_sg"
    assert datasets.resolve("gowalla").format == "lightgcn"
