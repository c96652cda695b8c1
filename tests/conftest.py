"""Fixtures and helpers shared by the tests: tiny models and data, the trained digits backdoor, model-state
snapshots, held-out evaluation of a defended digits model, and the one-line error check."""
import pytest
import torch
from torch import nn

from ibau import IBAUConfig
from ibau.metrics import EffectMonitor, evaluate


def one_line(msg: str):
    """An error a user reads: one short line."""
    assert "\n" not in msg and len(msg) < 300, msg


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of ``model``'s state dict (to check later that it did or did not change)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a, b) -> bool:
    """Whether two models or state dicts (any mix) have the same keys and equal tensors."""
    a, b = (x.state_dict() if isinstance(x, nn.Module) else x for x in (a, b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def held_metrics(d, model: nn.Module) -> dict[str, float]:
    """ACC/ASR/RA of ``model`` on the held-out images of the ``digits_backdoor`` fixture ``d``."""
    return evaluate(model, d["held"].images, d["held"].labels, d["trigger"], d["num_classes"])


def held_monitor(d) -> EffectMonitor:
    """An :class:`EffectMonitor` on the held-out images of the ``digits_backdoor`` fixture ``d``."""
    return EffectMonitor(d["held"].images, d["held"].labels, d["trigger"], d["num_classes"])


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): the
    2 CPU cores are shared with background jobs, and two threads then stall each other (measured ~8x
    slower per batch). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def class_searches(real, calls: list, stop_after: int | None = None):
    """``real`` (Neural Cleanse's ``reverse_engineer``) that appends each searched class to ``calls`` and, with
    ``stop_after``, raises KeyboardInterrupt (a stopped run) once that many searches have run."""
    def search(*args, **kwargs):
        if stop_after is not None and len(calls) == stop_after:
            raise KeyboardInterrupt
        calls.append(args[2])
        return real(*args, **kwargs)
    return search


def tiny_net(num_classes: int = 4) -> nn.Module:
    """conv-BN-ELU-pool-linear: the small VGG's layer types at a size the CPU tests can afford."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ELU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, num_classes))


def tiny_config(**options):
    """A 3-round config for the tiny tasks, the small-set rules off: tests of the guard need a step large enough to
    harm the model on a few dozen images."""
    return IBAUConfig(rounds=3, batch_size=20, patch_threshold=0, min_steps=0, **{**NO_SIZE_RULES, **options})


def learnt_task():
    """120 random 8×8 images labelled by their brightest quadrant, and a tiny net fitted to them: the clean
    accuracy it starts from is high, so rounds at a harsh step lose different amounts of it."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(120, 3, 8, 8, generator=g)
    y = torch.stack([x[:, :, i:i + 4, j:j + 4].mean((1, 2, 3)) for i in (0, 4) for j in (0, 4)], 1).argmax(1)
    torch.manual_seed(0)
    model = tiny_net(4)
    opt = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


@pytest.fixture
def tiny_task():
    """A random 8×8 RGB, 4-class problem and a small untrained model."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 3, 8, 8, generator=g)
    y = torch.randint(0, 4, (60,), generator=g)
    torch.manual_seed(0)
    return tiny_net(4).eval(), x, y


@pytest.fixture(scope="session")
def digits_backdoor():
    """A BadNets-poisoned small VGG on the embedded digits (the demo's protocol), trained once per test
    session and shared by the defense tests. Copy ``model`` before changing it."""
    from ibau.attacks import poison
    from ibau.data import ImageSet
    from ibau.demo import demo_trigger, split_digits
    from ibau.metrics import evaluate
    from ibau.models import small_vgg
    from ibau.training import train_classifier

    train, clean, held = split_digits(0)
    trigger = demo_trigger()
    p = poison(train.images, train.labels, trigger, ratio=0.2, num_classes=10, seed=0)
    torch.manual_seed(0)
    model = small_vgg(10, mean=[0.5] * 3, std=[0.25] * 3)
    train_classifier(model, ImageSet(p.images, p.labels), epochs=6, lr=1e-3, batch_size=64, seed=0,
                     device="cpu", progress=False)
    before = evaluate(model, held.images, held.labels, trigger, 10)
    return {"model": model.eval(), "clean": clean, "held": held, "trigger": trigger, "num_classes": 10,
            "train": ImageSet(p.images, p.labels), "poisoned_indices": p.indices, "before": before}


#: The test files that take a minute or more on CI's 2-core machine, longest first (CI's ``--durations`` of stop 57).
#: ``make test`` hands whole files to its two workers in collection order (``--dist loadfile
#: --no-loadscope-reorder``), so these start first and the short files fill in at the end; by default xdist puts the
#: files with the most tests first, which left the long files with few tests to run last on one worker.
LONG_FILES = ("test_bench_smoke.py", "test_guard_select.py", "test_guard.py", "test_defense_neural_cleanse.py",
              "test_byo_model.py", "test_demo.py", "test_bench.py", "test_defense_deepinspect_dp.py",
              "test_cli_attack.py", "test_probe.py", "test_defenses.py", "test_defense_baselines.py", "test_cli_defend.py")


def pytest_collection_modifyitems(items):
    """Tests on the session's trained digits model are slow (``make test-fast`` skips them); the long files go first."""
    for item in items:
        if "digits_backdoor" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: a file keeps its own order


#: The default's rules below 400 clean images (stop 50, docs/presets.md): the θ step shrunk as √(n/400) and the
#: anchor faded out at 400.
SMALL_CLEAN_RULES = {"outer_lr_size": 400, "outer_lr_size_cap": 2e-3, "clean_distill": 1.0, "clean_distill_size": 100,
                     "clean_distill_until": 400}
#: The same settings with the rules off, as the default ran before stop 50 (what recorded_defaults.json lists): tests
#: that pin another mechanism on a few dozen images (a step's arithmetic, a round that harms the model), where the
#: shrunk step and the anchor would act, run the default without them.
NO_SIZE_RULES = {"outer_lr_size": None, "outer_lr_size_cap": None, "clean_distill": 0.0, "clean_distill_size": None,
                 "clean_distill_until": None}
