"""What a trained model needs to run, below both training and serving: its saved format, precision, predictions
and metrics."""
