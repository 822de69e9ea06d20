"""The local fill server: loads checkpoints and serves fill and any-order sampling on 127.0.0.1."""
