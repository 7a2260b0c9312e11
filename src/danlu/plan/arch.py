"""Architecture spec of a decoder-only transformer and its exact parameter counts.

Counts follow the module layout of the Hugging Face implementations (LlamaForCausalLM and
relatives): per block q/k/v/o projections, a gated (SwiGLU: gate, up, down) or plain (GELU:
up, down) MLP, two norms; token embeddings, a final norm and an output head unless tied.
LLaMA-7B comes out at 6,738,415,616 parameters, the figure in its published checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Module names LoRA can target -> (fan-in, fan-out) as functions of the spec; aliases cover
# ChatGLM (query_key_value, dense*), Baichuan (W_pack), Bloom (query_key_value) and GPT-2 style.
_FUSED_QKV = ("query_key_value", "W_pack", "c_attn", "qkv_proj")


@dataclass(frozen=True)
class Arch:
    """The numbers of a model's config.json that decide its memory."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    head_dim: int = 0
    """0 = hidden // heads."""
    tie_embeddings: bool = False
    gated_mlp: bool = True
    """SwiGLU (3 matrices) as in LLaMA/Qwen; False = GELU MLP (2 matrices) as in Bloom, ChatGLM-6B."""
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    norm: str = "rms"
    """`rms` (weight only) or `layer` (weight and bias)."""
    position: str = "rope"
    """`rope`, `alibi` or `learned` (adds max_positions x hidden parameters)."""
    max_positions: int = 4096
    embed_norm: bool = False
    """A LayerNorm right after the embeddings (Bloom)."""
    aliases: tuple[str, ...] = field(default=(), compare=False)

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.d_head

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.d_head

    @property
    def norm_params(self) -> int:
        return self.hidden * (2 if self.norm == "layer" else 1)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(fan-in, fan-out) of each linear layer in one block, by its LLaMA name."""
        h, f = self.hidden, self.intermediate
        shapes = {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "up_proj": (h, f),
            "down_proj": (f, h),
        }
        if self.gated_mlp:
            shapes["gate_proj"] = (h, f)
        return shapes

    def block_linear_params(self) -> int:
        """Weights of the block's linear layers: the part that int8/int4 quantisation shrinks."""
        return sum(i * o for i, o in self.linear_shapes().values())

    def block_params(self) -> int:
        """Every parameter of one block: linears + biases + 2 norms."""
        bias = 0
        if self.qkv_bias:
            bias += self.q_dim + 2 * self.kv_dim
        if self.o_bias:
            bias += self.hidden
        if self.mlp_bias:
            bias += self.intermediate * (2 if self.gated_mlp else 1) + self.hidden
        return self.block_linear_params() + bias + 2 * self.norm_params

    def embedding_params(self) -> int:
        """Token embeddings (+ learned positions, + embedding norm)."""
        n = self.vocab * self.hidden
        if self.position == "learned":
            n += self.max_positions * self.hidden
        if self.embed_norm:
            n += self.norm_params
        return n

    def head_params(self) -> int:
        """Output projection (0 when tied to the embeddings) + the final norm."""
        return (0 if self.tie_embeddings else self.vocab * self.hidden) + self.norm_params

    def total_params(self) -> int:
        return self.embedding_params() + self.layers * self.block_params() + self.head_params()

    def largest_tensor(self) -> int:
        """Elements of the biggest single parameter: the embedding matrix, or an MLP matrix."""
        return max(self.vocab * self.hidden, self.hidden * self.intermediate)

    def lora_shape(self, target: str) -> list[tuple[int, int]]:
        """(fan-in, fan-out) of the block linears a LoRA target name selects."""
        shapes = self.linear_shapes()
        if target in ("all-linear", "all"):
            return list(shapes.values())
        if target in _FUSED_QKV:
            return [(self.hidden, self.q_dim + 2 * self.kv_dim)]
        alias = {
            "dense": "o_proj",
            "out_proj": "o_proj",
            "c_proj": "o_proj",
            "wo": "o_proj",
            "dense_4h_to_h": "down_proj",
            "fc2": "down_proj",
            "w2": "down_proj",
            "fc1": "up_proj",
            "w1": "gate_proj",
            "w3": "up_proj",
            "wq": "q_proj",
            "wk": "k_proj",
            "wv": "v_proj",
        }
        if target == "dense_h_to_4h":  # ChatGLM fuses gate and up into one matrix
            return [(self.hidden, self.intermediate * (2 if self.gated_mlp else 1))]
        name = alias.get(target, target)
        return [shapes[name]] if name in shapes else []
