"""Recommendation store: schema, staging and atomic publish, crashes, retention, idempotency, safety."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, inspect, text

from recvae.serving import store as store_package
from recvae.serving.store import (
    IdentifierError,
    RecChunk,
    RecommendationStore,
    StoreError,
    TableNames,
    load_query,
    schema_sql,
    sql_dir,
    validate_identifier,
)
from recvae.urls import mask_url

REPO = Path(__file__).resolve().parents[2]
N_ITEMS = 40


def make_chunks(users: list[str], n: int, seed: int, chunk: int = 50,
                counts: np.ndarray | None = None) -> list[RecChunk]:
    """Random top-n lists (distinct items, decreasing scores) for `users`, in chunks."""
    rng = np.random.default_rng(seed)
    counts = np.full(len(users), n) if counts is None else np.asarray(counts)
    out = []
    for s in range(0, len(users), chunk):
        u = np.array(users[s : s + chunk], dtype=object)
        items = np.array([[f"i{j}" for j in rng.permutation(N_ITEMS)[:n]] for _ in u], dtype=object)
        scores = -np.sort(-rng.random((len(u), n)), axis=1).astype(np.float32)
        out.append(RecChunk(u, items, scores, counts[s : s + chunk]))
    return out


def rows_of(chunks: list[RecChunk]) -> set[tuple[str, int, str]]:
    out = set()
    for c in chunks:
        u, r, i, _ = c.rows()
        out |= set(zip(u, r, i, strict=True))
    return out


def users(n: int, offset: int = 0) -> list[str]:
    return [f"u{k}" for k in range(offset, offset + n)]


def write_batch(store: RecommendationStore, key: str, chunks: list[RecChunk], *, top_n: int = 5, publish: bool = True):
    batch = store.begin_batch(key, model_name="test-model", model_version="1", top_n=top_n, n_items=N_ITEMS)
    expected = sum(int(np.sum(c.counts)) for c in chunks)
    store.write_shard(batch, chunks, expected_rows=expected)
    return store.publish(batch) if publish else batch


def view_rows(url: str) -> set[tuple[str, int, str]]:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return set(
                map(tuple, conn.execute(text(
                    'SELECT user_id, rank, item_id FROM "recvae_current_recommendations"')).all())
            )
    finally:
        eng.dispose()


def titles_of(store: RecommendationStore, batch_id: int) -> dict[str, str]:
    with store.engine.connect() as conn:
        sql = 'SELECT item_id, title FROM "recvae_items" WHERE batch_id = :b'
        rows = conn.execute(text(sql), {"b": batch_id}).all()
    return dict(map(tuple, rows))


def age(store: RecommendationStore, batch_id: int, hours: float) -> None:
    """Make a batch look idle for `hours`: its creation and its shards' activity moved back in time."""
    when = datetime.now(UTC) - timedelta(hours=hours)
    value = when if store.dialect == "postgresql" else when.isoformat(timespec="microseconds")
    with store.engine.begin() as conn:
        conn.execute(text('UPDATE "recvae_batches" SET created_at = :t WHERE batch_id = :b'),
                     {"t": value, "b": batch_id})
        conn.execute(text('UPDATE "recvae_batch_shards" SET started_at = :t, written_at = CASE WHEN written_at IS NULL'
                          ' THEN NULL ELSE :t END WHERE batch_id = :b'), {"t": value, "b": batch_id})


