-- A user's top-:n recommendations in the current (published) batch, best first.
-- Parameters: :user_id (raw user id, text), :n (how many, e.g. 10).
-- Served by the primary key (batch_id, user_id, rank): one index range per call.
SELECT r.rank, r.item_id, r.score
FROM ${current_view} AS r
WHERE r.user_id = :user_id
  AND r.rank <= :n
ORDER BY r.rank;
