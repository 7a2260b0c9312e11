"""`qlora`: LoRA on a base loaded 4/8-bit by bitsandbytes (`quantization_bit`).

On CPU, bitsandbytes (>= 0.49) repacks a Linear4bit's weight into a bf16-scaled inference layout
the first time it runs in eval mode without grad, and from then on routes every matmul through
its `gemv_4bit` inference kernel. That silently changes the quantised weights mid-run (absmax
rounded to bf16) after any evaluation. We switch that repacking off, so training always uses the
dequantise + matmul autograd path, whose LoRA gradients tests/methods prove equal to a
dequantised-weights reference. A model that is not quantised is refused: qlora never trains in
full precision behind the user's back.
"""

from __future__ import annotations

from typing import Any

from danlu.config.methods import LoraArgs
from danlu.methods import _peft
from danlu.methods.lora import lora_config
from danlu.methods.registry import MethodContext, is_quantized, register
from danlu.utils.errors import UsageError


@register("qlora", "lora")
def prepare(model: Any, params: LoraArgs, ctx: MethodContext) -> Any:
    from peft import PeftModel

    base = model.get_base_model() if isinstance(model, PeftModel) else model
    if not is_quantized(base) or not _bnb_layers(base):
        raise UsageError(
            "method 'qlora' needs a base loaded 4- or 8-bit by bitsandbytes: set "
            "quantization_bit: 4 (or 8) and pip install bitsandbytes"
        )
    disable_cpu_inference_repack(base)
    if not isinstance(model, PeftModel):
        from peft import prepare_model_for_kbit_training

        # The engine decides on gradient checkpointing; here only freeze + fp32 norms.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return _peft.wrap(model, lora_config(params, model), ctx, "qlora")


def _bnb_layers(model: Any) -> list[Any]:
    names = {"Linear4bit", "Linear8bitLt"}
    return [m for m in model.modules() if type(m).__name__ in names]


def disable_cpu_inference_repack(model: Any) -> int:
    """Keep bitsandbytes 4-bit layers on their training path on CPU; undo any repack done so far.

    Returns how many layers had already been repacked (and were restored).
    """
    restored = 0
    for layer in _bnb_layers(model):
        if not hasattr(layer, "support_avx512bf16_for_cpu"):
            continue  # 8-bit layers, or a bitsandbytes without the CPU repack
        layer.support_avx512bf16_for_cpu = False
        weight = layer.weight
        if getattr(weight.quant_state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                weight.data, weight.quant_state
            )
            restored += 1
    return restored
