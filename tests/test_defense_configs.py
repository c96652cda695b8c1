"""The defenses' configs share one base (:class:`ibau.defenses.DefenseConfig`): ``seed`` and ``device`` are
declared there once, and every setting's range is declared on its field and checked in one place."""
import dataclasses
import math

import pytest

from conftest import one_line
from ibau.defenses import DEFENSES, DefenseConfig, defense_class, setting
from ibau.defenses.config import Rule

#: I-BAU's config (ibau.unlearn.IBAUConfig) has presets and checks of its own; every other defense's
#: config is a DefenseConfig.
OWN_CONFIG = {"ibau"}
BASELINES = sorted(set(DEFENSES) - OWN_CONFIG)
CONFIGS = {name: defense_class(name).config_class for name in BASELINES}

#: Every value the hand-written checks refused before the shared base, per config and setting. The
#: settings listed are exactly those with a rule: a rule dropped from a field fails here.
_NC = {"steps": [0, -1], "batch_size": [0], "lr": [0.0, -0.1], "init_cost": [-1.0], "cost_multiplier": [1.0, 0.5],
       "success_threshold": [0.0, 1.5], "patience": [0], "epoch_steps": [0], "early_stop_patience": [0],
       "detect_images": [0], "anomaly_threshold": [0.0], "unlearn_fraction": [0.0, 1.2], "unlearn_epochs": [0],
       "unlearn_lr": [-1e-3], "unlearn_batch_size": [0]}
REFUSED = {
    "finetune": {"epochs": [0, -1], "lr": [0.0, -1e-4], "batch_size": [0]},
    "fine_pruning": {"prune_size": [0, -5, 1.5, 1.0, True, None], "step": [0, 1.0, True], "max_acc_drop": [-0.1, 1.1],
                     "acc_floor": [-0.1, 1.5], "epochs": [-1], "lr": [0.0], "batch_size": [0]},
    "nad": {"teacher_epochs": [-1], "student_epochs": [0], "lr": [0.0, -0.01], "batch_size": [0],
            "betas": [(), (1.0, -1.0)], "p": [0.0, -2.0], "distance": ["cosine"], "optimizer": ["rmsprop"]},
    "neural_cleanse": _NC,
    "tabor": {**_NC, **{w: [-1.0] for w in ("mask_elastic", "pattern_elastic", "mask_smooth", "pattern_smooth",
                                            "blocking", "overlaying")}},
    "deepinspect": {**{n: [0] for n in ("steps", "batch_size", "noise_dim", "hidden", "num_samples", "patch_batch_size")},
                    "patch_epochs": [-1], "gen_lr": [0.0], "patch_lr": [0.0], "threshold": [0.0, -1.0],
                    "pert_weight": [-1.0], "patch_fraction": [0.0, 1.5]},
    "dp": {"noise_multiplier": [-1.0], "max_grad_norm": [0.0], "epochs": [0], "batch_size": [0], "lr": [0.0],
           "momentum": [-0.1, 1.0], "delta": [0.0, 1.0], "accountant": ["moments"]},
    "uap_at": {**{n: [0] for n in ("rounds", "epochs_per_round", "max_passes", "deepfool_steps", "batch_size")},
               "norm_bound": [0.0], "target_fooling_rate": [0.0, 1.5], "uap_samples": [0], "overshoot": [-0.01],
               "num_candidates": [1], "perturb_fraction": [0.0, 1.5], "lr": [0.0]},
    "anp": {"eps": [-0.1], "steps": [0], "project": [1, "yes", None], "alpha": [-0.1, 1.5], "iterations": [0],
            "batch_size": [0], "lr": [0.0], "momentum": [-0.1, 1.0], "batch_stats": [0], "prune_by": ["number"],
            "threshold": [-0.1, 1.5], "fraction": [0.0, 1.0], "checkpoint_every": [0], "max_threshold": [-0.1, 1.5],
            "threshold_step": [0.0, 1.5], "acc_ratio": [0.0, 1.0]},
    "sau": {"rounds": [0], "batch_size": [0], "lr": [0.0], "train_mode": [1, "no"], "norm": ["l1"], "bound": [0.0],
            "pgd_steps": [0], "pgd_lr": [0.0], "pgd_init": ["ones"], "beta1": [-1.0], "beta2": [-1.0], "lmd1": [-1.0],
            "lmd2": [-1.0], "lmd3": [-1.0]},
    "ft_sam": {"epochs": [0], "batch_size": [0], "lr": [0.0], "momentum": [-0.1, 1.0], "weight_decay": [-1e-4],
               "lr_schedule": ["step"], "rho": [-1.0], "adaptive": [1, "yes"], "label_smoothing": [-0.1, 1.0],
               "augment": ["mixup"], "cycle_steps": [0], "same_dropout": [1, "no"]},
}


