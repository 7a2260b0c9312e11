"""The one training engine (pt/sft now, rm/dpo later), checkpoints, metrics and launch."""
