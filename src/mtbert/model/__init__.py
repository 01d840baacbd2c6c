"""What a forward pass needs: the encoder, checkpoint loading, the tokenizer, the heads, the multitask model."""
