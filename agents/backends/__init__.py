"""Generation backends: ``hf`` (default) and ``vllm`` (optional extra). A backend turns prompt token ids into
completion token ids (``generate``) and, after each policy update, makes its engine follow the new weights
(``sync_weights``)."""

BACKENDS = ("hf",)


def make_backend(name: str, model, tokenizer, **kwargs):
    if name == "hf":
        from .hf import HFBackend

        return HFBackend(model, tokenizer, **kwargs)
    raise ValueError(f"backend={name!r}: use one of {BACKENDS}")