def batch_rows(store: RecommendationStore, batch_id: int) -> set[tuple[str, int, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            text('SELECT user_id, rank, item_id FROM "recvae_recommendations" WHERE batch_id = :b'), {"b": batch_id}
        ).all()
    return set(map(tuple, rows))


# ---------------------------------------------------------------------------------------------------------------
# schema


def test_schema_is_idempotent(db_url):
    with RecommendationStore(db_url) as store:
        store.ensure_schema()
        store.ensure_schema()
    with RecommendationStore(db_url) as again:  # a second process/run applies it once more
        again.ensure_schema()
        names = set(inspect(again.engine).get_table_names())
        views = set(inspect(again.engine).get_view_names())
        assert {"recvae_batches", "recvae_batch_shards", "recvae_recommendations", "recvae_items"} <= names
        assert "recvae_current_recommendations" in views
        assert again.current_batch() is None
        with again.engine.begin() as conn:
            conn.execute(text('DROP VIEW "recvae_current_recommendations"'))
        again.ensure_schema()  # a missing object is created again
        assert "recvae_current_recommendations" in set(inspect(again.engine).get_view_names())


def test_custom_table_names_and_schema(db_url):
    schema = "recs" if db_url.startswith("postgresql") else None
    tables = TableNames(batches="b_x", shards="s_x", recommendations="r_x", items="i_x", current_view="v_x",
                        schema=schema)
    with RecommendationStore(db_url, tables=tables) as store:
        summary = write_batch(store, "k1", make_chunks(users(3), 2, 0))
        assert summary.row_count == 6
        assert len(store.query("user_top", user_id="u0", n=10)) == 2
        assert set(inspect(store.engine).get_table_names(schema=schema)) >= {"b_x", "s_x", "r_x", "i_x"}
        assert "recvae_batches" not in inspect(store.engine).get_table_names()


@pytest.mark.parametrize(
    "name", ["x; DROP TABLE y", "1abc", "a-b", 'a"b', "", "a" * 64, "ab cd", "tbl\n", "ä"]
)
def test_bad_identifiers_are_refused(name):
    with pytest.raises(IdentifierError):
        validate_identifier(name)
    with pytest.raises(IdentifierError):
        TableNames(recommendations=name)
    with pytest.raises(IdentifierError):
        TableNames(schema=name)


def test_bad_query_name_and_long_derived_index_name_are_refused():
    with pytest.raises(IdentifierError):
        load_query("../postgresql/schema")
    with pytest.raises(IdentifierError, match="derived index"):
        TableNames(batches="b" * 63)
    validate_identifier("a" * 63)  # the limit itself is fine
    with pytest.raises(IdentifierError, match="differ"):
        TableNames(batches="same", shards="same")


def test_rendered_sql_has_no_placeholders_and_quotes_names():
    tables = TableNames(schema="s1")
    for dialect in ("sqlite", "postgresql"):
        sql = schema_sql(dialect, tables if dialect == "postgresql" else TableNames())
        assert "${" not in sql and "--" not in sql
    assert '"s1"."recvae_recommendations"' in schema_sql("postgresql", tables)


def test_sql_dir_can_be_overridden(monkeypatch, tmp_path):
    monkeypatch.setenv("RECVAE_SQL_DIR", str(tmp_path))
    with pytest.raises(StoreError, match="not found"):
        schema_sql("sqlite")
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "mine.sql").write_text("SELECT 1 AS one FROM ${batches} -- :not_a_param\n")
    assert load_query("mine") == 'SELECT 1 AS one FROM "recvae_batches" \n'


def test_sql_files_are_package_data(monkeypatch):
    monkeypatch.delenv("RECVAE_SQL_DIR", raising=False)
    folder = sql_dir()
    assert folder.is_relative_to(Path(store_package.__file__).resolve().parents[1])  # inside recvae/serving
    assert {"sqlite/schema.sql", "postgresql/schema.sql", "queries/user_top.sql"} <= {
        p.relative_to(folder).as_posix() for p in folder.rglob("*.sql")}


INSTALLED_SQL = """
import json, recvae
from recvae.serving.store import query_names, schema_sql, sql_dir
print(json.dumps({"package": recvae.__file__, "sql_dir": str(sql_dir()), "queries": query_names(),
                  "ddl": all("CREATE TABLE" in schema_sql(d) for d in ("sqlite", "postgresql"))}))
"""


