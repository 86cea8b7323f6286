-- Items whose interactions come mostly from anomalous users, in the current anomaly batch: users whose percentile
-- of the score :score ('nll_per_item', 'kl', 'kl_low' or 'neg_elbo', as in anomalous_users.sql) is at least :min_pct count as
-- anomalous; an item is listed when at least :min_users users have it and the anomalous share of them is at least
-- :min_share (0.5: "mostly"). What a pushed item looks like.
-- Parameters: :score, :min_pct (e.g. 95), :min_share (e.g. 0.5), :min_users (e.g. 5), :n (how many items, e.g. 20).
WITH cur AS (
    SELECT batch_id FROM ${output_batches} WHERE kind = 'user_anomalies' AND status = 'published'
), flagged AS (
    SELECT a.batch_id, a.user_id,
           CASE WHEN (CASE :score WHEN 'kl' THEN a.kl_pct WHEN 'kl_low' THEN 100 - a.kl_pct
                      WHEN 'neg_elbo' THEN a.neg_elbo_pct ELSE a.nll_per_item_pct END)
                     >= CAST(:min_pct AS DOUBLE PRECISION) THEN 1 ELSE 0 END AS anomalous
    FROM ${user_anomalies} AS a
    JOIN cur ON cur.batch_id = a.batch_id
), per_item AS (
    SELECT i.item_id, COUNT(*) AS users, SUM(f.anomalous) AS anomalous_users
    FROM ${anomaly_interactions} AS i
    JOIN flagged AS f ON f.batch_id = i.batch_id AND f.user_id = i.user_id
    GROUP BY i.item_id
)
SELECT item_id, users, anomalous_users, CAST(anomalous_users AS DOUBLE PRECISION) / users AS anomalous_share
FROM per_item
WHERE users >= :min_users
  AND CAST(anomalous_users AS DOUBLE PRECISION) / users >= CAST(:min_share AS DOUBLE PRECISION)
ORDER BY anomalous_share DESC, users DESC, item_id
LIMIT :n;
