"""Load a tokenizer and a causal LM from any `model:` spec, safely and on the right device."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from danlu.config import ModelArgs
from danlu.models.check import check_adapter, check_model_folder, read_json
from danlu.models.device import pick_device, pick_dtype
from danlu.models.resolve import resolve_model
from danlu.models.vocab import match_vocabulary
from danlu.utils.errors import UsageError
from danlu.utils.system import configure_threads


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    path: Path
    """The local HF folder the model was loaded from."""


def load_tokenizer(spec: str | Path, trust_remote_code: bool = False) -> Any:
    """Tokenizer of a model spec (or folder), with a pad token that training can mask by position."""
    from transformers import AutoTokenizer

    path = spec if isinstance(spec, Path) else resolve_model(str(spec))
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        # Reusing EOS as pad is safe because labels mask padding by position, never by id.
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    args: ModelArgs | None = None, for_training: bool = False, head: str = "causal"
) -> Loaded:
    """Load `args.model` (+ adapter) with the dtype/device/attention/quantisation asked for.

    `head="score"` loads it as a one-label sequence classifier (a reward model: the base plus a
    new `score` head; a stage-rm result loads as itself)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    args = args or ModelArgs()
    configure_threads(args.threads)
    path = checked_model(args)
    device = pick_device(args.device)
    kwargs: dict[str, Any] = {
        "dtype": pick_dtype(args.model_dtype, device),
        "trust_remote_code": args.trust_remote_code,
        "use_safetensors": None if args.allow_pickle else True,
    }
    if args.attn_implementation != "auto":
        kwargs["attn_implementation"] = args.attn_implementation
    if args.quantization_bit is not None:
        kwargs["quantization_config"] = _bnb_config(args, kwargs["dtype"])
    if args.device_map:
        kwargs["device_map"] = args.device_map
    if head == "score":
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not args.device_map and args.quantization_bit is None:
        model.to(device)
    tokenizer = load_tokenizer(_tokenizer_home(path, args.adapter), args.trust_remote_code)
    if head == "score":  # batches are padded: the head reads the last token that is not padding
        model.config.pad_token_id = tokenizer.pad_token_id
    if args.adapter:
        match_vocabulary(model, tokenizer)
        model = _attach_adapter(model, args, for_training)
    model.train(for_training)
    return Loaded(model=model, tokenizer=tokenizer, path=path)


def checked_model(args: ModelArgs) -> Path:
    """The local folder of `args.model`, after every check a load needs (models.check): the
    config, the weights' headers, remote code, and the adapter against this base. Commands call
    it before heavy work; `load_model` calls it first too."""
    path = resolve_model(args.model, args.allow_pickle)
    check_model_folder(path, f"model '{args.model}'", args.allow_pickle, args.trust_remote_code)
    if args.adapter:  # before the base loads: a wrong adapter is refused in milliseconds
        check_adapter(Path(args.adapter).expanduser(), path, args.allow_pickle)
    return path


def _tokenizer_home(path: Path, adapter: str | None) -> Path:
    """A run's `final/` adapter carries the tokenizer it was trained with (chat template, added
    tokens): prefer it over the base model's."""
    if adapter:
        folder = Path(adapter).expanduser()
        if (folder / "tokenizer_config.json").is_file():
            return folder
    return path


def _bnb_config(args: ModelArgs, compute_dtype: Any) -> Any:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError("quantization_bit needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    if args.quantization_bit == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=args.quantization_type,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_use_double_quant=True,
    )


def _attach_adapter(model: Any, args: ModelArgs, for_training: bool) -> Any:
    from peft import PeftModel

    adapter = Path(args.adapter).expanduser()
    kind = read_json(adapter / "adapter_config.json", f"adapter '{args.adapter}'").get("peft_type")
    if for_training and kind in _PROMPT_LEARNING:
        raise UsageError(
            f"adapter '{args.adapter}' is a {kind} adapter, which peft cannot load for further "
            "training; train a new one (without adapter:), or continue a LoRA-family adapter"
        )
    try:
        return PeftModel.from_pretrained(model, adapter, is_trainable=for_training)
    except RuntimeError as exc:  # shapes the header check cannot see (prefix, IA3, ...)
        mismatch = _SIZE_MISMATCH.search(str(exc))
        if mismatch is None:
            raise
        raise UsageError(
            f"adapter '{args.adapter}' was trained on another base model: {mismatch.group(1)} "
            f"has shape {mismatch.group(2)}, the base model needs {mismatch.group(3)}; use the "
            "base it was trained on (adapter_config.json base_model_name_or_path)"
        ) from None


_PROMPT_LEARNING = ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING")

# torch's load_state_dict message: "size mismatch for NAME: copying a param with shape
# torch.Size([a, b]) from checkpoint, the shape in current model is torch.Size([c, d])."
_SIZE_MISMATCH = re.compile(
    r"size mismatch for ([\w.]+): copying a param with shape torch\.Size\((\[[^\]]*\])\) "
    r"from checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)"
)