@pytest.mark.slow
def test_an_installed_wheel_finds_its_sql_files(tmp_path):
    """A wheel built from pyproject.toml carries the SQL files, and the installed store reads them."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (src / name).write_bytes((REPO / name).read_bytes())
    shutil.copytree(REPO / "recvae", src / "recvae", ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("recvae-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip does with a pure-Python wheel
    env = {k: v for k, v in os.environ.items() if k != "RECVAE_SQL_DIR"}
    out = subprocess.run([sys.executable, "-c", INSTALLED_SQL], cwd=tmp_path, capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(site)}, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(got["package"]).is_relative_to(site) and Path(got["sql_dir"]) == site / "recvae" / "serving" / "sql"
    assert got["ddl"] and "user_top_with_titles" in got["queries"]


# ---------------------------------------------------------------------------------------------------------------
# write and publish


def test_write_and_publish(db_url):
    chunks = make_chunks(users(120), 5, seed=1)
    with RecommendationStore(db_url) as store:
        batch = write_batch(store, "run-1", chunks, publish=False)
        assert batch.status == "staging"
        assert view_rows(db_url) == set()  # staging rows are invisible
        summary = store.publish(batch)
        counts = (summary.status, summary.user_count, summary.row_count, summary.expected_rows)
        assert counts == ("published", 120, 600, 600)
        assert view_rows(db_url) == rows_of(chunks)
        current = store.current_batch()
        assert current.batch_id == summary.batch_id and current.model_version == "1"
        assert current.published_at is not None
        top = store.query("user_top", user_id="u7", n=3)
        expected = sorted((r, i) for u, r, i in rows_of(chunks) if u == "u7")[:3]
        assert [(t["rank"], t["item_id"]) for t in top] == expected
        scores = [t["score"] for t in top]
        assert scores == sorted(scores, reverse=True)


def test_fewer_rows_for_users_with_few_candidates(db_url):
    counts = np.array([5, 2, 0, 5])
    chunks = make_chunks(users(4), 5, seed=2, counts=counts)
    with RecommendationStore(db_url) as store:
        summary = write_batch(store, "few", chunks)
        assert summary.row_count == 12 and summary.user_count == 4
        per_user = {u: 0 for u in users(4)}
        for u, _, _ in view_rows(db_url):
            per_user[u] += 1
        assert per_user == {"u0": 5, "u1": 2, "u2": 0, "u3": 5}


def test_row_count_check_rolls_back_the_shard(db_url):
    chunks = make_chunks(users(10), 3, seed=3)
    with RecommendationStore(db_url) as store:
        batch = store.begin_batch("bad-count", model_name="m", top_n=3)
        with pytest.raises(StoreError, match="expected 31"):
            store.write_shard(batch, chunks, expected_rows=31)
        assert store.count_rows(batch.batch_id) == 0
        with pytest.raises(StoreError, match="never finished"):
            store.publish(batch)
        assert store.current_batch() is None


def test_nan_scores_and_duplicate_users_are_refused(db_url):
    with RecommendationStore(db_url) as store:
        batch = store.begin_batch("nan", model_name="m", top_n=2)
        bad = RecChunk(np.array(["a"], dtype=object), np.array([["x", "y"]], dtype=object),
                       np.array([[1.0, np.nan]]), np.array([2]))
        with pytest.raises(StoreError, match="NaN"):
            store.write_shard(batch, [bad], expected_rows=2)
        dup = make_chunks(["a", "a"], 2, seed=0)
        with pytest.raises(StoreError, match="appears twice"):
            store.write_shard(batch, dup, expected_rows=4)
        assert store.count_rows(batch.batch_id) == 0


def test_publish_requires_every_shard(db_url):
    with RecommendationStore(db_url) as store:
        batch = store.begin_batch("sharded", model_name="m", top_n=2, n_shards=2)
        with pytest.raises(StoreError, match="no shard"):
            store.publish(batch)
        store.write_shard(batch, make_chunks(users(3), 2, 0), shard=0, expected_rows=6)
        with pytest.raises(StoreError, match="expected shards 0..1"):
            store.publish(batch)
        store.write_shard(batch, make_chunks(users(4, offset=3), 2, 1), shard=1, expected_rows=8)
        assert store.publish("sharded").row_count == 14  # by batch key


def test_rerun_of_a_shard_and_batch_key_is_idempotent(db_url):
    with RecommendationStore(db_url) as store:
        b1 = store.begin_batch("airflow-run-1", model_name="m", top_n=3, n_shards=2)
        store.write_shard(b1, make_chunks(users(10), 3, seed=1), shard=0, expected_rows=30)
        b2 = store.begin_batch("airflow-run-1", model_name="m", top_n=3, n_shards=2)  # task retry
        assert b2.batch_id == b1.batch_id and b2.status == "staging"
        second = make_chunks(users(10), 3, seed=2)
        store.write_shard(b2, second, shard=0, expected_rows=30)  # shard re-run: replaced, not duplicated
        store.write_shard(b2, make_chunks(users(5, offset=10), 3, seed=3), shard=1, expected_rows=15)
        assert store.count_rows(b1.batch_id) == 45
        summary = store.publish(b2)
        assert summary.row_count == 45
        assert {r for r in view_rows(db_url) if int(r[0][1:]) < 10} == rows_of(second)
        again = store.begin_batch("airflow-run-1", model_name="m", top_n=3)  # retry after publishing
        assert again.done and again.batch_id == b1.batch_id
        assert store.publish(again).reused
        assert store.count_rows(b1.batch_id) == 45
        with pytest.raises(StoreError, match="refusing to write"):
            store.write_shard(again, make_chunks(users(1), 3, 9), expected_rows=3)
        with pytest.raises(StoreError, match="model_version"):
            store.begin_batch("airflow-run-1", model_name="m", model_version="2", top_n=3)


def test_retention_keeps_the_last_batches(db_url):
    with RecommendationStore(db_url, keep=2) as store:
        ids = [write_batch(store, f"k{k}", make_chunks(users(6), 3, seed=k)).batch_id for k in range(4)]
        status = {b.batch_id: b.status for b in store.list_batches()}
        assert status == {ids[0]: "expired", ids[1]: "expired", ids[2]: "superseded", ids[3]: "published"}
        assert [store.count_rows(b) for b in ids] == [0, 0, 18, 18]
        assert store.apply_retention(keep=1) == [ids[2]]
        assert store.count_rows(ids[2]) == 0 and store.current_batch().batch_id == ids[3]


def test_exception_in_the_write_loop_keeps_the_current_batch(db_url):
    with RecommendationStore(db_url) as store:
        old = make_chunks(users(20), 3, seed=0)
        write_batch(store, "old", old)
        batch = store.begin_batch("new", model_name="m", top_n=3)

        def exploding():
            yield from make_chunks(users(20), 3, seed=1, chunk=5)[:2]
            raise RuntimeError("scoring died")

        with pytest.raises(RuntimeError, match="scoring died"):
            store.write_shard(batch, exploding(), expected_rows=60)
        assert store.count_rows(batch.batch_id) == 0  # the shard's transaction was rolled back
        assert view_rows(db_url) == rows_of(old)
        store.fail(batch, "scoring died")
        assert store.get_batch("new").status == "failed"
        assert view_rows(db_url) == rows_of(old)


# ---------------------------------------------------------------------------------------------------------------
# readers during writes

READER = textwrap.dedent(
    """
    import hashlib, os, sqlite3, sys, time
    db, out, stop = sys.argv[1:4]
    conn = sqlite3.connect(db, timeout=30)
    with open(out, "w") as f:
        while not os.path.exists(stop):
            sql = 'SELECT batch_id, user_id, rank, item_id FROM "recvae_current_recommendations"'
            rows = conn.execute(sql).fetchall()
            f.write(hashlib.sha256(repr(sorted(rows)).encode()).hexdigest() + "\\n")
            f.flush()
            time.sleep(0.002)
    """
)


def _fingerprint(rows) -> str:
    return hashlib.sha256(repr(sorted(rows)).encode()).hexdigest()


def test_readers_see_a_whole_batch_or_the_previous_one(db_url, tmp_path):
    """A reader thread (and, for SQLite, a reader process) polls the view while batches are written and
    published; every observation must be exactly one complete published batch (or nothing before the first)."""
    observed: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def poll() -> None:
        eng = create_engine(db_url)
        try:
            while not stop.is_set():
                with eng.connect() as conn:
                    rows = conn.execute(
                        text('SELECT batch_id, user_id, rank, item_id FROM "recvae_current_recommendations"')
                    ).all()
                observed.append(_fingerprint([tuple(r) for r in rows]))
        except BaseException as exc:  # surfaced in the main thread
            failures.append(exc)
        finally:
            eng.dispose()

    proc = None
    out, stop_file = tmp_path / "reader.txt", tmp_path / "stop"
    store = RecommendationStore(db_url, keep=10)
    store.ensure_schema()
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    if db_url.startswith("sqlite"):
        args = [db_url.removeprefix("sqlite:///"), str(out), str(stop_file)]
        proc = subprocess.Popen([sys.executable, "-c", READER, *args])

    def lines() -> int:
        return len(out.read_text().splitlines()) if out.exists() else 0

    def wait_for_readers(polls: int = 2) -> None:
        """Block until each reader has polled `polls` more times (so reads interleave with every write step)."""
        t, p = len(observed) + polls, lines() + polls
        deadline = time.monotonic() + 60
        while len(observed) < t or (proc is not None and lines() < p):
            assert not failures, failures
            assert time.monotonic() < deadline, "reader stopped polling"
            time.sleep(0.001)

    try:
        published = []
        for k in range(3):
            batch = store.begin_batch(f"b{k}", model_name="m", top_n=4)
            chunks = make_chunks(users(60), 4, seed=k, chunk=10)

            def paced(chunks=chunks):
                for c in chunks:
                    yield c
                    wait_for_readers(1)  # reads while the shard's transaction is open

            store.write_shard(batch, paced(), expected_rows=240)
            wait_for_readers()  # staging rows committed, not yet published
            store.publish(batch)
            published.append(batch.batch_id)
            wait_for_readers()
    finally:
        stop.set()
        stop_file.touch()
        thread.join(30)
        if proc is not None:
            proc.wait(30)
    assert not failures, failures
    full = {b: _fingerprint([(b, *r) for r in batch_rows(store, b)]) for b in published}
    store.close()
    allowed = {_fingerprint([]): -1, **{fp: i for i, fp in enumerate(full.values())}}
    for name, seen in [("thread", observed)] + ([("process", out.read_text().split())] if proc else []):
        order = [allowed.get(fp) for fp in seen]
        assert None not in order, f"{name} reader saw a state that is not one whole published batch"
        assert order == sorted(order), f"{name} reader went back to an older batch"
        assert set(order) >= {0, 1, 2}, f"{name} reader missed a published batch"


# ---------------------------------------------------------------------------------------------------------------
# crashes

WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from recvae.serving.store import RecChunk, RecommendationStore
    url = sys.argv[1]

    def chunk(lo, hi):
        u = np.array([f"u{k}" for k in range(lo, hi)], dtype=object)
        items = np.array([["i1", "i2", "i3"]] * len(u), dtype=object)
        return RecChunk(u, items, np.tile([3.0, 2.0, 1.0], (len(u), 1)), np.full(len(u), 3))

    store = RecommendationStore(url)
    batch = store.begin_batch("doomed", model_name="m", top_n=3, n_shards=2)
    store.write_shard(batch, [chunk(0, 10)], shard=0, expected_rows=30)

    def forever():
        yield chunk(10, 20)
        print("WRITING", flush=True)
        time.sleep(600)

    store.write_shard(batch, forever(), shard=1, expected_rows=60)
    """
)


