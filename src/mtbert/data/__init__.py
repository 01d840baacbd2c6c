"""The data sets: CSV files read and validated, fetched, tokenized once per task, sampled into batches."""
