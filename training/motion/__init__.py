"""The motion data core: BVH files, skeletons, rotations (numpy and torch), clips and resampling, the fixed
data split, and fixed-length windows. Imports nothing else of the project."""
