from deepart.models.deepartnet import DeepArtNet, build_model

__all__ = ["DeepArtNet", "build_model"]
