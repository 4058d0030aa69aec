"""Build a VAE from its config, part by part, and rebuild one from a checkpoint.

The parts are built in this order, each told what it must know about the others:

    likelihood  (event_shape)                          -> param_shape(input_shape)
    posterior   (latent_dim)                           -> num_params
    encoder     (input_shape, out_features=num_params)
    decoder     (latent_dim, output_shape=param_shape)
    prior       (latent_dim)
    objective
    optimizer and lr_scheduler (partials)

A part may also ask for what was built before it by naming it as an argument of its class:
``input_shape``, ``latent_dim``, ``likelihood``, ``posterior``, ``encoder``, ``decoder``, ``prior``
(a VampPrior takes the encoder and the posterior to build its mixture; a hierarchical decoder the
posterior, to know which latent dimensions it reads; FactorVAE's objective the posterior, to size its
discriminator). The builder passes exactly those names. A part that takes another part to read
from it must not keep it as an attribute (it would be a second copy of its weights in the state_dict).

A checkpoint keeps the resolved config of the run (``model``, ``objective``, ``eval`` and
``data``) as plain values, so :func:`load_model` rebuilds any model, one with parts of
your own included (their modules must be importable), with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import functools
import inspect
from pathlib import Path
from typing import Any, Mapping, Sequence

import hydra
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from .checks import require_int
from .errors import ConfigError, VAEUserError
from .optim import build_lr_scheduler, build_optimizer
from . import resolvers as _resolvers  # noqa: F401  (${vae.reversed:...} in the configs)


def _plain(node: Any) -> Any:
    """Plain dicts and lists (a copy), whatever came in."""
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    return copy.deepcopy(node)


def instantiate_part(key: str, node: Any, **context: Any) -> Any:
    """``hydra.utils.instantiate(node, **context)``; what goes wrong is one VAEUserError naming ``key``.

    A part's own ConfigError gets the part's config key in front of its argument
    (``model.encoder.hidden_dims=...``); a wrong argument or target is named with the part.
    """
    if not isinstance(node, Mapping) or "_target_" not in node:
        raise VAEUserError(f"{key} is not a part with a _target_ (it is {_plain(node)!r}): choose one with "
                           f"{key.replace('.', '/')}=NAME (see `python train.py --help`).")
    try:
        return hydra.utils.instantiate(node, **context, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, VAEUserError) and isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, ConfigError):
            raise cause.at(key) from None
        if isinstance(cause, VAEUserError):
            raise cause from None
        if cause is None or isinstance(cause, (TypeError, ValueError, ImportError, AttributeError)):
            what = " ".join(str(cause if cause is not None else e).split())  # one line
            hint = " (is its module importable? put its directory on PYTHONPATH)" \
                if isinstance(cause, ImportError) or "Error locating target" in what else ""
            raise VAEUserError(f"{key} ({node['_target_']}) cannot be built: {type(cause or e).__name__}: "
                               f"{what}{hint}") from e
        raise


PARTS = ("encoder", "decoder", "posterior", "prior", "likelihood", "optimizer", "lr_scheduler")


def _asked_for(node: Any, available: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """What of ``available`` (the parts built so far) the class of ``node`` names as arguments."""
    if not isinstance(node, Mapping) or "_target_" not in node:
        return {}
    try:
        target = hydra.utils.get_class(node["_target_"])
        parameters = inspect.signature(target.__init__).parameters
    except Exception:  # not a class, or not importable: instantiate_part says so
        return {}
    return {name: value for name, value in available.items()
            if name in parameters and name not in given and name not in node}


def build_model(config: Mapping[str, Any], input_shape: Sequence[int], default_class: type | None = None):
    """The VAE of a run config: its ``model`` group (``_target_``, ``latent_dim``, the parts, and any other
    argument of the ``_target_`` class), ``objective``, and ``eval`` (``nll_samples``, ``nll_chunk_size``).
    ``data`` is kept in the checkpoint for eval.py."""
    from .module import VAE

    config = _plain(config)
    model_cfg, objective_cfg = config.get("model"), config.get("objective")
    if not isinstance(model_cfg, Mapping) or not isinstance(objective_cfg, Mapping):
        raise VAEUserError("The config needs a `model` and an `objective` group (see `python train.py --help`).")
    eval_cfg = config.get("eval") or {}
    input_shape = [int(s) for s in input_shape]
    latent_dim = require_int("model.latent_dim", model_cfg.get("latent_dim"), 1)

    built: dict[str, Any] = {"input_shape": input_shape, "latent_dim": latent_dim}

    def build(part: str, **given: Any) -> Any:
        node = model_cfg.get(part)
        built[part] = instantiate_part(f"model.{part}", node, **given, **_asked_for(node, built, given))
        return built[part]

    likelihood = build("likelihood", event_shape=input_shape)
    posterior = build("posterior", latent_dim=latent_dim)
    encoder = build("encoder", input_shape=input_shape, out_features=posterior.num_params)
    decoder = build("decoder", latent_dim=latent_dim, output_shape=list(likelihood.param_shape(input_shape)))
    prior = build("prior", latent_dim=latent_dim)
    objective = instantiate_part("objective", objective_cfg, **_asked_for(objective_cfg, built, {}))
    optimizer = instantiate_part("model.optimizer", model_cfg.get("optimizer"))
    scheduler_cfg = model_cfg.get("lr_scheduler")
    lr_scheduler = instantiate_part("model.lr_scheduler", scheduler_cfg) if scheduler_cfg else None
    _try_optimizer(optimizer, lr_scheduler)
    if getattr(objective, "optimizer", None) is not None:
        _try_optimizer(objective.optimizer, None, key="objective.optimizer")

    nll_samples = require_int("eval.nll_samples", eval_cfg.get("nll_samples", 0), 0)
    chunk = eval_cfg.get("nll_chunk_size")
    if chunk is not None:
        require_int("eval.nll_chunk_size", chunk, 1)

    cls = default_class or VAE
    if model_cfg.get("_target_"):
        target = hydra.utils.get_class(model_cfg["_target_"])
        if not (isinstance(target, type) and issubclass(target, VAE)):
            raise VAEUserError(f"model._target_={model_cfg['_target_']!r} is not a VAE class (vae_lightning.VAE or "
                               f"a subclass of it).")
        # SubVAE.from_config(...) builds a SubVAE even from a config that names VAE.
        cls = cls if issubclass(cls, target) else target
    # Other keys of the model group are arguments of the class (a subclass may take its own); a key no
    # argument has (a typo) is refused rather than ignored.
    extra = {k: v for k, v in model_cfg.items() if k not in (*PARTS, "_target_", "latent_dim")}
    accepted = inspect.signature(cls.__init__).parameters
    for key in extra:
        if key not in accepted or key in ("input_shape", "config", "nll_samples", "nll_chunk_size"):
            raise VAEUserError(f"model.{key}={extra[key]!r} is not a setting of the model ({cls.__qualname__}): "
                               f"a part's settings go under its key (model.encoder.{key}=..., ...).")
    kept = {key: config[key] for key in ("model", "objective", "eval", "data") if config.get(key) is not None}
    return cls(encoder=encoder, decoder=decoder, posterior=posterior, prior=prior, likelihood=likelihood,
               objective=objective, optimizer=optimizer, lr_scheduler=lr_scheduler, input_shape=input_shape,
               nll_samples=nll_samples, nll_chunk_size=chunk, config=kept, **extra)


def _try_optimizer(optimizer: Any, lr_scheduler: Any, key: str = "model.optimizer") -> None:
    """Build the optimizer and the schedule once on a dummy parameter, so that a bad setting (a negative
    lr, an unknown argument) fails now and names its key, not after the data is loaded."""
    param = torch.nn.Parameter(torch.zeros(1))
    try:
        opt = build_optimizer(optimizer, [param])
    except (TypeError, ValueError) as e:
        raise VAEUserError(f"{key} ({_name(optimizer)}) cannot be built: {type(e).__name__}: {e}") from None
    if lr_scheduler is not None:
        try:
            build_lr_scheduler(lr_scheduler, opt, total_steps=1)
        except (TypeError, ValueError, KeyError) as e:
            raise VAEUserError(f"model.lr_scheduler ({_name(lr_scheduler)}) cannot be built: "
                               f"{type(e).__name__}: {e}") from None


def _name(fn: Any) -> str:
    fn = fn.func if isinstance(fn, functools.partial) else fn
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', fn)}"


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint file as a dict (``weights_only=True``); a clear error when it is not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VAEUserError(f"{path} does not exist: give the path of a .ckpt file.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, not a torch file, or pickled objects
        raise VAEUserError(f"{path} cannot be read as a checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else 'no detail'}): it is damaged or not a "
                           f"checkpoint; use another one (checkpoints/last.ckpt or the best epoch*.ckpt).") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise VAEUserError(f"{path} is not a Lightning checkpoint (no state_dict in it).")
    return checkpoint


def checkpoint_config(checkpoint: Mapping[str, Any], path: str | Path = "the checkpoint") -> tuple[dict, list[int]]:
    """(the run config, input_shape) stored in a checkpoint by :meth:`VAE.from_config`."""
    hparams = checkpoint.get("hyper_parameters") or {}
    config, input_shape = hparams.get("config"), hparams.get("input_shape")
    if not config or not input_shape:
        raise VAEUserError(f"{path} does not describe its model (no model config in it): it was written by a VAE "
                           f"built from parts in Python, or by vae-lightning before 0.2. Build the same VAE and "
                           f"load its state_dict instead; checkpoints of train.py and VAE.from_config rebuild "
                           f"themselves.")
    return config, input_shape


def load_model(path: str | Path, overrides: Mapping[str, Any] | None = None, map_location: Any = "cpu",
               default_class: type | None = None):
    """The VAE of a checkpoint, rebuilt from the config inside it, with its weights.

    ``overrides`` change the config before it is built, by dotted key:
    ``load_model(path, {"objective.num_samples": 50, "eval.nll_samples": 5000})``.
    """
    return model_from_checkpoint(read_checkpoint(path, map_location), path, overrides, map_location, default_class)


def model_from_checkpoint(checkpoint: Mapping[str, Any], path: str | Path = "the checkpoint",
                          overrides: Mapping[str, Any] | None = None, map_location: Any = "cpu",
                          default_class: type | None = None):
    """:func:`load_model` for a checkpoint already read."""
    config, input_shape = checkpoint_config(checkpoint, path)
    cfg = OmegaConf.create(config)
    absent = object()
    for key, value in (overrides or {}).items():
        # A key may be added to a group the config has (an objective that left num_samples at its
        # default, say; a wrong name is then the part's error), not to one it has not.
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        if parent not in ("", "eval") and OmegaConf.select(cfg, parent, default=absent) is absent:
            raise VAEUserError(f"load_model: the checkpoint's config has no {parent!r} to override {key!r} in.")
        OmegaConf.update(cfg, key, value, force_add=True)
    model = build_model(cfg, input_shape, default_class)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        raise VAEUserError(f"{path}: the weights do not fit the model its config describes "
                           f"({str(e).splitlines()[0]}).") from None
    return model.to(map_location) if isinstance(map_location, (str, torch.device)) else model
