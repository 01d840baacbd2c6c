"""Work over many trainings, each a call of mtbert.fit: hyper-parameter search (hpo.py, space.py, progress.py), the
ablation over seeds (ablate.py), reports of runs (report.py), synthetic SST data (synth.py, synth_api.py)."""
