-- The :n items recommended to the most users in the current batch, with their titles (those of that batch) when known.
-- user_share = users who get the item / users in the batch.
-- Parameters: :n (how many items, e.g. 20).
WITH counts AS (
    SELECT batch_id, item_id, COUNT(*) AS times_recommended, AVG(CAST(rank AS DOUBLE PRECISION)) AS mean_rank
    FROM ${current_view}
    GROUP BY batch_id, item_id
), users AS (
    SELECT COUNT(DISTINCT user_id) AS n_users FROM ${current_view}
)
SELECT c.item_id, i.title, c.times_recommended,
       CAST(c.times_recommended AS DOUBLE PRECISION) / u.n_users AS user_share,
       c.mean_rank
FROM counts AS c
CROSS JOIN users AS u
LEFT JOIN ${items} AS i ON i.batch_id = c.batch_id AND i.item_id = c.item_id
ORDER BY c.times_recommended DESC, c.item_id
LIMIT :n;
