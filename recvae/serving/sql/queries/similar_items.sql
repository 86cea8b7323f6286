-- An item's :n most similar items in the current similar-items batch (`recvae similar-items`: cosine of the
-- decoder's item vectors), best first.
-- Parameters: :item_id (raw item id, text), :n (how many, e.g. 10).
SELECT s.rank, s.similar_item_id, s.score
FROM ${similar_items} AS s
JOIN ${output_batches} AS b ON b.batch_id = s.batch_id
WHERE b.kind = 'similar_items' AND b.status = 'published' AND s.item_id = :item_id AND s.rank <= :n
ORDER BY s.rank;
