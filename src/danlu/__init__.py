"""danlu (丹炉): fine-tune, evaluate and serve LLMs from one CLI."""

__version__ = "0.1.0"
