"""Sample-quality evaluation: metrics, feature networks, and the sharded evaluator.

- `metrics`: FID, KID, Inception Score, precision/recall as pure numpy functions of features.
- `inception`: the FID InceptionV3 in Flax and its weight loading (weights supplied by the user).
- `digits_classifier`: a small CNN trained on the offline digits, for download-free "digits-classifier" scores.
- `evaluator`: looks the feature network up by name, samples from a generator over the mesh, extracts
  features, caches real-data references.
- `vae_likelihood`: a VAE's held-out negative ELBO and its importance-sampled negative log-likelihood.
- `quality_table`: the quality protocol's mean and spread over seeds, as a Markdown table.
"""
