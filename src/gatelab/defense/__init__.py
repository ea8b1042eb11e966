"""Defense-VAE: purge adversarial perturbations with a VAE before classifying, and attack it honestly.

    net, history = train_classifier(ClassifierConfig(model="A"))   # Defense-GAN's models A-D, and E (substitute)
    x_adv = attack(net, x, y, "rand_fgsm", eps=0.3)  # fgsm, rand_fgsm, cw, cw_softmax, pgd, eot_pgd (torchattacks)
    make_pairs(net, x, y, "pairs/")                  # every attack x eps on every image, uint8 shards, resumable
    purifier = DefenseVAE(VAEConfig()).fit(*load_pairs("pairs/"))   # VAE18 on (adversarial, clean) pairs
    clean = purifier.purify(x_adv)                   # decode(mu), BatchNorm in eval mode
    logits = Defended(net, purifier)(x)              # mode 1: net(decode(mu(x))), differentiable
    net2, _ = train_classifier(config, purifier=purifier)            # mode 2: retrained on reconstructions
    net3, purifier3, _ = fine_tune(net, purifier, *load_pairs("pairs/"), load_pair_labels("pairs/"))  # mode 3
    robust, _ = adversarial_training(AdversarialConfig(model="A"))  # the peer: Madry's PGD training
    sub, _ = train_substitute(net, x_held_out[:150])                # Papernot's black-box substitute (model E)
    table = evaluate(net, xt, yt, WHITE_BOX, purifier=purifier, adaptive=True,
                     defences={"mode_2": (net2, purifier), "mode_3": (net3, purifier3)}, substitute=sub)
    baseline = ProjectionPurifier(purifier).purify(x_adv)   # Defense-GAN-style projection, L=200, R=10

Defense-VAE: Li & Ji, ECML-PKDD 2019 (arXiv:1812.06570). Classifiers from Defense-GAN, Samangouei et al., ICLR 2018.
"""

from gatelab.defense.adversarial import AdversarialConfig, adversarial_training
from gatelab.defense.attacks import ATTACKS, SoftmaxOutput, attack, library_attack
from gatelab.defense.classifiers import (
    ClassifierConfig,
    load_classifier,
    save_classifier,
    train_classifier,
)
from gatelab.defense.end_to_end import EndToEndConfig, fine_tune
from gatelab.defense.evaluate import ADAPTIVE, BLACK_BOX, WHITE_BOX, accuracy_table_png, evaluate
from gatelab.defense.models import CLASSES, IMAGE_SHAPE, KEEP, NAMES, Classifier, classifier, same_padding
from gatelab.defense.pairs import load_pair_labels, load_pairs, make_pairs
from gatelab.defense.projection import BPDA, ProjectionPurifier, project, project_restarts
from gatelab.defense.purifier import Defended, DefenseVAE
from gatelab.defense.substitute import SubstituteConfig, jacobian_augmentation, train_substitute
from gatelab.defense.vae import VAE18, VAEConfig, kl_divergence, loss
from gatelab.evaluation import accuracy

__all__ = [
    "ADAPTIVE",
    "AdversarialConfig",
    "BLACK_BOX",
    "BPDA",
    "EndToEndConfig",
    "SubstituteConfig",
    "adversarial_training",
    "fine_tune",
    "jacobian_augmentation",
    "load_pair_labels",
    "train_substitute",
    "accuracy_table_png",
    "evaluate",
    "load_pairs",
    "make_pairs",
    "ATTACKS",
    "SoftmaxOutput",
    "WHITE_BOX",
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