def test_every_baseline_config_is_a_defense_config():
    assert set(REFUSED) == set(BASELINES)
    for name, cls in CONFIGS.items():
        assert issubclass(cls, DefenseConfig), name
        assert cls.__dataclass_params__.frozen, name
    assert not issubclass(defense_class("ibau").config_class, DefenseConfig)


@pytest.mark.parametrize("name", BASELINES)
def test_seed_and_device_are_declared_once_on_the_base(name):
    cls = CONFIGS[name]
    shared = {f.name: f for f in dataclasses.fields(DefenseConfig)}
    assert set(shared) == {"seed", "device"}
    for klass in cls.__mro__:
        if klass is not DefenseConfig:
            assert not {"seed", "device"} & set(vars(klass).get("__annotations__", {})), klass
    names = [f.name for f in dataclasses.fields(cls)]
    assert names.count("seed") == names.count("device") == 1
    assert all(f.kw_only for f in dataclasses.fields(cls) if f.name in shared)  # own fields keep their positions
    cfg = cls()
    assert (cfg.seed, cfg.device) == (0, None)
    assert (cls(seed=3, device="cpu").seed, cls(seed=3, device="cpu").device) == (3, "cpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1


def _bounded(name):
    return [(f, r) for f, r in CONFIGS[name].rules().items() if r.ge is not None or r.gt is not None]


@pytest.mark.parametrize("name, field, rule", [pytest.param(n, f, r, id=f"{n}-{f}") for n in BASELINES
                                                for f, r in _bounded(n)])
def test_registry_walk_refuses_values_below_each_bound(name, field, rule):
    """Each config refuses the value just past each bound of each bounded setting (zero or negative for
    the lower bounds), and NaN; it takes a closed bound itself."""
    cls = CONFIGS[name]
    low = rule.ge - 1 if rule.ge is not None else rule.gt
    bad = [low, math.nan]
    if rule.le is not None or rule.lt is not None:
        bad.append(rule.le + 1 if rule.le is not None else rule.lt)
    for value in bad:
        with pytest.raises(ValueError, match=rf"^{cls.__name__}: {field} must be ") as info:
            cls(**{field: value})
        one_line(str(info.value))
    for value in (rule.ge, rule.le):
        if value is not None:
            assert getattr(cls(**{field: value}), field) == value
    if rule.optional:
        assert getattr(cls(**{field: None}), field) is None
    else:
        with pytest.raises(ValueError, match=rf"{field} must be .*, got None"):
            cls(**{field: None})


@pytest.mark.parametrize("name", BASELINES)
def test_every_value_refused_before_is_refused(name):
    cls = CONFIGS[name]
    assert set(cls.rules()) == set(REFUSED[name])
    for field, values in REFUSED[name].items():
        for value in values:
            with pytest.raises(ValueError, match=rf"^{cls.__name__}: {field} must be ") as info:
                cls(**{field: value})
            one_line(str(info.value))


@pytest.mark.parametrize("name", BASELINES)
def test_defaults_and_declared_choices_are_accepted(name):
    cls = CONFIGS[name]
    cfg = cls()
    for field, rule in cls.rules().items():
        assert rule.accepts(getattr(cfg, field)), field
        for choice in rule.choices:
            assert getattr(cls(**{field: choice}), field) == choice


def test_rule_messages():
    assert Rule(ge=1).describe() == ">= 1"
    assert Rule(gt=0).describe() == "> 0"
    assert Rule(gt=0, le=1).describe() == "in (0, 1]"
    assert Rule(ge=0, lt=1).describe() == "in [0, 1)"
    assert Rule(ge=1, optional=True).describe() == ">= 1 or None"
    assert Rule(choices=("rdp", "prv")).describe() == "one of rdp, prv"
    assert Rule(test=bool, must="something true").describe() == "something true"

    @dataclasses.dataclass(frozen=True)
    class Example(DefenseConfig):
        epochs: int = setting(10, ge=1)
        lr: float = setting(0.1, gt=0, hint="e.g. 0.1")

    with pytest.raises(ValueError, match=r"^Example: lr must be > 0, got -0\.5; e\.g\. 0\.1$"):
        Example(lr=-0.5)
    # a value of the wrong kind is refused the same way, not with a TypeError from the comparison
    with pytest.raises(ValueError, match=r"^Example: epochs must be >= 1, got 'ten'$"):
        Example(epochs="ten")
    assert Example(3, 0.5, seed=1) == Example(epochs=3, lr=0.5, seed=1)  # own fields stay positional
