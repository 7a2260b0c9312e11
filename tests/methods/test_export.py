"""`danlu export`: the GGUF llama.cpp loads computes what transformers computes (f16), with an
adapter merged in; llama, qwen2 and glm families; q8_0 / q4_k_m smaller; merged HF folders;
every refusal with its one line; an interrupted export leaves no output."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from danlu.methods.export import export_model
from danlu.methods.gguf import fetch_converter
from danlu.utils.errors import UsageError

PROMPT = "<|im_start|>user\nHow hot should the water be for green tea?<|im_end|>\n"


@pytest.fixture(scope="module")
def converter():
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (the gguf extra)")
    from danlu.methods.gguf import converter_script

    try:
        return converter_script()
    except UsageError as exc:
        pytest.skip(str(exc))


def _gguf_logits(path: Path, ids: list[int]) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def _hf_logits(model_dir: Path, ids: list[int], adapter: Path | None = None) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _ids(tokenizer) -> list[int]:
    return tokenizer(PROMPT, add_special_tokens=False)["input_ids"]


def _close(gguf: np.ndarray, hf: np.ndarray, tol: float) -> None:
    """Same logits within `tol`, and the same greedy token wherever the top two are apart."""
    assert np.abs(gguf - hf).max() < tol
    top2 = np.sort(hf, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * tol
    assert clear.any()
    assert (gguf.argmax(-1)[clear] == hf.argmax(-1)[clear]).all()


def test_f16_gguf_computes_what_transformers_computes(
    converter, tiny_model_dir, tokenizer, tmp_path
):
    done = export_model(str(tiny_model_dir), tmp_path / "out")
    assert sorted(done.files) == ["Modelfile", "model-f16.gguf"] and done.family == "LLaMA"
    ids = _ids(tokenizer)
    _close(
        _gguf_logits(tmp_path / "out" / "model-f16.gguf", ids),
        _hf_logits(tiny_model_dir, ids),
        2e-2,
    )
    modelfile = (tmp_path / "out" / "Modelfile").read_text(encoding="utf-8").splitlines()
    assert modelfile[0] == "FROM ./model-f16.gguf" and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_gguf_carries_the_tokenizer_and_chat_template(
    converter, tiny_model_dir, tokenizer, tmp_path
):
    from gguf import GGUFReader

    export_model(str(tiny_model_dir), tmp_path / "out")
    reader = GGUFReader(tmp_path / "out" / "model-f16.gguf")
    field = reader.fields["tokenizer.chat_template"]
    assert bytes(field.parts[field.data[0]]).decode() == tokenizer.chat_template
    from llama_cpp import Llama

    llm = Llama(model_path=str(tmp_path / "out" / "model-f16.gguf"), vocab_only=True, verbose=False)
    try:  # llama.cpp's own tokenizer splits the prompt as the HF one does
        assert llm.tokenize(PROMPT.encode(), add_bos=False, special=True) == _ids(tokenizer)
    finally:
        llm.close()


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                      init_lora_weights=False))  # fmt: skip
    out = tmp_path_factory.mktemp("lora")
    model.save_pretrained(out)
    return out


def test_an_adapter_is_merged_into_the_gguf(
    converter, tiny_model_dir, lora_dir, tokenizer, tmp_path
):
    export_model(str(tiny_model_dir), tmp_path / "out", adapter=str(lora_dir))
    ids = _ids(tokenizer)
    gguf = _gguf_logits(tmp_path / "out" / "model-f16.gguf", ids)
    _close(gguf, _hf_logits(tiny_model_dir, ids, lora_dir), 2e-2)
    assert np.abs(gguf - _hf_logits(tiny_model_dir, ids)).max() > 0.1  # not the bare base


def _tiny(kind: str, dest: Path, tokenizer) -> Path:
    """A random 2-layer model of family `kind` around the SmolLM2 tokenizer."""
    import transformers

    torch.manual_seed(0)
    shape = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    config_cls, model_cls = {
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "glm": (transformers.GlmConfig, transformers.GlmForCausalLM),  # head_dim: 128 by default
        "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel),
    }[kind]
    if kind == "glm":
        shape["head_dim"] = 16
    if kind == "gpt2":
        shape = dict(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4)
    model_cls(config_cls(**shape)).save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest


@pytest.mark.parametrize("kind", ["qwen2", "glm"])
def test_other_families_convert_and_compute_the_same(converter, kind, tokenizer, tmp_path):
    from tests.data.template_cases import qwen2

    # a Qwen2 tokenizer (transformers gives a qwen2 model_type Qwen2's own pre-tokenizer), and
    # for GLM with GLM-4's role tokens, which llama.cpp's GLM converter looks up
    tokenizer = qwen2()
    if kind == "glm":  # on a fresh copy: the session's tokenizer is shared
        from transformers import AutoTokenizer

        tokenizer.save_pretrained(tmp_path / "tok")
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
        tokenizer.add_special_tokens(
            {
                "additional_special_tokens": [
                    "[gMASK]",
                    "<sop>",
                    "<|system|>",
                    "<|user|>",
                    "<|assistant|>",
                    "<|observation|>",
                ]
            }
        )
    model = _tiny(kind, tmp_path / kind, tokenizer)
    done = export_model(str(model), tmp_path / "out")
    ids = _ids(tokenizer)
    _close(_gguf_logits(tmp_path / "out" / "model-f16.gguf", ids), _hf_logits(model, ids), 2e-2)
    assert done.family in ("Qwen2", "GLM-4 (ChatGLM)")


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_quantised_files_are_smaller_and_still_the_model(converter, tokenizer, tmp_path, quant):
    from tests.conftest import build_tiny_model

    model = build_tiny_model(tmp_path / "m", tokenizer, hidden=256)  # K-quants: rows of 256
    f16 = export_model(str(model), tmp_path / "f16").files["model-f16.gguf"]
    done = export_model(str(model), tmp_path / quant, quant=quant)
    assert sorted(done.files) == ["Modelfile", f"model-{quant}.gguf"]
    assert done.files[f"model-{quant}.gguf"] < (0.6 if quant == "q8_0" else 0.45) * f16
    ids = _ids(tokenizer)
    gguf = _gguf_logits(tmp_path / quant / f"model-{quant}.gguf", ids)
    hf = _hf_logits(model, ids)
    assert np.corrcoef(gguf.ravel(), hf.ravel())[0, 1] > (0.999 if quant == "q8_0" else 0.98)


def test_hf_format_writes_the_merged_model(tiny_model_dir, lora_dir, tokenizer, tmp_path):
    done = export_model(str(tiny_model_dir), tmp_path / "hf", adapter=str(lora_dir), fmt="hf")
    assert "model.safetensors" in done.files and "tokenizer.json" in done.files
    ids = _ids(tokenizer)
    assert np.allclose(_hf_logits(tmp_path / "hf", ids), _hf_logits(tiny_model_dir, ids, lora_dir),
                       atol=1e-4)  # fmt: skip


def test_refusals_name_what_is_wrong(tiny_model_dir, tokenizer, tmp_path, monkeypatch):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases = [
        (dict(out=tmp_path / "full"), r"^--out: '.*full' already exists and is not empty$"),
        (dict(fmt="hf", quant="q8_0"), r"^--quant: only --format gguf is quantised"),
        (dict(quant="q3"), r"^--quant: 'q3' is not one of f16, q8_0, q4_k_m$"),
    ]
    for kw, message in cases:
        out = kw.pop("out", tmp_path / "o")
        with pytest.raises(UsageError, match=message):
            export_model(str(tiny_model_dir), out, **kw)
    monkeypatch.setenv("DANLU_LLAMA_CPP", str(tmp_path / "nowhere"))
    with pytest.raises(
        UsageError, match=r"^DANLU_LLAMA_CPP=.*nowhere: no convert_hf_to_gguf.py there"
    ):
        export_model(str(tiny_model_dir), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_an_unsupported_family_is_refused_by_name_before_loading(converter, tokenizer, tmp_path):
    model = _tiny("gpt2", tmp_path / "gpt2", tokenizer)
    with pytest.raises(
        UsageError, match=r"^export: model type 'gpt2' is not one danlu exports to GGUF"
    ):
        export_model(str(model), tmp_path / "o")
    assert export_model(str(model), tmp_path / "hf", fmt="hf").family == "gpt2"


def test_a_failing_converter_leaves_no_output(tiny_model_dir, tmp_path, monkeypatch):
    fake = tmp_path / "llama.cpp"
    fake.mkdir()
    (fake / "convert_hf_to_gguf.py").write_text(
        "import sys\nprint('INFO: loading', file=sys.stderr)\n"
        "print('NotImplementedError: BPE pre-tokenizer was not recognized', file=sys.stderr)\n"
        "sys.exit(1)\n")  # fmt: skip
    monkeypatch.setenv("DANLU_LLAMA_CPP", str(fake))
    with pytest.raises(
        UsageError, match=r"^llama.cpp's converter failed: NotImplementedError: BPE"
    ):
        export_model(str(tiny_model_dir), tmp_path / "o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama.cpp"]  # no output, no temp


def test_fetch_unpacks_the_converter_from_the_sdist(tmp_path, monkeypatch):
    monkeypatch.setattr("danlu.methods.gguf.llama_cpp_version", lambda: "9.9.9")
    sdist = tmp_path / "llama_cpp_python-9.9.9.tar.gz"
    root = "llama_cpp_python-9.9.9/vendor/llama.cpp/"
    files = {"convert_hf_to_gguf.py": "print('convert')", "conversion/__init__.py": "",
             "gguf-py/gguf/__init__.py": "", "LICENSE": "MIT", "src/llama.cpp": "// not needed",
             "gguf-py/tests/test_x.py": ""}  # fmt: skip
    src = tmp_path / "src"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, text in files.items():
            path = src / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            tar.add(path, arcname=root + name)
    dest = fetch_converter(tmp_path / "home", sdist=sdist)
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == ["LICENSE", "VERSION", "conversion/__init__.py", "convert_hf_to_gguf.py",
                   "gguf-py/gguf/__init__.py"]  # fmt: skip
    assert fetch_converter(dest, sdist=tmp_path / "absent.tar.gz") == dest  # same version: kept
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(src / "LICENSE", arcname=root + "LICENSE")
    monkeypatch.setattr("danlu.methods.gguf.llama_cpp_version", lambda: "9.9.10")
    with pytest.raises(UsageError, match=r"bad.tar.gz: no vendor/llama.cpp/convert_hf_to_gguf.py"):
        fetch_converter(tmp_path / "home", sdist=bad)
    assert (dest / "VERSION").read_text().strip() == "9.9.9"  # the old one is left as it was
    assert not (tmp_path / "home.partial").exists()


def test_llama_cpp_log_is_not_shown(converter, tiny_model_dir, tmp_path, capfd):
    """llama.cpp prints a line per quantised tensor; users see danlu's summary only."""
    export_model(str(tiny_model_dir), tmp_path / "q", quant="q8_0")
    out, err = capfd.readouterr()
    assert "converting to q8_0" not in out + err and "llama_model_quantize" not in out + err
