"""Using a model: sentence embeddings (and, to come, a predictor and an HTTP server)."""
