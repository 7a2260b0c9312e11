"""Data pipeline: readers -> one Conversation type -> templates -> tokens + labels (DESIGN §3)."""
