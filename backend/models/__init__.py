"""The shipped checkpoints: safetensors weights + JSON cards, package data found through importlib.resources."""
