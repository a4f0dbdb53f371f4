"""LoRA: reading LoRA files, mapping their modules to checkpoint keys, and their weight changes."""
