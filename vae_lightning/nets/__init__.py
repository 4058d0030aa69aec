"""Encoder and decoder networks, for any input shape (C, H, W).

Contract (what the rest of the framework relies on):

  encoder   built as ``Encoder(input_shape, out_features, **config)``;
            x [B, *input_shape] -> the parameters of q(z|x), [B, out_features]
            (``out_features`` is the posterior's ``num_params``: 2D for a diagonal Gaussian).
  decoder   built as ``Decoder(latent_dim, output_shape, **config)``;
            z [..., D] -> the parameters of p(x|z), [..., *output_shape]; leading dimensions
            (K samples, batch) pass through. ``output_shape`` is the likelihood's
            ``param_shape(input_shape)``.

The networks, each an Encoder and a Decoder (``model/encoder=NAME``, ``model/decoder=NAME``; the preset
``model=NAME`` takes both):

  mlp       fully connected layers (``hidden_dims``); any input shape.
  conv      stride-2 convolutions, one per entry of ``channels``; images (C, H, W) of any size.
  resnet    the same stride-2 stages with ``blocks_per_stage`` residual blocks each; images of any size.
"""

from .conv import ConvDecoder, ConvEncoder
from .mlp import MLPDecoder, MLPEncoder, mlp
from .resnet import ResNetDecoder, ResNetEncoder

__all__ = ["ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "ResNetDecoder", "ResNetEncoder", "mlp"]
