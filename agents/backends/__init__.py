"""Generation backends: ``hf`` (default) and ``vllm`` (optional extra). A backend turns prompt token ids into
completion token ids (``generate``) and, after each policy update, makes its engine follow the new weights
(``sync_weights``)."""

BACKENDS = ("hf", "vllm")


def check_backend(name: str) -> None:
    """Fail before any work for an unknown backend, or for ``vllm`` without the extra installed (naming it)."""
    if name not in BACKENDS:
        raise ValueError(f"backend={name!r}: use one of {BACKENDS}")
    if name == "vllm":
        from .vllm import import_vllm

        import_vllm()


def make_backend(name: str, model, tokenizer, **kwargs):
    check_backend(name)
    if name == "hf":
        from .hf import HFBackend

        return HFBackend(model, tokenizer, **kwargs)
    from .vllm import VLLMBackend

    return VLLMBackend(model, tokenizer, **kwargs)
