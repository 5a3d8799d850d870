"""The AnoGAN Guidebook's supporting package: data, networks, methods, evaluation and plots."""

from . import (
    anogan,
    complexity,
    detector,
    fanogan,
    ganomaly,
    gradcon,
    gradscore,
    hybrid,
    latent,
    maps,
    nets,
    rotation,
    rotnet,
)
from .anogan import AnoganConfig
from .data import (
    ImageSet,
    OneClassSplit,
    load_one_class,
    load_split,
    save_split,
    stratified_sample,
    subsample_test,
)
from .detector import Detector
from .fanogan import FanoganConfig
from .ganomaly import GanomalyConfig, TrainedGanomaly
from .gradcon import GradConConfig
from .gradscore import gradcon_scores
from .hybrid import HybridConfig, TrainedHybrid
from .latent import LatentMap, map_latent
from .nets import (
    Discriminator,
    GanomalyDiscriminator,
    GanomalyGenerator,
    Generator,
    GradConAE,
)
from .rotnet import RotnetConfig
from .runs import Run, open_run, pick_device, seed_everything

__all__ = [
    "AnoganConfig", "Discriminator", "FanoganConfig", "Generator", "LatentMap", "anogan",
    "fanogan", "latent", "map_latent", "nets",
    "GanomalyConfig", "GanomalyDiscriminator", "GanomalyGenerator", "TrainedGanomaly", "ganomaly",
    "GradConAE", "GradConConfig", "gradcon", "gradcon_scores", "gradscore",
    "HybridConfig", "TrainedHybrid", "hybrid",
    "ImageSet", "OneClassSplit", "Run", "load_one_class", "load_split", "open_run",
    "pick_device", "save_split", "seed_everything", "stratified_sample", "subsample_test",
    "Detector", "detector", "maps",
    "RotnetConfig", "complexity", "rotation", "rotnet",
]
