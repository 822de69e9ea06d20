"""Benchmarks: in-betweening (LaFAN1 protocol) and speed."""
