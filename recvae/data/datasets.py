"""Named datasets: where they live on disk (official layouts and ../shared/data's), and checked downloads.

A name is looked up under $RECVAE_DATA_HOME (when set), then the user cache directory
($XDG_CACHE_HOME/recvae, else ~/.cache/recvae). Each name lists candidate paths, official layout first;
the first that exists wins. `download(name, dest)` fetches the official archive and verifies its checksum
before extracting (never called by the tests).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recvae.data.readers import Source
from recvae.digest import sha256_file

logger = logging.getLogger(__name__)

GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
LIGHTGCN = "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data/"


class DatasetNotFoundError(FileNotFoundError):
    """A named dataset is not on disk; the message says where it looked and how to get it."""


class ChecksumError(ValueError):
    """A downloaded file does not have the expected checksum."""


@dataclass(frozen=True)
class Remote:
    """One file to fetch: URL, expected checksum ('sha256:<hex>' or 'md5:<hex>') and where it goes."""

    url: str
    checksum: str
    target: str  # path relative to the data home; a .zip is extracted into the data home


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: reader format, candidate locations under a data home, and how to download it."""

    name: str
    format: str
    candidates: tuple[str, ...]  # relative to a data home; first existing wins
    description: str
    implicit: bool = False
    reader: dict[str, Any] = field(default_factory=dict)  # extra Source fields (column names)
    remotes: tuple[Remote, ...] = ()
    how_to_get: str = ""


def _ml(name: str, archive: str, checksum: str, candidates: tuple[str, ...], description: str) -> DatasetSpec:
    """A MovieLens release: one GroupLens archive."""
    return DatasetSpec(
        name=name,
        format="movielens",
        candidates=candidates,
        description=description,
        remotes=(Remote(GROUPLENS + archive, checksum, archive),),
        how_to_get=f"recvae.data.datasets.download({name!r}, DATA_HOME) or unzip {GROUPLENS}{archive} into DATA_HOME",
    )


def _lightgcn(name: str, folder: str, checksums: dict[str, str] | None, description: str) -> DatasetSpec:
    """A data set of the LightGCN repository; without checksums there is no verified download."""
    remotes = tuple(Remote(f"{LIGHTGCN}{folder}/{f}", c, f"{name}/{f}") for f, c in (checksums or {}).items())
    how = (f"recvae.data.datasets.download({name!r}, DATA_HOME)" if remotes else
           f"put train.txt and test.txt of {LIGHTGCN}{folder}/ (git LFS in the LightGCN repository) "
           f"into DATA_HOME/{name}/")
    return DatasetSpec(name=name, format="lightgcn", candidates=(name, f"{name}-lightgcn", f"{folder}-lightgcn"),
                       description=description, remotes=remotes, how_to_get=how)


REGISTRY: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        _ml("ml-100k", "ml-100k.zip", "sha256:50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            ("ml-100k/u.data",), "MovieLens 100K: 100,000 ratings (1-5) of 1,682 movies by 943 users"),
        _ml("ml-1m", "ml-1m.zip", "sha256:a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            ("ml-1m/ratings.dat",), "MovieLens 1M: 1,000,209 ratings (1-5) of 3,706 movies by 6,040 users"),
        # GroupLens publishes only an md5 for ml-10m.zip (ml-10m.zip.md5); its archive unpacks to ml-10M100K/.
        _ml("ml-10m", "ml-10m.zip", "md5:ce571fd55effeba0271552578f2648bd",
            ("ml-10M100K/ratings.dat", "ml-10m/ratings.dat", "ml-10m/ratings.csv"),
            "MovieLens 10M: 10,000,054 ratings (0.5-5) of 10,677 movies by 69,878 users"),
        _ml("ml-20m", "ml-20m.zip", "sha256:96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
            ("ml-20m/ratings.csv",), "MovieLens 20M: 20,000,263 ratings (0.5-5) of 26,744 movies by 138,493 users"),
        _ml("ml-25m", "ml-25m.zip", "sha256:8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
            ("ml-25m/ratings.csv",), "MovieLens 25M: 25,000,095 ratings (0.5-5) of 59,047 movies by 162,541 users"),
        _ml("ml-latest-small", "ml-latest-small.zip",
            "sha256:696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
            ("ml-latest-small/ratings.csv",),
            "MovieLens latest-small (2018): 100,836 ratings of 9,724 movies by 610 users"),
        DatasetSpec(
            name="ml-1m-pro-sg",
            format="pro_sg",
            candidates=("ml-1m-pro-sg", "ml-1m/pro_sg"),
            description="ML-1M after Liang et al.'s notebook "
                        "(rating > 3.5, >= 5 per user, 1,000 + 1,000 held-out users)",
            how_to_get="run Liang et al.'s preprocessing notebook on ml-1m "
                       "and copy its pro_sg/ folder to DATA_HOME/ml-1m-pro-sg/",
        ),
        _lightgcn("gowalla", "gowalla", {
            "train.txt": "sha256:7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62",
            "test.txt": "sha256:099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3",
            "user_list.txt": "sha256:5344c4d0deef610e1f148f23ad216a0db03b36f88834cd39a06786a672c5f5a1",
            "item_list.txt": "sha256:6b186f92890cc3f0c15a6dae5d6285f125a302bb8c5ea0cd9a16cf9c16347139",
        }, "Gowalla check-ins, NGCF/LightGCN split: 29,858 users, 40,981 items, 810,128 + 217,242 interactions"),
        _lightgcn("yelp2018", "yelp2018", None, "Yelp2018, NGCF/LightGCN split (31,668 users, 38,048 items)"),
        _lightgcn("amazon-book", "amazon-book", None, "Amazon-book, NGCF/LightGCN split (52,643 users, 91,599 items)"),
        DatasetSpec(name="synthetic", format="synthetic", candidates=(),
                    description="generated MovieLens-shaped data, preset 'small' (2,000 users x 500 items)"),
        DatasetSpec(name="synthetic-ml-20m", format="synthetic", candidates=(),
                    description="generated MovieLens-shaped data at ML-20M scale (about 136k x 20k, 10M positives)"),
    )
}