def test_writer_killed_mid_write_leaves_current_batch(db_url, tmp_path):
    """kill -9 of a writer half-way through a shard: the current batch is intact, the committed shard's rows
    of the dead batch stay invisible, and the next run marks that batch failed and deletes its rows."""
    with RecommendationStore(db_url) as store:
        old = make_chunks(users(15), 3, seed=5)
        write_batch(store, "old", old, top_n=3)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, db_url], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = proc.stdout.readline()
        assert line.strip() == "WRITING", f"writer did not start: {line!r} (rc {proc.poll()})"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert view_rows(db_url) == rows_of(old)
    with RecommendationStore(db_url, stale_after_s=0) as store:
        doomed = store.get_batch("doomed")
        assert doomed.status == "staging"
        assert store.count_rows(doomed.batch_id) == 30  # shard 0 committed; shard 1 rolled back with the process
        nxt = store.begin_batch("next-run", model_name="m", top_n=3)  # the next run cleans up
        doomed = store.get_batch("doomed")
        assert doomed.status == "failed" and "abandoned" in doomed.error
        assert store.count_rows(doomed.batch_id) == 0
        assert view_rows(db_url) == rows_of(old)
        new = make_chunks(users(15), 3, seed=6)
        store.write_shard(nxt, new, expected_rows=45)
        store.publish(nxt)
        assert view_rows(db_url) == rows_of(new)


