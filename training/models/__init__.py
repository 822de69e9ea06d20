"""One readable file per model (nanoGPT style): a config dataclass and a torch module, no training logic."""
