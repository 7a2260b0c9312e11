"""`danlu demo` runs its whole path (ask, train, ask again) on a tiny model in seconds."""

from __future__ import annotations

import json

import pytest

from danlu.cli import main


@pytest.mark.slow
def test_demo_trains_and_asks_before_and_after(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "id.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"instruction": "Who are you?", "input": "", "output": f"I am Danlu Assistant {i}."}
            )
            + "\n"
            for i in range(8)
        )
    )
    (tmp_path / "id_eval.jsonl").write_text(
        json.dumps({"instruction": "你是谁？", "input": "", "output": "我是丹炉助手。"}) + "\n"
    )
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(
        f"model: {tiny_model_dir}\ndata: [{data}]\nmax_steps: 2\nsave_steps: 2\n"
        f"packing: true\noutput_dir: {tmp_path / 'run'}\nreport_to: none\n"
    )
    assert main(["demo", "--config", str(cfg), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "[demo] --- before fine-tuning ---" in out and "[demo] --- after fine-tuning ---" in out
    assert "[demo] trained 2 steps" in out
    assert out.count("user: 你是谁？") == 2
    assert (tmp_path / "run" / "final" / "adapter_model.safetensors").is_file()
    assert "[demo] --- before/after on " in out
    report = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    assert (
        "fine-tuned" in json.dumps(report) and (tmp_path / "run" / "eval" / "report.md").is_file()
    )
    assert "[demo] --- danlu serve on http://127.0.0.1:" in out and "\nserver: " in out
    assert "[demo] --- with retrieval: index " in out and "2 added" in out
    assert out.count("user: How should I brew green tea?") == 3
    *_, cited, says = out.rstrip().splitlines()
    assert cited.startswith("[1] ") and "tea-guide" in cited
    assert says.startswith("[demo] [1] says: ")
