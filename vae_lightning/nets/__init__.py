"""Encoder and decoder networks, for any input shape (C, H, W).

Contract (what the rest of the framework relies on):

  encoder   built as ``Encoder(input_shape, out_features, **config)``;
            x [B, *input_shape] -> the parameters of q(z|x), [B, out_features]
            (``out_features`` is the posterior's ``num_params``: 2D for a diagonal Gaussian).
  decoder   built as ``Decoder(latent_dim, output_shape, **config)``;
            z [..., D] -> the parameters of p(x|z), [..., *output_shape]; leading dimensions
            (K samples, batch) pass through. ``output_shape`` is the likelihood's
            ``param_shape(input_shape)``.
"""

from .conv import ConvDecoder, ConvEncoder
from .mlp import MLPDecoder, MLPEncoder, mlp

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "mlp"]
