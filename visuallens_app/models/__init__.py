"""Image-text encoders and model loading: the only package importing torch and open_clip.

Heavy imports stay inside functions so that ``import visuallens_app.cli`` does not load torch.
"""

from visuallens_app.models.base import Encoder, EncoderChoice

__all__ = ["Encoder", "EncoderChoice"]
