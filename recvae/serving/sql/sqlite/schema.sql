-- recvae recommendation tables for SQLite (3.35 or newer). Idempotent: every statement is IF NOT EXISTS.
-- ${name} placeholders are table/view/index names; recvae.store substitutes them only after checking each one
-- against ^[A-Za-z_][A-Za-z0-9_]{0,62}$ and double-quotes it. Times are ISO-8601 UTC text.
-- Statements are separated by a semicolon at the end of a line.

-- One row per batch run. Status: staging -> published -> superseded -> expired, or staging -> failed.
CREATE TABLE IF NOT EXISTS ${batches} (
    batch_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_key     TEXT    NOT NULL UNIQUE,              -- idempotency key (e.g. the Airflow run id)
    model_name    TEXT    NOT NULL,
    model_version TEXT,
    run_id        TEXT,                                 -- MLflow run id
    snapshot_id   TEXT,                                 -- dataset snapshot the histories came from
    top_n         INTEGER NOT NULL CHECK (top_n >= 1),
    n_items       INTEGER,                              -- catalogue size the model scored
    n_shards      INTEGER,
    user_count    INTEGER,                              -- filled when published
    expected_rows INTEGER,                              -- sum over users of min(top_n, unseen candidates)
    row_count     INTEGER,
    status        TEXT    NOT NULL DEFAULT 'staging'
                  CHECK (status IN ('staging', 'published', 'superseded', 'failed', 'expired')),
    error         TEXT,
    created_at    TEXT    NOT NULL,
    finished_at   TEXT,
    published_at  TEXT,
    superseded_at TEXT
);

-- At most one current batch: the database itself refuses a second 'published' row.
CREATE UNIQUE INDEX IF NOT EXISTS ${batches_published_idx} ON ${batches} (status) WHERE status = 'published';

-- Progress of each shard of a batch; a shard's rows and its row here are written in one transaction.
CREATE TABLE IF NOT EXISTS ${shards} (
    batch_id      INTEGER NOT NULL,
    shard         INTEGER NOT NULL CHECK (shard >= 0),
    user_count    INTEGER,
    expected_rows INTEGER,
    row_count     INTEGER,
    started_at    TEXT    NOT NULL,
    written_at    TEXT,                                 -- NULL while (or if) the shard's write has not committed
    PRIMARY KEY (batch_id, shard)
);

-- The primary key (batch_id, user_id, rank) is also the index for "a user's list in a batch":
-- WITHOUT ROWID stores the rows in that order, so one user's list is one contiguous range.
CREATE TABLE IF NOT EXISTS ${recommendations} (
    batch_id INTEGER NOT NULL,
    user_id  TEXT    NOT NULL,                          -- raw user id
    rank     INTEGER NOT NULL CHECK (rank >= 1),        -- 1 = best
    item_id  TEXT    NOT NULL,                          -- raw item id
    score    REAL    NOT NULL,
    shard    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, user_id, rank)
) WITHOUT ROWID;

-- Item titles (and genres) from the dataset's metadata, when it has any, per batch: a batch's titles are written
-- while it is staging and never change afterwards, so an unfinished batch never changes what readers of the
-- current one see (join on batch_id and item_id). Deleted with the batch's rows when it fails or expires.
CREATE TABLE IF NOT EXISTS ${items} (
    batch_id   INTEGER NOT NULL,
    item_id    TEXT    NOT NULL,
    title      TEXT,
    genres     TEXT,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (batch_id, item_id)
) WITHOUT ROWID;

-- What applications read: the rows of the one published batch. A single SELECT on it sees one committed
-- state, so it shows the whole old batch or the whole new one, never staging rows or a mix.
CREATE VIEW IF NOT EXISTS ${current_view} AS
SELECT r.batch_id, r.user_id, r.rank, r.item_id, r.score
FROM ${recommendations} AS r
JOIN ${batches} AS b ON b.batch_id = r.batch_id
WHERE b.status = 'published';