def test_fresh_staging_batch_of_another_run_is_not_failed(db_url):
    with RecommendationStore(db_url) as store:  # default stale_after_s: hours
        a = store.begin_batch("run-a", model_name="m", top_n=1)
        store.begin_batch("run-b", model_name="m", top_n=1)
        assert store.get_batch(a.batch_id).status == "staging"


@pytest.mark.postgres
def test_connection_lost_mid_copy_keeps_current_batch(postgres_db_url):
    """The server ends the writer's session during COPY: clear error, current batch intact, store usable again."""
    with RecommendationStore(postgres_db_url) as store:
        old = make_chunks(users(10), 3, seed=0)
        write_batch(store, "old", old, top_n=3)
        batch = store.begin_batch("cut", model_name="m", top_n=3)
        killer = create_engine(postgres_db_url)

        def cut_off():
            yield make_chunks(users(10), 3, seed=1)[0]
            with killer.connect() as conn:
                conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'COPY%'"
                ))
                conn.commit()
            time.sleep(0.2)
            yield make_chunks(users(10, offset=10), 3, seed=2)[0]

        with pytest.raises(StoreError) as err:
            store.write_shard(batch, cut_off(), expected_rows=60)
        killer.dispose()
        assert "connection" in str(err.value) and "127.0.0.1" in str(err.value)
        assert view_rows(postgres_db_url) == rows_of(old)
        assert store.count_rows(batch.batch_id) == 0
        assert store.current_batch().batch_key == "old"


# ---------------------------------------------------------------------------------------------------------------
# item titles belong to their batch


def _movielens(tmp_path: Path) -> tuple[Path, Path]:
    """An ML-1M folder and an ML-100K folder whose item 1196 are different films (as in the real datasets)."""
    ml1m, ml100k = tmp_path / "ml-1m", tmp_path / "ml-100k"
    ml1m.mkdir()
    ml100k.mkdir()
    movies = ("1196::Star Wars: Episode V - The Empire Strikes Back (1980)::Action|Sci-Fi\n"
              "260::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n")
    (ml1m / "movies.dat").write_text(movies, encoding="latin-1")
    flags = "|".join(["0"] * 8 + ["1"] + ["0"] * 10)
    (ml100k / "u.item").write_text(f"1196|Savage Nights (1992)|01-Jan-1992||http://x|{flags}\n", encoding="latin-1")
    return ml1m, ml100k


def test_titles_of_an_unpublished_batch_never_reach_readers(db_url, tmp_path, monkeypatch):
    """The bug: a publish killed right after it wrote its item titles changed the titles readers of the current
    batch see (user 1's item 1196 became the ML-100K "Savage Nights" instead of "Star Wars: Episode V")."""
    from recvae import pipeline, tracking
    from recvae.data.idmap import IdMap

    ml1m, ml100k = _movielens(tmp_path)
    items = IdMap(["1196", "260"])
    model = SimpleNamespace(items=items, n_items=2)
    info = SimpleNamespace(name="m", kind="vae", version="1", run_id="r1")
    monkeypatch.setattr(tracking, "load_recommender_from_uri", lambda uri: (model, info))

    def begin(key: str, source: Path) -> dict:
        snap = SimpleNamespace(items=items, users=IdMap(["1"]), snapshot_id="s", path=tmp_path,
                               manifest={"source": {"path": str(source)}})
        monkeypatch.setattr(pipeline.scoring, "load_snapshot", lambda _dir: snap)
        return pipeline.begin_score_step(model_uri="models:/m/1", snapshot_dir=None, top_n=2, n_shards=1,
                                         db_url=db_url, batch_key=key)

    current = begin("ml-1m", ml1m)
    chunk = RecChunk(np.array(["1"], dtype=object), np.array([["1196", "260"]], dtype=object),
                     np.array([[2.0, 1.0]]), np.array([2]))
    with RecommendationStore(db_url) as store:
        store.write_shard(store.get_batch("ml-1m"), [chunk], expected_rows=2)
    pipeline.publish_step(current, db_url=db_url)
    begin("ml-100k", ml100k)  # killed right after: its shards never run, it is never published
    with RecommendationStore(db_url) as store:
        seen = [(r["item_id"], r["title"]) for r in store.user_recommendations("1", 2)]
        assert seen == [("1196", "Star Wars: Episode V - The Empire Strikes Back (1980)"),
                        ("260", "Star Wars: Episode IV - A New Hope (1977)")]
        assert titles_of(store, store.get_batch("ml-100k").batch_id) == {"1196": "Savage Nights (1992)"}
        assert store.query("top_items", n=1)[0]["title"].startswith("Star Wars: Episode V")


