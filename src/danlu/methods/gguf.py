"""GGUF through llama.cpp's own tools: its converter turns an HF folder into an f16 GGUF, its
quantizer makes q8_0 / q4_k_m from that.

Neither is written here: tensor layouts, tokenizer pre-types and the per-family fixes (e.g.
llama's q/k permutation) are llama.cpp's, and they change with every new model family.
- The converter is `convert_hf_to_gguf.py` with its `conversion/` package and the `gguf-py`
  it was written against. llama.cpp does not publish it as a package; llama-cpp-python's
  source distribution on PyPI vendors the whole llama.cpp tree of the version it binds, so
  `fetch_converter` (run by `make setup`) unpacks those files from the sdist of the installed
  llama-cpp-python version. `DANLU_LLAMA_CPP` may name a llama.cpp checkout instead.
- The quantizer is llama.h's `llama_model_quantize`, through llama-cpp-python's bindings.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from danlu.utils.errors import UsageError

CONVERTER_ENV = "DANLU_LLAMA_CPP"
# llama.h's llama_ftype for each quantisation danlu offers (f16 is the converter's own output)
QUANTS = {"f16": None, "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}
# HF model_type -> what users call the family; the ones the tests convert and decode
FAMILIES = {
    "llama": "LLaMA", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3",
    "glm": "GLM-4 (ChatGLM)", "chatglm": "ChatGLM", "glm4": "GLM-4",
}  # fmt: skip
_FILES = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "LICENSE")
_log = logging.getLogger("danlu.export")


def default_home() -> Path:
    """Where `fetch_converter` puts the converter: inside the environment danlu runs in."""
    return Path(sys.prefix) / "share" / "danlu" / "llama.cpp"


def converter_script() -> Path:
    """llama.cpp's convert_hf_to_gguf.py, or a one-line error saying how to get it."""
    home = os.environ.get(CONVERTER_ENV)
    where = Path(home).expanduser() if home else default_home()
    script = where / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    if home:
        raise UsageError(
            f"{CONVERTER_ENV}={home}: no convert_hf_to_gguf.py there (a llama.cpp checkout?)"
        )
    raise UsageError(
        "export --format gguf needs llama.cpp's converter: run `python -m danlu.methods.gguf "
        f"fetch` (unpacks it from llama-cpp-python's source on PyPI) or set {CONVERTER_ENV} to a "
        "llama.cpp checkout"
    )


def llama_cpp_version() -> str:
    try:
        from importlib.metadata import version

        return version("llama-cpp-python")
    except Exception as exc:
        raise UsageError(
            "export to q8_0/q4_k_m needs llama-cpp-python: pip install 'danlu[gguf]'"
        ) from exc


def fetch_converter(dest: Path | None = None, sdist: Path | None = None) -> Path:
    """Unpack the converter of the installed llama-cpp-python version into `dest` (pip
    downloads that version's sdist, from its cache when the install built it)."""
    dest = dest or default_home()
    version = llama_cpp_version()
    stamp = dest / "VERSION"
    if stamp.is_file() and stamp.read_text().strip() == version:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        archive = sdist or _download_sdist(version, Path(tmp))
        _unpack(archive, dest, version)
    return dest


def _download_sdist(version: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
           ":all:", f"llama-cpp-python=={version}", "-d", str(into)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no sdist downloaded"])[-1]
        raise UsageError(f"fetching llama-cpp-python {version}'s source failed: {last}")
    return found[0]


def _unpack(archive: Path, dest: Path, version: str) -> None:
    """The converter's files from the sdist's vendor/llama.cpp, written to a sibling folder
    that replaces `dest` in one rename (a failed fetch leaves the old one, or none)."""
    import shutil

    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if _wanted(m.name, prefix)]
            if not any(m.name == prefix + "convert_hf_to_gguf.py" for m in members):
                raise UsageError(f"{archive.name}: no vendor/llama.cpp/convert_hf_to_gguf.py in it")
            for m in members:
                m.name = m.name[len(prefix) :]
            tar.extractall(staging, members=members, filter="data")
        (staging / "VERSION").write_text(version + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    staging.replace(dest)


def _wanted(name: str, prefix: str) -> bool:
    if not name.startswith(prefix):
        return False
    rest = name[len(prefix) :]
    return any(rest == f or rest.startswith(f + "/") for f in _FILES) and "/tests/" not in rest


def convert(hf_dir: Path, out_file: Path, timeout: float = 3600) -> None:
    """llama.cpp's converter, f16, in its own process (it imports its own gguf-py)."""
    cmd = [sys.executable, str(converter_script()), str(hf_dir), "--outfile", str(out_file),
           "--outtype", "f16"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
        raise UsageError(f"llama.cpp's converter failed: {lines[-1] if lines else proc.returncode}")


def quantize(src: Path, dst: Path, quant: str) -> None:
    """llama.cpp's quantizer (llama_model_quantize), all cores."""
    import ctypes

    llama_cpp_version()
    import llama_cpp

    quiet_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTS[quant])
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)):
        raise UsageError(f"llama.cpp's quantizer failed on {src.name} -> {quant}")


_LOG_CALLBACK: list = []  # the ctypes callback must outlive every call into llama.cpp
_LEVELS = {2: logging.WARNING, 3: logging.ERROR}  # ggml_log_level: 1 info, 4 debug, 5 cont.


def quiet_llama_cpp() -> None:
    """llama.cpp's own log (a line per tensor quantised, every metadata key loaded) is not for
    users: its warnings and errors go to danlu's log, the rest is dropped."""
    import ctypes

    import llama_cpp

    if _LOG_CALLBACK:
        return

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        if level in _LEVELS and text.strip():
            _log.log(_LEVELS[level], "llama.cpp: %s", text.decode("utf-8", "replace").strip())

    _LOG_CALLBACK.append(forward)
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))


def _main(argv: list[str]) -> int:
    if argv[:1] != ["fetch"]:
        print("usage: python -m danlu.methods.gguf fetch [DEST]", file=sys.stderr)
        return 2
    try:
        print(fetch_converter(Path(argv[1]) if len(argv) > 1 else None))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
