"""The convolutional and residual networks: any image size lands back on itself, leading dimensions pass
through, a whole VAE trains on them, the conv network keeps its parameters where it worked before, a fresh
residual block is the identity, and bad settings name their key."""

import pytest
import torch
from torch import nn

from conftest import compose_config, make_vae
from vae_lightning.errors import ConfigError
from vae_lightning.nets import ConvDecoder, ConvEncoder, ResNetDecoder, ResNetEncoder
from vae_lightning.nets.resnet import ResidualBlock

NETS = {"conv": (ConvEncoder, ConvDecoder, {}), "resnet": (ResNetEncoder, ResNetDecoder, {"blocks_per_stage": 1})}
# MNIST, CIFAR-10, 64x64, and sizes that are odd at some stage (11 -> 5 -> 2 -> 1, 45 -> 22 -> 11 -> 5, 7 -> 3 -> 1).
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64), (3, 11, 9), (2, 30, 45), (3, 7, 9)]
STAGES = [[4], [4, 8], [4, 8, 8]]


def _cases():
    """(shape, channels) for 1 to 3 stages, where the smallest map stays at least 1x1."""
    return [(shape, channels) for shape in SHAPES for channels in STAGES if min(shape[1:]) >= 2 ** len(channels)]


def _map_sizes(net: nn.Module, run) -> list[tuple[int, int]]:
    """The (H, W) each stride-2 layer of ``net`` outputs while ``run()`` runs, in order."""
    sizes, hooks = [], []
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.stride == (2, 2):
            hooks.append(module.register_forward_hook(lambda m, args, out: sizes.append(tuple(out.shape[-2:]))))
    run()
    for hook in hooks:
        hook.remove()
    return sizes


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("shape, channels", _cases())
def test_networks_take_any_image_size_and_land_back_on_it(name, shape, channels):
    encoder_class, decoder_class, extra = NETS[name]
    c, h, w = shape
    encoder = encoder_class(shape, out_features=6, channels=channels, **extra)
    decoder = decoder_class(4, (100, h, w), channels=channels, **extra)  # many parameters per pixel
    x = torch.rand(2, *shape)
    z = torch.randn(3, 2, 4)  # [K, B, D]

    encoder_sizes = _map_sizes(encoder, lambda: encoder(x))
    assert encoder(x).shape == (2, 6)
    decoder_sizes = _map_sizes(decoder, lambda: decoder(z))
    assert decoder(z).shape == (3, 2, 100, h, w)  # the leading (K, B) pass through
    assert decoder(z[0]).shape == (2, 100, h, w)
    # The decoder retraces the encoder's sizes exactly, in reverse: [s1, ..., sn] -> [s(n-1), ..., s0].
    assert len(encoder_sizes) == len(channels)
    assert decoder_sizes == [(h, w), *encoder_sizes[:-1]][::-1]


@pytest.mark.parametrize("overrides, input_shape", [(["model=resnet"], (3, 32, 32)),
                                                    (["model=resnet", "model/likelihood=gaussian_predicted",
                                                      "model.encoder.channels=[8, 16]"], (1, 28, 28)),
                                                    (["model=conv"], (3, 64, 64))])
def test_a_vae_on_these_networks_has_finite_gradients_on_every_parameter(overrides, input_shape):
    torch.manual_seed(0)
    model = make_vae(*overrides, "objective.num_samples=2", input_shape=input_shape)
    x = torch.rand(4, *input_shape).round()
    terms = model(x)
    assert terms.elbo.shape == (4,) and torch.isfinite(terms.elbo).all()
    terms.loss.mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert model.sample(2).shape == (2, *input_shape)


def test_the_resnet_decoder_follows_the_encoder_config():
    model = compose_config("model=resnet", "model.encoder.channels=[8, 16]", "model.encoder.blocks_per_stage=3",
                           "model.encoder.activation=silu")["model"]
    assert model["encoder"]["_target_"].endswith("ResNetEncoder") and model["decoder"]["_target_"].endswith(
        "ResNetDecoder")
    for key, value in [("channels", [8, 16]), ("blocks_per_stage", 3), ("activation", "silu")]:
        assert model["decoder"][key] == value, key


# What ConvEncoder / ConvDecoder built for 1x28x28 with channels [32, 64] (and latent_dim 32, so 64 posterior
# parameters) before any size was allowed: the same parameters in the same order, so the same seed gives the
# same weights and the same numbers.
CONV_28_PARAMETERS = {
    "encoder": [("features.0.weight", (32, 1, 4, 4)), ("features.0.bias", (32,)),
                ("features.2.weight", (64, 32, 4, 4)), ("features.2.bias", (64,)),
                ("head.weight", (64, 64 * 7 * 7)), ("head.bias", (64,))],
    "decoder": [("head.0.weight", (64 * 7 * 7, 32)), ("head.0.bias", (64 * 7 * 7,)),
                ("net.0.weight", (64, 32, 4, 4)), ("net.0.bias", (32,)),
                ("net.2.weight", (32, 1, 4, 4)), ("net.2.bias", (1,))],
}