def test_titles_are_fixed_once_published_and_go_with_their_batch(db_url):
    titles = pd.DataFrame({"item_id": ["i1", "i2"], "title": ["One", "Two"], "genres": [None, "Drama"]})
    with RecommendationStore(db_url, keep=1) as store:
        first = store.begin_batch("first", model_name="m", top_n=3)
        assert store.write_items(first, titles) == 2
        store.write_shard(first, make_chunks(users(4), 3, 0), expected_rows=12)
        store.publish(first)
        with pytest.raises(StoreError, match="published, not staging"):
            store.write_items(first, titles.assign(title="Changed"))
        assert titles_of(store, first.batch_id) == {"i1": "One", "i2": "Two"}
        doomed = store.begin_batch("doomed", model_name="m", top_n=3)
        store.write_items(doomed, titles)
        store.fail(doomed, "scoring died")
        assert titles_of(store, doomed.batch_id) == {}  # failed: its titles go with its rows
        write_batch(store, "second", make_chunks(users(4), 3, 1), top_n=3)  # keep=1 expires the first
        assert store.get_batch("first").status == "expired" and titles_of(store, first.batch_id) == {}
        with pytest.raises(StoreError, match="missing, not staging"):
            store.write_items(999, titles)


LEGACY_ITEMS = 'CREATE TABLE "recvae_items" (item_id TEXT PRIMARY KEY, title TEXT, genres TEXT, updated_at {} NOT NULL)'


def test_database_with_the_shared_titles_table_keeps_working(db_url):
    """A database made by the previous schema (one titles table for all batches) is migrated when opened: every
    live batch gets the titles its readers saw; dead batches get none."""
    with RecommendationStore(db_url) as store:
        old = write_batch(store, "old", make_chunks(users(3), 2, 0), top_n=2)
        current = write_batch(store, "current", make_chunks(users(3), 2, 1), top_n=2)
        staging = write_batch(store, "staging", make_chunks(users(3), 2, 2), top_n=2, publish=False)
        dead = store.begin_batch("dead", model_name="m", top_n=2)
        store.fail(dead, "x")
    legacy = {f"i{k}": f"Film {k}" for k in range(N_ITEMS)}
    eng = create_engine(db_url)
    with eng.begin() as conn:  # today's layout, as the previous version created it
        conn.execute(text('DROP TABLE "recvae_items"'))
        conn.execute(text(LEGACY_ITEMS.format("TEXT" if db_url.startswith("sqlite") else "TIMESTAMPTZ")))
        conn.execute(text('INSERT INTO "recvae_items" VALUES (:i, :t, NULL, CURRENT_TIMESTAMP)'),
                     [{"i": i, "t": t} for i, t in legacy.items()])
    eng.dispose()
    with RecommendationStore(db_url) as store:
        rows = store.user_recommendations("u0", 2)
        assert [r["title"] for r in rows] == [legacy[r["item_id"]] for r in rows] and len(rows) == 2
        for b in (old.batch_id, current.batch_id, staging.batch_id):
            assert titles_of(store, b) == legacy
        assert titles_of(store, dead.batch_id) == {}
        new = store.begin_batch("new", model_name="m", top_n=2)
        store.write_items(new, pd.DataFrame({"item_id": ["i0"], "title": ["New"]}))
        assert titles_of(store, current.batch_id) == legacy
    with RecommendationStore(db_url) as again:  # migrated once: the next opening finds the current layout
        again.ensure_schema()
        assert titles_of(again, new.batch_id) == {"i0": "New"}


# ---------------------------------------------------------------------------------------------------------------
# abandoned batches and gc


def test_publish_fails_abandoned_batches_and_deletes_their_rows(db_url):
    """A batch killed after writing its rows stayed staging for ever with them: the next publish fails it (idle
    beyond stale_after_s) and deletes its rows (and titles: see the gc test)."""
    with RecommendationStore(db_url, stale_after_s=3600) as store:
        nxt = store.begin_batch("next", model_name="m", top_n=3)  # begun before the other died
        killed = store.begin_batch("killed", model_name="m", top_n=3)
        store.write_shard(killed, make_chunks(users(10), 3, 1), expected_rows=30)
        store.write_shard(nxt, make_chunks(users(10), 3, 2), expected_rows=30)
        age(store, killed.batch_id, hours=2)
        store.publish(nxt)
        after = store.get_batch("killed")
        assert after.status == "failed" and "abandoned" in after.error
        assert store.count_rows(killed.batch_id) == 0
        assert store.current_batch().batch_key == "next"


