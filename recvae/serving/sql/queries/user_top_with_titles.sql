-- A user's top-:n recommendations in the current batch joined with that batch's item titles (NULL when none).
-- Parameters: :user_id (raw user id, text), :n (how many, e.g. 10).
SELECT r.rank, r.item_id, i.title, i.genres, r.score
FROM ${current_view} AS r
LEFT JOIN ${items} AS i ON i.batch_id = r.batch_id AND i.item_id = r.item_id
WHERE r.user_id = :user_id
  AND r.rank <= :n
ORDER BY r.rank;
