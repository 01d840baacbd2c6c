"""`mtbert export`: a trained model's encoder as a Hugging Face folder, with the pooling and heads beside it.

A BERT encoder's weights are renamed with the same table that loads Hugging Face checkpoints (mtbert.model.hf), read
backwards, so that `transformers.BertModel.from_pretrained(OUT)` computes the hidden states mtbert does; another
family's encoder is transformers' own model, written under its own names.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from mtbert.errors import MtbertError
from mtbert.inference.saved import load_model
from mtbert.model.auto import AutoEncoder
from mtbert.model.hf import hf_config, hf_state_dict
from mtbert.outputs import writable_dir

HEADS = "mtbert_heads.safetensors"  # the pooling and task heads, under the names of mtbert's MultitaskModel
USAGE = """# {name}

The encoder of an mtbert multitask model (SST-5 sentiment, Quora paraphrase, STS similarity), fine-tuned from a
Hugging Face checkpoint: `config.json`, `model.safetensors` and the tokenizer files load in `transformers`:

```python
from transformers import AutoModel, AutoTokenizer
model = AutoModel.from_pretrained("{name}")
tokenizer = AutoTokenizer.from_pretrained("{name}")
hidden = model(**tokenizer(["A sentence."], return_tensors="pt")).last_hidden_state
```

mtbert's sentence embedding is not BERT's pooler output: it is an attention pooling of the token states, whose
weights are in `{heads}` (`pool.*`) with the task heads (`heads.sst.*`, `heads.para.*`, `heads.sts.*`), under
mtbert's parameter names. `mtbert.json` is the trained model's description: its settings and dev metrics
{metrics}. To predict with the heads, use mtbert on the original model folder (`mtbert predict --checkpoint`).
"""


def export(checkpoint: str | Path, out: str | Path) -> Path:
    """Writes the Hugging Face folder `out` (atomically: it appears complete or not at all) and returns it."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MtbertError(f"--out {out}: exists and is not an empty folder; give a new folder")
    writable_dir("--out", out.parent)
    model, tokenizer, meta = load_model(checkpoint)
    if model.moe is not None:
        raise MtbertError(
            f"--checkpoint {checkpoint}: a mixture of {len(model.moe.experts)} expert encoders has no "
            "single BERT encoder to export"
        )
    if model.tag_vocab is not None:
        raise MtbertError(
            f"--checkpoint {checkpoint}: its encoder adds POS/NER tag embeddings, which a Hugging Face "
            "BertModel does not have"
        )
    if isinstance(model.encoder, AutoEncoder):  # another family: transformers' own names and config
        hf_model = model.encoder.hf
        encoder_state = {k: v.detach().contiguous().cpu() for k, v in hf_model.state_dict().items()}
        config = {**hf_model.config.to_dict(), "architectures": [type(hf_model).__name__]}
    else:
        encoder_state, config = hf_state_dict(model.encoder), hf_config(model.encoder, "BertModel")
    heads_state = {
        k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith("encoder.")
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        save_file(encoder_state, tmp / "model.safetensors", metadata={"format": "pt"})
        save_file(heads_state, tmp / HEADS, metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "mtbert.json").write_text(json.dumps(meta, indent=2) + "\n")
        tokenizer.save(tmp)
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in (meta.get("dev_metrics") or {}).items() if "/" in k)
        (tmp / "README.md").write_text(
            USAGE.format(name=out.name, heads=HEADS, metrics=f"({metrics})" if metrics else "")
        )
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
