"""mobile_distill: distil image-embedding models into small students for phones."""

__version__ = "0.1.0"
