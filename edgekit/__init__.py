"""edgekit: take a PyTorch model to an edge device."""
__version__ = "0.1.0"
