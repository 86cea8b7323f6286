-- Catalogue coverage of the current batch: distinct items recommended / items in the catalogue the model scored.
-- No parameters. One row (none when no batch is published).
SELECT b.batch_id,
       COUNT(DISTINCT r.item_id) AS items_recommended,
       b.n_items AS catalogue_items,
       CAST(COUNT(DISTINCT r.item_id) AS DOUBLE PRECISION) / b.n_items AS coverage
FROM ${batches} AS b
JOIN ${recommendations} AS r ON r.batch_id = b.batch_id
WHERE b.status = 'published'
GROUP BY b.batch_id, b.n_items;
