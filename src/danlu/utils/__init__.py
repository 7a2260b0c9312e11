"""Small helpers every layer may use: errors, docstrings, system facts, lazy imports."""
