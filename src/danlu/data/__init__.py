"""Data pipeline: readers -> one Conversation type -> templates -> tokens + labels (DESIGN §3)."""

__all__ = ["build_dataset", "save_report"]


def __getattr__(name: str):
    # lazy: `import danlu.data` stays cheap; the pipeline pulls numpy/pyarrow/datasets
    if name == "build_dataset":
        from danlu.data.pipeline import build_dataset

        return build_dataset
    if name == "save_report":
        from danlu.data.report import save_report

        return save_report
    raise AttributeError(name)
