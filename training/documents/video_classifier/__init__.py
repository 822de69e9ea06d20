"""The (2+1)D CNN + attention video classifier."""
