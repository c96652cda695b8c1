"""Presets say what SPEC §1.1 and Algorithm 1 say."""
from ibau import IBAUConfig


def test_reference_is_the_authors_code():
    ref = IBAUConfig.reference()
    # defense.py: the ℓ2 projection is commented out, the loader does not shuffle, K = 5, n_rounds = 5
    assert (ref.norm, ref.shuffle, ref.rounds, ref.inner_passes, ref.inner_warm_start) == ("none", False, 5, 1, False)
    assert (ref.batch_size, ref.solver, ref.solver_iters, ref.fixed_point_lr) == (100, "fixed_point", 5, 0.1)
    assert (ref.inner_optimizer, ref.inner_lr, ref.inner_penalty, ref.pseudo_labels) == ("sgd", 10.0, 0.001, True)
    assert (ref.hyper_batch, ref.hyper_batch_size, ref.perturb_fraction) == ("first", None, 0.01)
    assert (ref.outer_optimizer, ref.outer_lr, ref.model_mode, ref.clamp) == ("adam", 1e-3, "eval", False)


def test_paper_is_algorithm_1():
    paper = IBAUConfig.paper()
    assert (paper.norm, paper.norm_bound, paper.inner_penalty, paper.pseudo_labels) == ("l2", 10.0, 0.0, False)
    assert (paper.perturb_fraction, paper.hyper_batch) == (1.0, "current")


def test_norm_bound_defaults_per_norm_and_an_empty_box_is_refused():
    import pytest
    assert IBAUConfig(norm="l2").norm_bound == 10.0 and IBAUConfig(norm="linf").norm_bound == 1.0
    assert IBAUConfig(norm="l2").replace(norm="linf").norm_bound == 1.0  # the new norm's default, not ℓ2's 10
    assert IBAUConfig().norm_bound is None and IBAUConfig().replace(norm="l2").norm_bound == 10.0
    with pytest.raises(ValueError, match="constrains nothing"):
        IBAUConfig(norm="linf", norm_bound=10.0)


def test_default_is_the_measured_choice_of_docs_presets():
    """The default docs/presets.md measured (`d15` there): the
    authors' unbounded δ, shuffled clean set, at least 20 δ and θ steps a round, K = 2 on 20 images, δ's
    stamp with the class search, Adam 2e-3 on a cosine; changing it means re-measuring that page."""
    d = IBAUConfig()
    assert (d.norm, d.norm_bound, d.shuffle, d.inner_passes, d.min_steps, d.inner_warm_start) == ("none", None, True, 1, 20, False)
    assert (d.solver, d.solver_iters, d.hyper_batch_size, d.perturb_fraction, d.rounds) == ("fixed_point", 2, 20, 0.01, 3)
    assert (d.inner_lr, d.inner_penalty, d.pseudo_labels, d.clamp) == (10.0, 0.001, True, False)
    assert (d.patch_threshold, d.patch_fraction, d.patch_search) == (0.995, 0.2, "classes_first_round")
    assert (d.patch_steps, d.patch_l1) == (40, 0.003)
    assert (d.outer_optimizer, d.outer_lr, d.outer_lr_schedule) == ("adam", 2e-3, "cosine")


def test_overrides_and_replace():
    cfg = IBAUConfig.preset("paper", rounds=7)
    assert cfg.rounds == 7 and cfg.replace(solver="cg").solver == "cg"


def test_fast_preset_is_the_default_in_bfloat16_channels_last():
    fast, default = IBAUConfig.preset("fast").to_dict(), IBAUConfig().to_dict()
    assert {k for k in fast if fast[k] != default[k]} == {"precision", "channels_last"}
    assert (fast["precision"], fast["channels_last"]) == ("bfloat16", True)
    assert IBAUConfig.preset("fast", rounds=1).rounds == 1
