-- recvae output tables for SQLite: what the model says beyond the lists (anomalous users, user embeddings, similar
-- items). Idempotent; placeholders and statement separators as in schema.sql.

-- One row per output batch. One published batch per kind; status as the lists' batches.
CREATE TABLE IF NOT EXISTS ${output_batches} (
    batch_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL CHECK (kind IN ('user_anomalies', 'user_embeddings', 'similar_items')),
    batch_key     TEXT    NOT NULL UNIQUE,              -- idempotency key (e.g. the Airflow run id)
    model_name    TEXT    NOT NULL,
    model_version TEXT,
    run_id        TEXT,                                 -- MLflow run id
    snapshot_id   TEXT,
    row_count     INTEGER,                              -- filled when published
    status        TEXT    NOT NULL DEFAULT 'staging'
                  CHECK (status IN ('staging', 'published', 'superseded', 'failed', 'expired')),
    error         TEXT,
    created_at    TEXT    NOT NULL,
    published_at  TEXT,
    superseded_at TEXT
);

CREATE UNIQUE INDEX IF NOT EXISTS ${output_batches_published_idx} ON ${output_batches} (kind)
    WHERE status = 'published';

-- Per user and batch: the user's items, -log-likelihood of them per item, KL(q || prior), the negative ELBO
-- (-sum log-likelihood + KL), and each as a percentile (0..100) among the snapshot's training users.
CREATE TABLE IF NOT EXISTS ${user_anomalies} (
    batch_id         INTEGER NOT NULL,
    user_id          TEXT    NOT NULL,
    n_items          INTEGER NOT NULL,
    nll_per_item     REAL,
    kl               REAL,
    neg_elbo         REAL,
    nll_per_item_pct REAL,
    kl_pct           REAL,
    neg_elbo_pct     REAL,
    PRIMARY KEY (batch_id, user_id)
);

-- The (user, item) histories the anomaly batch scored: what "items whose interactions come mostly from anomalous
-- users" is counted over.
CREATE TABLE IF NOT EXISTS ${anomaly_interactions} (
    batch_id INTEGER NOT NULL,
    user_id  TEXT    NOT NULL,
    item_id  TEXT    NOT NULL,
    PRIMARY KEY (batch_id, item_id, user_id)
);

-- Per user and batch: the posterior mean of q(z|x), a JSON array of floats.
CREATE TABLE IF NOT EXISTS ${user_embeddings} (
    batch_id  INTEGER NOT NULL,
    user_id   TEXT    NOT NULL,
    embedding TEXT    NOT NULL,
    PRIMARY KEY (batch_id, user_id)
);

-- Per item and batch: its nearest items by cosine of their decoder vectors, best first.
CREATE TABLE IF NOT EXISTS ${similar_items} (
    batch_id        INTEGER NOT NULL,
    item_id         TEXT    NOT NULL,
    rank            INTEGER NOT NULL CHECK (rank >= 1),
    similar_item_id TEXT    NOT NULL,
    score           REAL    NOT NULL,
    PRIMARY KEY (batch_id, item_id, rank)
);
