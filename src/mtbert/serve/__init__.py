"""Using a trained model: the Python API (predictor.py, mtbert.load), predict's row formats, the HTTP server
(http.py, batching.py), sentence embeddings (embedding.py) and export to Hugging Face (export.py)."""
