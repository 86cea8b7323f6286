"""Where interactions come from (a Source) and guessing a file's or folder's format."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recvae.data.readers.movielens import ratings_file_in
from recvae.data.readers.text import first_line
from recvae.data.validate import DataValidationError
from recvae.urls import mask_url

FORMATS = ("movielens", "csv", "parquet", "pro_sg", "lightgcn", "sql", "synthetic")
SNAPSHOT_FORMATS = ("pro_sg", "lightgcn")  # already split: they become a Snapshot directly
ROW_FORMATS = ("parquet", "sql", "synthetic")  # positions are row numbers; text formats' are line numbers
ID_TYPES = ("auto", "int", "str")


@dataclass
class Source:
    """Where interactions come from and how to read them (a CLI `--input`/`--dataset`, or code)."""

    format: str | None = None  # None: resolved from `dataset` or guessed from `path` (recvae.data.prepare.as_source)
    path: str | None = None  # file or folder; for `sql` the SQLAlchemy URL
    user_col: str = "user"
    item_col: str = "item"
    rating_col: str | None = "rating"  # None: implicit data (every row is a positive, rating 1.0)
    time_col: str | None = "timestamp"  # None: no timestamps; the default "timestamp" is used only if present
    sep: str = ","
    query: str | None = None  # sql: a table name or a SELECT query
    id_type: str = "auto"  # csv/parquet/sql ids: "int", "str", or "auto" (int when every value is an integer in int64)
    encoding: str = "utf-8"  # csv text encoding (e.g. "latin-1")
    implicit: bool = False  # every row is a positive: binarization is skipped
    dataset: str | None = None  # dataset name (recvae.data.datasets) this source was resolved from, or is to be
    synthetic: dict[str, Any] = field(default_factory=dict)  # synthetic: preset, seed and generator overrides
    # parquet/sql: rows per record batch of the streamed read (None: DEFAULT_BATCH_ROWS); the data do not depend on it
    batch_rows: int | None = None

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"unknown source format {self.format!r}; formats: {', '.join(FORMATS)}")
        if self.id_type not in ID_TYPES:
            raise ValueError(f"id_type must be one of {', '.join(ID_TYPES)}; got {self.id_type!r}")
        if self.batch_rows is not None and self.batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1; got {self.batch_rows}")
        if self.path is not None and self.format != "sql":
            self.path = str(self.path)

    @property
    def is_implicit(self) -> bool:
        """Every row is a positive: flagged so, or a csv/parquet/sql source read without a rating column."""
        return self.implicit or (self.format in ("csv", "parquet", "sql") and not self.rating_col)

    @property
    def gives_snapshot(self) -> bool:
        """Whether the format is already split (read as a Snapshot, not as interactions)."""
        return self.format in SNAPSHOT_FORMATS

    @property
    def position_unit(self) -> str:
        """What the positions in messages count: "row" (Parquet, SQL, generated) or "line" (text files)."""
        return "row" if self.format in ROW_FORMATS else "line"

    @property
    def shown_path(self) -> str | None:
        """The path as logs, messages and manifests show it: a SQL URL's password is masked."""
        if self.format == "sql" and self.path:
            return mask_url(self.path)
        return self.path

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the snapshot manifest (a SQL URL's password is masked)."""
        d = {k: v for k, v in asdict(self).items() if v not in (None, {}, "") and k != "batch_rows"}
        if self.path:
            d["path"] = self.shown_path
        if self.format in ("movielens", "pro_sg", "lightgcn", "synthetic"):
            for k in ("user_col", "item_col", "rating_col", "time_col", "sep", "id_type"):
                d.pop(k, None)
        if self.format != "csv":
            d.pop("sep", None)
            d.pop("encoding", None)
        if self.format in ("csv", "parquet", "sql"):
            d["rating_col"] = self.rating_col  # None (implicit) is worth recording
        return d

    @classmethod
    def from_path(cls, path: str | Path, **kwargs: Any) -> Source:
        """Guess the format from a file or folder: pro_sg and LightGCN folders, MovieLens files, CSV, Parquet."""
        p = Path(path)
        fmt = kwargs.pop("format", None)
        if fmt is None:
            fmt = guess_format(p)
        if fmt == "csv" and "sep" not in kwargs and p.suffix.lower() in (".tsv", ".tab"):
            kwargs["sep"] = "\t"
        return cls(format=fmt, path=str(p), **kwargs)


def guess_format(path: Path) -> str:
    """The source format of a file or folder, from its name and (for CSV) its header."""
    if path.is_dir():
        if (path / "unique_sid.txt").exists() and (path / "train.csv").exists():
            return "pro_sg"
        if (path / "train.txt").exists() and (path / "test.txt").exists():
            return "lightgcn"
        if ratings_file_in(path) is not None:
            return "movielens"
        if any(f.suffix.lower() in (".parquet", ".pq") for f in path.rglob("*") if f.is_file()):
            return "parquet"  # a partitioned dataset (e.g. day=2024-01-01/part-0.parquet)
        raise DataValidationError(
            "cannot tell the format of this folder (no pro_sg, LightGCN, MovieLens or Parquet files)", source=path
        )
    name = path.name.lower()
    for ext in (".gz", ".bz2", ".zst"):
        name = name.removesuffix(ext)
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name == "u.data" or name.endswith(".dat"):
        return "movielens"
    if name.endswith(".csv") and path.exists() and _movielens_header(first_line(path)):
        return "movielens"
    return "csv"


def _movielens_header(line: str) -> bool:
    """Whether a CSV header line is MovieLens's (userId,movieId,...), quoted or not."""
    return line.replace('"', "").lower().startswith("userid,movieid")