# Layouts of ../shared/data that differ from the official archives: tried after the official candidates.
FALLBACKS: dict[str, tuple[tuple[str, str, dict[str, Any], bool], ...]] = {
    # (relative path, format, reader fields, implicit)
    "ml-1m": (("ml-1m/ratings_implicit.parquet", "parquet",
               {"user_col": "userId", "item_col": "movieId", "rating_col": None, "time_col": None}, True),),
}


def data_homes() -> list[Path]:
    """Where datasets are looked up: $RECVAE_DATA_HOME (if set), then the user cache directory."""
    homes = []
    env = os.environ.get("RECVAE_DATA_HOME")
    if env:
        homes.append(Path(env).expanduser())
    homes.append(cache_dir())
    return homes


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/recvae, else ~/.cache/recvae."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "recvae"


def names() -> list[str]:
    """Every known dataset name."""
    return list(REGISTRY)


def resolve(name: str, *, seed: int | None = None) -> Source:
    """The Source of dataset `name`, found under the data homes; DatasetNotFoundError says where it looked."""
    spec = _spec(name)
    if spec.format == "synthetic":
        params: dict[str, Any] = {"preset": "ml-20m" if name == "synthetic-ml-20m" else "small"}
        if seed is not None:
            params["seed"] = seed
        return Source(format="synthetic", dataset=name, synthetic=params)
    looked: list[str] = []
    for home in data_homes():
        for rel in spec.candidates:
            p = home / rel
            looked.append(str(p))
            if p.exists():
                return Source(format=spec.format, path=str(p), dataset=name, implicit=spec.implicit, **spec.reader)
        for rel, fmt, reader, implicit in FALLBACKS.get(name, ()):
            p = home / rel
            looked.append(str(p))
            if p.exists():
                logger.info("%s: using %s (%s%s)", name, p, fmt,
                            ", implicit: every pair is a positive" if implicit else "")
                return Source(format=fmt, path=str(p), dataset=name, implicit=implicit, **reader)
    raise DatasetNotFoundError(
        f"dataset {name!r} not found; looked in: {', '.join(looked)}. To get it: "
        + spec.how_to_get.replace("DATA_HOME", str(data_homes()[0]))
        + " (set RECVAE_DATA_HOME to use another folder)"
    )


def _spec(name: str) -> DatasetSpec:
    """The registry entry of `name`; DatasetNotFoundError lists the known names."""
    if name not in REGISTRY:
        raise DatasetNotFoundError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


Fetcher = Callable[[str, Path], None]


def _urllib_fetch(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb") as f:  # noqa: S310 - fixed https URLs
        shutil.copyfileobj(r, f, length=1 << 20)


def verify_checksum(path: str | Path, expected: str) -> None:
    """Raise ChecksumError unless `path` has checksum `expected` ('sha256:<hex>' or 'md5:<hex>')."""
    algorithm, _, digest = expected.partition(":")
    if algorithm not in ("sha256", "md5") or not digest:
        raise ValueError(f"checksum must be 'sha256:<hex>' or 'md5:<hex>'; got {expected!r}")
    actual = sha256_file(path, algorithm)
    if actual != digest.lower():
        raise ChecksumError(f"{path}: {algorithm} {actual} does not match the expected {digest}")


def download(name: str, dest: str | Path | None = None, *, fetch: Fetcher | None = None, force: bool = False) -> Path:
    """Fetch dataset `name` into data home `dest` (default: the first data home), verify every file's
    checksum, extract archives, and return the dataset's location. `fetch(url, path)` can be replaced
    (tests use a local fake). A file with a wrong checksum is deleted and ChecksumError raised."""
    spec = _spec(name)
    if not spec.remotes:
        raise DatasetNotFoundError(f"dataset {name!r} has no verified download; to get it: {spec.how_to_get}")
    home = Path(dest) if dest is not None else data_homes()[0]
    home.mkdir(parents=True, exist_ok=True)
    fetch = fetch or _urllib_fetch
    for remote in spec.remotes:
        target = home / remote.target
        target.parent.mkdir(parents=True, exist_ok=True)
        if force or not target.exists():
            _fetch_checked(remote, target, fetch)
        else:
            verify_checksum(target, remote.checksum)
        if target.suffix == ".zip":
            _extract(target, home)
    found = [home / c for c in spec.candidates if (home / c).exists()]
    if not found:
        raise DatasetNotFoundError(f"{name}: downloaded, but none of {', '.join(spec.candidates)} is under {home}")
    return found[0]


def _fetch_checked(remote: Remote, target: Path, fetch: Fetcher) -> None:
    """Fetch `remote` to `target` through a temporary file: `target` appears only with the right checksum."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        logger.info("downloading %s", remote.url)
        fetch(remote.url, tmp)
        verify_checksum(tmp, remote.checksum)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _extract(archive: Path, home: Path) -> None:
    """Extract a zip into `home`, refusing members that would land outside it."""
    root = home.resolve()
    with zipfile.ZipFile(archive) as z:
        for member in z.namelist():
            if not (root / member).resolve().is_relative_to(root):
                raise ChecksumError(f"{archive}: member {member!r} would extract outside {home}")
        z.extractall(home)