def test_the_conv_networks_keep_their_parameters_on_sizes_they_took_before():
    model = make_vae("model=conv", input_shape=(1, 28, 28))
    for part in ("encoder", "decoder"):
        shapes = [(name, tuple(p.shape)) for name, p in getattr(model, part).named_parameters()]
        assert shapes == CONV_28_PARAMETERS[part], part
    # Sizes that halve evenly need no output padding: the transposed convolutions are those of before.
    for shape, channels in [((1, 28, 28), [32, 64]), ((3, 32, 32), [16, 32, 64]), ((3, 64, 64), [8, 8, 8, 8])]:
        decoder = ConvDecoder(8, shape, channels=channels)
        assert all(m.output_padding == (0, 0) for m in decoder.modules() if isinstance(m, nn.ConvTranspose2d))


def test_a_fresh_residual_block_is_the_identity_and_learns():
    torch.manual_seed(0)
    block = ResidualBlock(8, nn.ReLU)
    x = torch.randn(2, 8, 5, 7)
    assert torch.equal(block(x), x)

    # A deep encoder starts as the shallow one with the same other weights.
    shallow = ResNetEncoder((3, 16, 16), 6, channels=[8, 16], blocks_per_stage=0)
    deep = ResNetEncoder((3, 16, 16), 6, channels=[8, 16], blocks_per_stage=4)
    missing, unexpected = deep.load_state_dict(shallow.state_dict(), strict=False)
    assert not unexpected and missing and all(".branch." in key for key in missing)
    images = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(deep(images), shallow(images), rtol=0, atol=0)

    # Zero is where the block starts, not where it stays: one step moves both of its convolutions.
    optimizer = torch.optim.SGD(block.parameters(), lr=0.1)
    target = torch.randn_like(x)
    for _ in range(2):
        optimizer.zero_grad()
        (block(x) - target).square().mean().backward()
        optimizer.step()
    first, last = block.branch[0], block.branch[-1]
    assert last.weight.grad.abs().sum() > 0 and first.weight.grad.abs().sum() > 0
    assert not torch.equal(block(x), x)


@pytest.mark.parametrize("model", ["conv", "resnet"])
@pytest.mark.parametrize("override, input_shape, key, message", [
    ("model.encoder.channels=[]", (1, 28, 28), "model.encoder.channels", "must be a non-empty list"),
    ("model.encoder.channels=[8, 8, 8]", (3, 7, 9), "model.encoder.channels",
     r"gives 3 stride-2 stages.*7x9 image would shrink below 1x1; use at most 2 entries"),
    ("model.encoder.channels=[8]", (1, 1, 64), "model.encoder.channels", "use an mlp for data this small"),
    ("model.encoder.activation=swishy", (1, 28, 28), "model.encoder.activation", "must be one of"),
])
def test_bad_network_settings_name_their_key(model, override, input_shape, key, message):
    with pytest.raises(ConfigError, match=message) as error:
        make_vae(f"model={model}", override, input_shape=input_shape)
    assert error.value.key == key


@pytest.mark.parametrize("value, message", [(-1, "must be an integer >= 0"), (1.5, "must be an integer")])
def test_bad_blocks_per_stage_names_its_key(value, message):
    with pytest.raises(ConfigError, match=message) as error:
        make_vae("model=resnet", f"model.encoder.blocks_per_stage={value}", input_shape=(3, 32, 32))
    assert error.value.key == "model.encoder.blocks_per_stage"
    with pytest.raises(ConfigError, match=message) as error:  # the decoder alone checks it too
        ResNetDecoder(4, (3, 32, 32), blocks_per_stage=value)
    assert error.value.key == "blocks_per_stage"


def test_the_conv_networks_take_fully_connected_layers_as_the_disentanglement_literature_does():
    # Locatello et al. (2019) on 64x64: four stride-2 convolutions (32, 32, 64, 64), a 256-unit layer, 2 x 10 outputs.
    vae = make_vae("model=conv", "model.latent_dim=10", "model.encoder.channels=[32,32,64,64]",
                   "model.encoder.hidden_dims=[256]", input_shape=(1, 64, 64))
    linears = [m for m in vae.encoder.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64 * 4 * 4, 256), (256, 20)]
    linears = [m for m in vae.decoder.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 256), (256, 64 * 4 * 4)]
    x = torch.rand(3, 1, 64, 64)
    assert vae.decoder(vae.encode(x).mean).shape == (3, 1, 64, 64)
