"""Item titles and genres of the MovieLens datasets (ML-1M `movies.dat`, ML-100K `u.item`): the batch's item titles."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recvae.data.validate import DataValidationError

METADATA_FILES = ("movies.dat", "u.item")  # searched in this order in a dataset folder
COLUMNS = ["item_id", "title", "genres"]
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


def find_item_metadata(folder: str | Path) -> Path | None:
    """The metadata file of a dataset folder (movies.dat, else u.item), or None."""
    for name in METADATA_FILES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def read_item_metadata(path: str | Path) -> pd.DataFrame | None:
    """Item titles from a dataset folder or file (ML-1M movies.dat, ML-100K u.item): columns item_id, title, genres
    (text); None when the folder has no known metadata file. A malformed file raises DataValidationError naming it
    and the line."""
    path = Path(path)
    if path.is_dir():
        found = find_item_metadata(path)
        return None if found is None else read_item_metadata(found)
    if path.name == "u.item":
        return _read_u_item(path)
    if path.suffix == ".dat":
        return _read_movies_dat(path)
    raise DataValidationError("unknown item metadata format (expected movies.dat or u.item)", source=path)


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the non-empty lines; the MovieLens files are Latin-1."""
    with open(path, encoding="latin-1") as f:
        return [(n, line.rstrip("\r\n")) for n, line in enumerate(f, 1) if line.rstrip("\r\n")]


def _read_movies_dat(path: Path) -> pd.DataFrame:
    rows = []
    for lineno, line in _lines(path):
        parts = line.split("::")
        if len(parts) != 3:
            raise DataValidationError(f"expected 'id::title::genres', got {len(parts)} field(s)", source=path,
                                      position=lineno)
        rows.append((parts[0], parts[1], parts[2] or None))
    return pd.DataFrame(rows, columns=COLUMNS)


def _genre_names(path: Path) -> tuple[str, ...]:
    """Genre of each u.item flag column: from u.genre beside it (name|index lines), else ML-100K's list."""
    genre_file = path.with_name("u.genre")
    if not genre_file.is_file():
        return ML100K_GENRES
    pairs = []
    for lineno, line in _lines(genre_file):
        if not line.strip():
            continue
        name, sep, index = line.partition("|")
        if not sep or not index.strip().isdigit():
            raise DataValidationError("expected 'genre|index'", source=genre_file, position=lineno)
        pairs.append((int(index), name))
    return tuple(name for _, name in sorted(pairs))


def _read_u_item(path: Path) -> pd.DataFrame:
    names = _genre_names(path)
    rows = []
    for lineno, line in _lines(path):
        parts = line.split("|")
        if len(parts) != 5 + len(names):
            raise DataValidationError(f"expected {5 + len(names)} '|'-separated fields, got {len(parts)}",
                                      source=path, position=lineno)
        genres = "|".join(g for g, flag in zip(names, parts[5:], strict=True) if flag == "1")
        rows.append((parts[0], parts[1], genres or None))
    return pd.DataFrame(rows, columns=COLUMNS)
