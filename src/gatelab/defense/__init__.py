"""Defense-VAE: purge adversarial perturbations with a VAE before classifying (IN PROGRESS: the library pieces).

    net, history = train_classifier(ClassifierConfig(model="A"))   # Defense-GAN's models A-D, and E (substitute)
    vae = VAE18(latent=128)                 # encoder/decoder of the paper; forward -> (recon, mu, logvar)
    cost = loss(recon, x_clean, mu, logvar, r=0.0)   # summed BCE + r * KL (r = 0 in the released code)
    clean = vae.purify(x_adv)               # decode(mu), BatchNorm in eval mode
    purifier = DefenseVAE(VAEConfig()).fit(x_adv, x_clean)   # trains VAE18 on pairs (tensors, numpy, memmaps)
    logits = Defended(net, purifier)(x)     # net(decode(mu(x))), differentiable for adaptive attacks
    x_adv = attack(net, x, y, "rand_fgsm", eps=0.3)  # fgsm, rand_fgsm, cw, pgd, eot_pgd (torchattacks)

Generating the training pairs at scale, the three defence modes, the projection baseline, the CLI
and the reproductions are still to come.

Defense-VAE: Li & Ji, ECML-PKDD 2019 (arXiv:1812.06570). Classifiers from Defense-GAN, Samangouei et al., ICLR 2018.
"""

from gatelab.defense.attacks import ATTACKS, attack, library_attack
from gatelab.defense.classifiers import (
    ClassifierConfig,
    accuracy,
    load_classifier,
    save_classifier,
    train_classifier,
)
from gatelab.defense.models import CLASSES, IMAGE_SHAPE, KEEP, NAMES, Classifier, classifier, same_padding
from gatelab.defense.projection import ProjectionPurifier, project, project_restarts
from gatelab.defense.purifier import Defended, DefenseVAE
from gatelab.defense.vae import VAE18, VAEConfig, kl_divergence, loss

__all__ = [
    "ATTACKS",
    "attack",
    "library_attack",
    "CLASSES",
    "DefenseVAE",
    "Defended",
    "IMAGE_SHAPE",
    "KEEP",
    "NAMES",
    "ProjectionPurifier",
    "VAE18",
    "Classifier",
    "VAEConfig",
    "ClassifierConfig",
    "accuracy",
    "classifier",
    "load_classifier",
    "save_classifier",
    "train_classifier",
    "kl_divergence",
    "loss",
    "project",
    "project_restarts",
    "same_padding",
]
