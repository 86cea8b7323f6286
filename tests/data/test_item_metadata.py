"""MovieLens item metadata (movies.dat, u.item): titles and genres as text, bad files named with their line."""

from __future__ import annotations

import pytest

from recvae.data.item_metadata import read_item_metadata
from recvae.data.validate import DataValidationError
from recvae.errors import is_user_error

U_ITEM_FLAGS = ["0"] * 19


def write_ml100k(folder, *lines: str) -> None:
    folder.mkdir()
    (folder / "u.item").write_bytes("".join(line + "\n" for line in lines).encode("latin-1"))


def test_movies_dat_and_u_item(tmp_path):
    (tmp_path / "ml1m").mkdir()
    movies = "1::Toy Story (1995)::Animation|Comedy\n\n2::Amélie (2001)::Comedy\n"
    (tmp_path / "ml1m" / "movies.dat").write_bytes(movies.encode("latin-1"))
    flags = list(U_ITEM_FLAGS)
    flags[1] = flags[8] = "1"
    write_ml100k(tmp_path / "ml100k", "7|Se7en (1995)|01-Jan-1995||http://x|" + "|".join(flags),
                 "8|Nothing (1995)|01-Jan-1995||http://x|" + "|".join(U_ITEM_FLAGS))
    ml1m = read_item_metadata(tmp_path / "ml1m")
    assert ml1m.to_dict("records")[1] == {"item_id": "2", "title": "Amélie (2001)", "genres": "Comedy"}
    assert read_item_metadata(tmp_path / "ml1m" / "movies.dat").equals(ml1m)
    ml100k = read_item_metadata(tmp_path / "ml100k")
    assert ml100k.iloc[0].to_dict() == {"item_id": "7", "title": "Se7en (1995)", "genres": "Action|Drama"}
    assert ml100k["title"].iloc[1] == "Nothing (1995)" and ml100k["genres"].isna().tolist() == [False, True]
    assert read_item_metadata(tmp_path) is None


def test_u_genre_beside_u_item_names_the_flags(tmp_path):
    write_ml100k(tmp_path / "ml", "1|Film|x||y|1|0|1")
    (tmp_path / "ml" / "u.genre").write_text("Zed|2\nAlpha|0\n\nBeta|1\n", encoding="latin-1")
    assert read_item_metadata(tmp_path / "ml").to_dict("records") == [
        {"item_id": "1", "title": "Film", "genres": "Alpha|Zed"}]


@pytest.mark.parametrize(
    "name, text, where",
    [
        ("movies.dat", "1::Toy Story (1995)::Comedy\n2::Heat (1995)\n", "movies.dat, line 2"),
        ("u.item", "1|Film|x||y|1\n", "u.item, line 1"),
        ("u.genre", "Action|one\n", "u.genre, line 1"),
    ],
)
def test_a_malformed_file_is_a_data_error_naming_the_file_and_line(tmp_path, name, text, where):
    (tmp_path / "u.item").write_text("1|Film|x||y|" + "|".join(U_ITEM_FLAGS) + "\n", encoding="latin-1")
    (tmp_path / name).write_text(text, encoding="latin-1")
    with pytest.raises(DataValidationError, match=where) as info:
        read_item_metadata(tmp_path / ("movies.dat" if name == "movies.dat" else "u.item"))
    assert is_user_error(info.value)  # the CLI ends it in one error line, Airflow does not retry it


def test_an_unknown_metadata_file_is_a_data_error(tmp_path):
    (tmp_path / "titles.csv").write_text("item_id,title\n1,Film\n")
    with pytest.raises(DataValidationError, match="titles.csv: unknown item metadata format"):
        read_item_metadata(tmp_path / "titles.csv")


@pytest.mark.realdata
def test_movielens_metadata(data_home):
    ml1m = read_item_metadata(data_home / "ml-1m")
    ml100k = read_item_metadata(data_home / "ml-100k")
    assert len(ml1m) == 3883 and ml1m["item_id"].is_unique
    assert len(ml100k) == 1682 and ml100k["item_id"].is_unique
    toy_story = {"item_id": "1", "title": "Toy Story (1995)", "genres": "Animation|Children's|Comedy"}
    assert ml1m.iloc[0].to_dict() == toy_story
    assert ml100k.iloc[0].to_dict() == toy_story
