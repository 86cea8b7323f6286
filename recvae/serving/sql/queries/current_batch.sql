-- The currently published batch: which model, data and run produced it, and its size. No parameters.
SELECT batch_id, batch_key, model_name, model_version, run_id, snapshot_id, top_n, n_items,
       user_count, row_count, created_at, published_at
FROM ${batches}
WHERE status = 'published';
