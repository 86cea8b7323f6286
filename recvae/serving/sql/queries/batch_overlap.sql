-- How much two batches agree, over the users present in both, looking at each user's top-:n:
--   mean_jaccard      = mean over users of |A & B| / |A | B|
--   mean_common_share = mean over users of |A & B| / |A|   (share of batch A's list still in batch B)
-- Parameters: :batch_a, :batch_b (batch ids from the batches table), :n (list length compared, e.g. 10).
WITH a AS (
    SELECT user_id, item_id FROM ${recommendations} WHERE batch_id = :batch_a AND rank <= :n
), b AS (
    SELECT user_id, item_id FROM ${recommendations} WHERE batch_id = :batch_b AND rank <= :n
), size_a AS (
    SELECT user_id, COUNT(*) AS n_a FROM a GROUP BY user_id
), size_b AS (
    SELECT user_id, COUNT(*) AS n_b FROM b GROUP BY user_id
), common AS (
    SELECT a.user_id, COUNT(*) AS n_common
    FROM a JOIN b ON b.user_id = a.user_id AND b.item_id = a.item_id
    GROUP BY a.user_id
), per_user AS (
    SELECT sa.user_id, sa.n_a, sb.n_b, COALESCE(c.n_common, 0) AS n_common
    FROM size_a AS sa
    JOIN size_b AS sb ON sb.user_id = sa.user_id
    LEFT JOIN common AS c ON c.user_id = sa.user_id
)
SELECT COUNT(*) AS users,
       AVG(CAST(n_common AS DOUBLE PRECISION) / (n_a + n_b - n_common)) AS mean_jaccard,
       AVG(CAST(n_common AS DOUBLE PRECISION) / n_a) AS mean_common_share
FROM per_user;
