"""Loaders: MOVA Video Expert, Audio Tower and Audio VAE Loaders; finding the files and checking what they hold."""
