"""Knowledge base: danlu rag vs a LangChain + FAISS pipeline, same corpus, same embedder, one run.

    python bench/rag.py [--limit-files N] [--top-k 5] [--peers langchain]

Corpus: Debian's `debian-reference-zh-cn` (the Debian Reference in Chinese, 13 HTML chapters)
and `python3.11-doc` (the Python library reference, ~320 HTML pages), fetched with
`apt-get download` into bench/.corpora (never needed by tests). Questions:
bench/rag_questions.jsonl, 53 we wrote (27 Chinese about the Debian chapters, 26 English about
Python modules), each naming the file that answers it.

Each side runs in its own process (peak RSS is its own) with the embedded default embedder
(all-MiniLM-L6-v2, the same folder for both) and chunks of at most 200 of its tokens with 32
of overlap:
  - danlu: `danlu rag index`, then the questions through its retriever in hybrid, dense and
    bm25 mode (recall@k, MRR@k; query latency p50/p99 of hybrid, the default);
  - langchain: BeautifulSoup text, RecursiveCharacterTextSplitter.from_huggingface_tokenizer,
    HuggingFaceEmbeddings, FAISS.from_documents, similarity_search (its own venv:
    python3 -m venv bench/.venv-langchain && bench/.venv-langchain/bin/pip install
    torch==2.13.0 && bench/.venv-langchain/bin/pip install -c <(echo torch==2.13.0)
    langchain-community langchain-huggingface langchain-text-splitters faiss-cpu
    sentence-transformers beautifulsoup4).
Printed per side: files, chunks, index seconds and chunks/s, peak RSS, p50/p99 query ms, and
recall@k / MRR@k on the questions.

Embedding is the index's cost: on an idle 2-core CPU all-MiniLM-L6-v2 embeds about 18 chunks
of 200 tokens a second (4 GFLOP each), so the whole Python reference (about 20,000 chunks)
takes 20 minutes a side; --limit-files N indexes the pages the questions name first, then
other pages up to N. Measured here with --limit-files 60 (75 files): danlu 5106 chunks in
281.9 s, recall@5 hybrid 100.0% / dense 90.6% / bm25 100.0%; LangChain 3942 chunks in 287.7 s,
recall@5 86.8%. The whole corpus (332 files): danlu 14833 chunks in 880.4 s, query p50/p99
31.9/41.6 ms, recall@5 100.0% / 90.6% / 100.0%; LangChain 10949 chunks in 872.1 s, 26.6/30.9 ms,
86.8% (README, "Worked example").
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT / "bench" / ".corpora"
PACKAGES = ("debian-reference-zh-cn", "debian-reference-common", "python3.11-doc")
QUESTIONS = ROOT / "bench" / "rag_questions.jsonl"
LC_VENV = ROOT / "bench" / ".venv-langchain"


def corpus_files(limit: int | None) -> list[Path]:
    """The HTML pages of both packages, fetched and unpacked on first use."""
    unpacked = CORPORA / "root"
    if not unpacked.is_dir():
        debs = CORPORA / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True)
        for deb in debs.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    debian = sorted((unpacked / "usr/share/debian-reference").glob("*.zh-cn.html"))
    python = sorted((unpacked / "usr/share/doc/python3.11/html/library").glob("*.html"))
    if limit is None:
        return debian + python
    # the pages the questions name come first, so a short run still answers every question;
    # the rest of the limit is filled with other pages as distractors
    named = {n for q in _questions() for n in _gold(q)}
    wanted = [f for f in python if f.name in named]
    others = [f for f in python if f.name not in named]
    return debian + wanted + others[: max(0, limit - len(wanted))]


def _questions() -> list[dict]:
    return [json.loads(x) for x in QUESTIONS.read_text().splitlines() if x.strip()]


def _gold(q: dict) -> list[str]:
    return q["source"] if isinstance(q["source"], list) else [q["source"]]


DANLU_QUERIES = r"""
import json, sys, time
from danlu.config import load_config
from danlu.rag import open_index
from danlu.rag.evaluate import evaluate_retrieval, read_questions
cfg = load_config(None, [f"rag_index={sys.argv[1]}", f"top_k={sys.argv[3]}"])
questions = read_questions(sys.argv[2])
store, _, retriever = open_index(cfg)
for q in questions[:3]:
    retriever.search(q.text)  # warm: the models and the derived indexes load once
times = []
for q in questions:
    t = time.perf_counter(); retriever.search(q.text); times.append(time.perf_counter() - t)
k = int(sys.argv[3])
scores = {m: evaluate_retrieval(retriever, questions, k, m) for m in ("hybrid", "dense", "bm25")}
print("RESULT " + json.dumps({"latencies": times, "scores": scores, "chunks": store.size()}))
"""

LANGCHAIN = r"""
import json, sys, time
from pathlib import Path
from bs4 import BeautifulSoup
from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter
from langchain_huggingface import HuggingFaceEmbeddings
from langchain_community.vectorstores import FAISS
from transformers import AutoTokenizer
files, model, k = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[4])
questions = [json.loads(x) for x in Path(sys.argv[3]).read_text().splitlines() if x.strip()]
start = time.perf_counter()
docs = []
for f in files:
    soup = BeautifulSoup(Path(f).read_text(encoding="utf-8", errors="replace"), "html.parser")
    for tag in soup(["script", "style"]):
        tag.decompose()
    docs.append(Document(page_content=soup.get_text("\n"), metadata={"source": f}))
splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
    AutoTokenizer.from_pretrained(model), chunk_size=200, chunk_overlap=32)
chunks = splitter.split_documents(docs)
embeddings = HuggingFaceEmbeddings(model_name=model, encode_kwargs={"normalize_embeddings": True})
store = FAISS.from_documents(chunks, embeddings)
index_s = time.perf_counter() - start
for q in questions[:3]:
    store.similarity_search(q["question"], k=k)
times, ranks = [], []
for q in questions:
    t = time.perf_counter()
    hits = store.similarity_search(q["question"], k=k)
    times.append(time.perf_counter() - t)
    gold = q["source"] if isinstance(q["source"], list) else [q["source"]]
    found = [i for i, h in enumerate(hits, 1) if Path(h.metadata["source"]).name in gold]
    ranks.append(found[0] if found else None)
print("RESULT " + json.dumps({"latencies": times, "ranks": ranks, "chunks": len(chunks),
                              "index_s": index_s}))
"""


WRAP = r"""
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print("PEAK_RSS_KIB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""
"""Runs a side in a fresh parent, so the peak RSS it reports is that side's alone."""


def _run(argv: list[str]) -> tuple[dict, str, float]:
    """(the RESULT line's JSON, the whole stdout, peak RSS GiB of the side)."""
    proc = subprocess.run([sys.executable, "-c", WRAP, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"{argv[0]} failed ({proc.returncode})")
    lines = proc.stdout.splitlines()
    rss = int(next(x for x in lines if x.startswith("PEAK_RSS_KIB")).split()[1]) / 2**20
    line = next((x for x in lines if x.startswith("RESULT ")), None)
    return (json.loads(line[7:]) if line else {}), proc.stdout, rss


def danlu_side(files: list[Path], args: argparse.Namespace) -> dict:
    index = args.workdir / "danlu-index"
    docs = json.dumps([str(f) for f in files])
    shutil.rmtree(index, ignore_errors=True)  # a fresh index: every chunk embedded
    _, out, rss_index = _run([sys.executable, "-m", "danlu", "rag", "index", f"rag_docs={docs}",
                              "--index", str(index), "--quiet"])  # fmt: skip
    # danlu's own figure (loading the embedder included, as the peer's), not process start-up
    index_s = float(re.search(r"in ([0-9.]+) s", out).group(1))
    query = [sys.executable, "-c", DANLU_QUERIES, str(index), str(QUESTIONS), str(args.top_k)]
    result, _, rss = _run(query)
    return {**result, "index_s": index_s, "rss": max(rss, rss_index)}


def langchain_side(files: list[Path], args: argparse.Namespace) -> dict | None:
    python = LC_VENV / "bin" / "python"
    if not python.is_file():
        print(f"langchain: skipped ({LC_VENV} not found; see this script's docstring)")
        return None
    from danlu.rag.embed import resolve

    model = str(resolve("auto"))
    argv = [str(python), "-c", LANGCHAIN, json.dumps([str(f) for f in files]), model,
            str(QUESTIONS), str(args.top_k)]  # fmt: skip
    result, _, rss = _run(argv)
    return {**result, "rss": rss}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def show(name: str, r: dict, k: int, files: int) -> None:
    print(f"{name:<10} {files:>6} {r['chunks']:>7} {r['index_s']:>8.1f} {r['chunks'] / r['index_s']:>9.1f} "
          f"{r['rss']:>8.2f} {_pct(r['latencies'], 0.5):>8.1f} {_pct(r['latencies'], 0.99):>8.1f}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--limit-files",
        type=int,
        default=None,
        help="Python pages to index: those the questions name, then others (default: all)",
    )
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--peers", nargs="*", default=["langchain"], choices=["langchain"])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/danlu-bench-rag"))
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    files = corpus_files(args.limit_files)
    k = args.top_k
    print(f"{len(files)} files; {sum(1 for _ in QUESTIONS.open())} questions; top_k {k}")
    print(f"{'side':<10} {'files':>6} {'chunks':>7} {'index s':>8} {'chunks/s':>9} {'peak GiB':>8} "
          f"{'p50 ms':>8} {'p99 ms':>8}")  # fmt: skip
    danlu = danlu_side(files, args)
    show("danlu", danlu, k, len(files))
    peer = langchain_side(files, args) if "langchain" in args.peers else None
    if peer:
        show("langchain", peer, k, len(files))
    for mode, s in danlu["scores"].items():
        print(f"danlu {mode:<7} recall@{k} {s[f'recall@{k}']:.1f}%  MRR@{k} {s[f'mrr@{k}']:.3f}")
    if peer:
        from danlu.rag.evaluate import score

        s = score(peer["ranks"], k)
        print(f"langchain dense  recall@{k} {s[f'recall@{k}']:.1f}%  MRR@{k} {s[f'mrr@{k}']:.3f}")
        print(f"ratio danlu / langchain: index chunks/s "
              f"{(danlu['chunks'] / danlu['index_s']) / (peer['chunks'] / peer['index_s']):.2f}x, "
              f"p50 latency {_pct(peer['latencies'], 0.5) / _pct(danlu['latencies'], 0.5):.2f}x faster, "
              f"peak RSS {danlu['rss'] / peer['rss']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