def test_gc_fails_only_abandoned_batches_and_reports_it(db_url):
    with RecommendationStore(db_url) as store:
        current = write_batch(store, "current", make_chunks(users(5), 3, 0), top_n=3)
        killed = store.begin_batch("killed", model_name="m", top_n=3)
        store.write_items(killed, pd.DataFrame({"item_id": ["i1", "i2"], "title": ["One", "Two"]}))
        store.write_shard(killed, make_chunks(users(10), 3, 1), expected_rows=30)
        fresh = store.begin_batch("fresh", model_name="m", top_n=3)
        assert store.gc().lines() == [
            "nothing to clean: no abandoned staging batch, no rows of failed or expired batches"]
        age(store, killed.batch_id, hours=7)  # beyond the default 6 hours
        report = store.gc()
        assert report.failed == [killed.batch_id] and report.cleaned == {killed.batch_id: (30, 2)}
        assert report.lines() == [f"batch {killed.batch_id}: abandoned in staging, marked failed",
                                  f"batch {killed.batch_id}: deleted 30 row(s) and 2 title(s)"]
        assert store.get_batch("fresh").status == "staging" and store.get_batch(fresh.batch_id).error is None
        assert store.current_batch().batch_id == current.batch_id and store.count_rows(current.batch_id) == 15
        assert store.gc().failed == [] and store.gc(stale_after_s=0).failed == [fresh.batch_id]


@pytest.mark.parametrize("cleaner", ["gc", "begin"])
def test_a_batch_is_never_failed_while_its_shard_is_written(db_url, cleaner):
    """A live writer in the middle of a long shard (here idle beyond stale_after_s) is not abandoned, by gc or by
    another run's begin: PostgreSQL skips the batch row its writer holds, SQLite waits for the writer and then
    sees its fresh activity."""
    with RecommendationStore(db_url) as store:
        batch = store.begin_batch("live", model_name="m", top_n=3)
    writing, release, result = threading.Event(), threading.Event(), {}

    def writer() -> None:
        def slow():
            yield make_chunks(users(5), 3, 0)[0]
            writing.set()
            release.wait(30)
            yield make_chunks(users(5, offset=5), 3, 1)[0]

        try:
            with RecommendationStore(db_url) as w:
                result["written"] = w.write_shard(batch, slow(), expected_rows=30)
        except BaseException as exc:  # surfaced in the test thread
            result["error"] = exc

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        assert writing.wait(30)
        time.sleep(1.2)  # the batch and its shard start are now older than stale_after_s
        timer = threading.Timer(0.5, release.set)  # SQLite's gc waits for the writer: let it finish
        timer.start()
        with RecommendationStore(db_url, stale_after_s=1.0) as store:
            if cleaner == "gc":
                assert store.gc().failed == []
            else:
                store.begin_batch("other", model_name="m", top_n=3)
    finally:
        release.set()
        thread.join(30)
    assert "error" not in result and result["written"]["rows"] == 30
    with RecommendationStore(db_url) as store:
        assert store.get_batch("live").status == "staging"
        assert store.publish("live").row_count == 30


# ---------------------------------------------------------------------------------------------------------------
# URLs and credentials


@pytest.mark.parametrize(
    "url, secret",
    [
        ("postgresql+psycopg://alice:s3cr3t-pw@db.example:5432/recs", "s3cr3t-pw"),
        ("postgresql://alice:p%40ss%3Aword@db/recs?sslmode=require", "p@ss:word"),
        ("postgresql+psycopg://alice@db/recs?password=qu3ry-pw", "qu3ry-pw"),
        ("not a url://bob:hunter2@x", "hunter2"),
    ],
)
def test_mask_url_hides_passwords(url, secret):
    masked = mask_url(url)
    assert secret not in masked and "%40" not in masked and "***" in masked
    assert "alice" in masked or "bob" in masked


def test_unreachable_database_gives_a_masked_error():
    with socket_closed_port() as port:
        store = RecommendationStore(f"postgresql+psycopg://alice:s3cr3t-pw@127.0.0.1:{port}/recs", connect_timeout_s=3)
        with pytest.raises(StoreError) as err:
            store.begin_batch("k", model_name="m", top_n=5)
    message = "".join(traceback.format_exception(err.value))
    assert "cannot connect" in str(err.value) and f"127.0.0.1:{port}" in str(err.value)
    assert "s3cr3t-pw" not in message and "***" in str(err.value)
    assert "s3cr3t-pw" not in repr(store) and "s3cr3t-pw" not in repr(store.engine)


