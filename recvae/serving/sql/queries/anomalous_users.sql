-- The :n most anomalous users of the current anomaly batch (`recvae anomalies`) by the score :score, with every
-- score and its percentile among the snapshot's training users. :score is 'nll_per_item' (-log-likelihood of the
-- user's items per item: does not grow with the profile's length), 'kl' (how far the encoder puts the user from
-- the prior), 'kl_low' (the lowest KL first: a profile the encoder finds no taste in, e.g. random items) or
-- 'neg_elbo' (-log-likelihood summed over the items + KL: the model's bound on -log p(x_u), which grows with the
-- profile's length). See README for which score catches which attack.
-- Parameters: :score, :n (how many users, e.g. 20).
SELECT a.user_id, a.n_items, a.nll_per_item, a.kl, a.neg_elbo, a.nll_per_item_pct, a.kl_pct, a.neg_elbo_pct
FROM ${user_anomalies} AS a
JOIN ${output_batches} AS b ON b.batch_id = a.batch_id
WHERE b.kind = 'user_anomalies' AND b.status = 'published' AND a.neg_elbo IS NOT NULL
ORDER BY CASE :score WHEN 'kl' THEN a.kl WHEN 'kl_low' THEN -a.kl WHEN 'neg_elbo' THEN a.neg_elbo
         ELSE a.nll_per_item END DESC, a.user_id
LIMIT :n;
