import torch

from mtbert.model.heads import AttentionPooling, ParaphraseHead, SentimentHead, SimilarityHead
from mtbert.serve.embedding import mean_pool


def test_attention_pooling_starts_as_mean_pooling_and_ignores_padding() -> None:
    torch.manual_seed(0)
    pool = AttentionPooling(32)
    hidden = torch.randn(13, 7, 32)
    mask = torch.ones(13, 7, dtype=torch.long)
    mask[:, 4:] = 0
    torch.testing.assert_close(pool(hidden, mask), mean_pool(hidden, mask))
    torch.nn.init.normal_(pool.score.weight)
    changed = hidden.clone()
    changed[:, 4:] = 1e4  # padding positions must not matter
    torch.testing.assert_close(pool(hidden, mask), pool(changed, mask))
    assert not torch.allclose(pool(hidden, mask), mean_pool(hidden, mask))


def test_head_output_shapes() -> None:
    u, v = torch.randn(13, 32), torch.randn(13, 32)
    assert SentimentHead(32, 0.1)(u).shape == (13, 5)
    assert ParaphraseHead(32, 0.1)(u, v).shape == (13,)
    assert SimilarityHead()(u, v).shape == (13,)


def test_paraphrase_head_is_symmetric() -> None:
    head = ParaphraseHead(32, 0.0)
    u, v = torch.randn(13, 32), torch.randn(13, 32)
    torch.testing.assert_close(head(u, v), head(v, u))


def test_similarity_is_five_times_the_cosine() -> None:
    u = torch.randn(13, 32)
    torch.testing.assert_close(SimilarityHead()(u, 3 * u), torch.full((13,), 5.0))
    torch.testing.assert_close(SimilarityHead()(u, -u), torch.full((13,), -5.0))