def test_unreachable_sqlite_path_and_bad_urls(tmp_path):
    with pytest.raises(StoreError, match="cannot connect|unable to open"):
        RecommendationStore(f"sqlite:///{tmp_path}/missing/dir/x.db").ensure_schema()
    with pytest.raises(StoreError, match="only sqlite and postgresql"):
        RecommendationStore("mysql://u:pw@h/db")
    with pytest.raises(StoreError, match="invalid database URL"):
        RecommendationStore("::::")
    airflow_style = RecommendationStore("postgres://u:pw@127.0.0.1:1/db")  # no connection until used
    assert airflow_style.dialect == "postgresql" and airflow_style.engine.url.drivername == "postgresql+psycopg"
    with pytest.raises(StoreError, match="only supported on PostgreSQL"):
        RecommendationStore(f"sqlite:///{tmp_path}/x.db", tables=TableNames(schema="s"))


@pytest.mark.postgres
def test_unreachable_database_leaves_the_current_batch(postgres_db_url):
    """A wrong password/port for the same server: error, nothing changes in the real database."""
    with RecommendationStore(postgres_db_url) as store:
        old = make_chunks(users(5), 2, seed=0)
        write_batch(store, "old", old, top_n=2)
    with socket_closed_port() as port:
        wrong = postgres_db_url.replace("postgres@", "postgres:pw-9f8e@").rsplit(":", 1)[0] + f":{port}/x"
        with pytest.raises(StoreError) as err:
            RecommendationStore(wrong, connect_timeout_s=3).begin_batch("new", model_name="m", top_n=2)
    assert "pw-9f8e" not in str(err.value)
    assert view_rows(postgres_db_url) == rows_of(old)


@pytest.mark.parametrize(
    "url, shown",
    [
        ("u:secretpw@127.0.0.1", "u:***@127.0.0.1"),  # no scheme: the error echoed the password
        ("postgresql://u:secretpw@@127.0.0.1/db", "postgresql://u:***@127.0.0.1/db"),  # '@' in it: host 'pw@...'
    ],
)
def test_malformed_url_errors_never_show_the_password(url, shown):
    with pytest.raises(StoreError) as err:
        RecommendationStore(url)
    assert "secretpw" not in str(err.value) and shown in str(err.value)


def test_silent_server_fails_within_the_connect_timeout():
    """A host that accepts TCP but never answers (a firewall, a hung server): one masked error in seconds."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        store = RecommendationStore(f"postgresql+psycopg://u:s3cr3t-pw@127.0.0.1:{port}/db", connect_timeout_s=2)
        start = time.monotonic()
        with pytest.raises(StoreError, match="connecting: cannot connect to .*u:\\*\\*\\*@127.0.0.1") as err:
            store.check_connection()
    assert time.monotonic() - start < 10 and "s3cr3t-pw" not in str(err.value)


class socket_closed_port:
    """A local TCP port nobody listens on (bound then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc) -> None:
        return None


# ---------------------------------------------------------------------------------------------------------------
# item titles and query plans


def test_item_titles_of_a_staging_batch(db_url, tmp_path):
    (tmp_path / "ml1m").mkdir()
    movies = "1::Toy Story (1995)::Animation|Comedy\n2::Amélie (2001)::Comedy\n"
    (tmp_path / "ml1m" / "movies.dat").write_bytes(movies.encode("latin-1"))
    ml1m = pd.DataFrame({"item_id": ["1", "2"], "title": ["Toy Story (1995)", "Amélie (2001)"]})
    with RecommendationStore(db_url) as store:
        batch = store.begin_batch("k", model_name="m", top_n=2)
        assert store.load_item_metadata(batch, tmp_path / "ml1m") == 2
        ml1m.loc[0, "title"] = "Toy Story"
        assert store.write_items(batch, ml1m.iloc[:1]) == 1  # a retry replaces the batch's titles
        assert store.load_item_metadata(batch, tmp_path) == 0
        assert titles_of(store, batch.batch_id) == {"1": "Toy Story"}
        with pytest.raises(StoreError, match="repeats item id"):
            store.write_items(batch, ml1m.iloc[[0, 0]])


def test_a_users_list_is_an_index_lookup(db_url):
    with RecommendationStore(db_url) as store:
        write_batch(store, "k", make_chunks(users(200), 5, seed=0))
        sql = load_query("user_top")
        with store.engine.connect() as conn:
            if store.dialect == "sqlite":
                explained = conn.execute(text("EXPLAIN QUERY PLAN " + sql), {"user_id": "u1", "n": 10})
                plan = " ".join(r[-1] for r in explained)
                assert "PRIMARY KEY" in plan and "SCAN r" not in plan, plan
            else:
                conn.execute(text("ANALYZE"))
                conn.execute(text("SET enable_seqscan = off"))  # tiny tables: ask whether an index path exists
                plan = " ".join(r[0] for r in conn.execute(text("EXPLAIN " + sql), {"user_id": "u1", "n": 10}))
                assert "recvae_recommendations_pkey" in plan, plan
