"""The Perceiver predictive-coding autoencoder on video."""
