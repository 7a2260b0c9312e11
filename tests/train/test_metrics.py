import json

from danlu.train.metrics import MetricsFile, ThroughputMeter, memory_gib, plot_loss


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_throughput_and_mfu_per_window():
    clock = FakeClock()
    meter = ThroughputMeter(flops_per_token=1e9, peak_flops=1e12, clock=clock)
    meter.add(tokens=500, trained=120)
    meter.add(tokens=500, trained=80)
    clock.t += 2.0
    assert meter.window() == {
        "tokens_per_s": 500.0,
        "trained_tokens_per_s": 100.0,
        "tflops": 0.5,
        "mfu": 0.5,
    }
    assert (meter.tokens, meter.trained_tokens) == (1000, 200)
    meter.add(tokens=100, trained=10)
    clock.t += 1.0
    assert meter.window() == {
        "tokens_per_s": 100.0,
        "trained_tokens_per_s": 10.0,
        "tflops": 0.1,
        "mfu": 0.1,
    }


def test_mfu_absent_without_peak():
    clock = FakeClock()
    meter = ThroughputMeter(flops_per_token=1.0, peak_flops=None, clock=clock)
    meter.add(10, 1)
    clock.t += 1
    assert meter.window()["mfu"] is None


def test_metrics_file_appends_and_truncates_on_resume(tmp_path):
    mf = MetricsFile(tmp_path / "metrics.jsonl")
    for step in (10, 20, 30):
        mf.write({"step": step, "loss": 1.0 / step})
    mf.truncate_after(20)
    assert [r["step"] for r in mf.read()] == [10, 20]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"step": 10, "loss": 0.1}


def test_plot_loss_writes_png(tmp_path):
    records = [{"step": s, "loss": 2.0 / s} for s in range(1, 6)] + [{"step": 5, "eval_loss": 0.5}]
    png = plot_loss(records, tmp_path / "loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_loss([], tmp_path / "empty.png") is None and not (tmp_path / "empty.png").exists()


def test_memory_is_positive_on_cpu():
    assert memory_gib("cpu") > 0
