"""The AnoGAN Guidebook's supporting package: data, networks, methods, evaluation and plots.

`import anogan_guide as ag` is quick: each name below (and each submodule, `ag.ganomaly`) is
imported when first used (PEP 562), so the command line, which only reads and writes run
folders, starts without loading torch.
"""

from __future__ import annotations

import importlib

# each public name, and the submodule it comes from
_NAMES = {
    "anogan": ("AnoganConfig",),
    "data": ("ImageSet", "OneClassSplit", "load_one_class", "load_split", "save_split",
             "stratified_sample", "subsample_test"),
    "detector": ("Detector",),
    "fanogan": ("FanoganConfig",),
    "ganomaly": ("GanomalyConfig", "TrainedGanomaly"),
    "gradcon": ("GradConConfig",),
    "gradscore": ("gradcon_scores",),
    "hybrid": ("HybridConfig", "TrainedHybrid"),
    "latent": ("LatentMap", "map_latent"),
    "nets": ("Discriminator", "GanomalyDiscriminator", "GanomalyGenerator", "Generator",
             "GradConAE"),
    "rotnet": ("RotnetConfig",),
    "runs": ("Run", "open_run", "pick_device", "seed_everything"),
}
_HOME = {name: module for module, names in _NAMES.items() for name in names}
_SUBMODULES = ("anogan", "complexity", "detector", "fanogan", "ganomaly", "gradcon", "gradscore",
               "hybrid", "latent", "maps", "nets", "rotation", "rotnet")

__all__ = [*_HOME, *_SUBMODULES]


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
