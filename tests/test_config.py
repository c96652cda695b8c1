"""Presets say what SPEC §1.1 and Algorithm 1 say."""
from ibau import IBAUConfig


def test_reference_is_the_authors_code():
    ref = IBAUConfig.reference()
    assert (ref.batch_size, ref.solver, ref.solver_iters, ref.fixed_point_lr) == (100, "fixed_point", 5, 0.1)
    assert (ref.inner_optimizer, ref.inner_lr, ref.inner_penalty, ref.pseudo_labels) == ("sgd", 10.0, 0.001, True)
    assert (ref.hyper_batch, ref.hyper_batch_size, ref.perturb_fraction) == ("first", None, 0.01)
    assert (ref.outer_optimizer, ref.outer_lr, ref.model_mode, ref.clamp) == ("adam", 1e-3, "eval", False)


def test_paper_is_algorithm_1():
    paper = IBAUConfig.paper()
    assert (paper.norm, paper.norm_bound, paper.inner_penalty, paper.pseudo_labels) == ("l2", 10.0, 0.0, False)
    assert (paper.perturb_fraction, paper.hyper_batch) == (1.0, "current")


def test_default_differs_from_reference_only_in_the_measured_speed_ups():
    diff = {k for k, v in IBAUConfig().to_dict().items() if IBAUConfig.reference().to_dict()[k] != v}
    assert diff == {"hyper_batch_size", "solver_iters"}


def test_overrides_and_replace():
    cfg = IBAUConfig.preset("paper", rounds=7)
    assert cfg.rounds == 7 and cfg.replace(solver="cg").solver == "cg"
