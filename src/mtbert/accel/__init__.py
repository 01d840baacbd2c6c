"""Speed on a GPU, composed with the readable path through one seam (train.speed.Speed, built by modes.speed_for,
which mtbert.fit calls): kernel settings, shaped and unpadded passes, a compiled encoder, recorded CUDA-graph steps."""
