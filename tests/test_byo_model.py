"""Models from elsewhere through the CLI (issue 18): the I-BAU authors' checkpoint layout, BackdoorBench's
``attack_result.pt``, the user's own module:factory, torchvision names, --normalize and --trigger, each run
with `ibau evaluate` and `ibau defend` on digits-sized data with tiny settings."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ibau.attacks import BadNets
from ibau.cli import main
from ibau.data.digits import load_digits
from ibau.models import ModelCard, build_model, load_model, small_vgg


def one_line(err: str) -> None:
    """What the CLI printed for an error: one line, no traceback."""
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err

pytestmark = pytest.mark.usefixtures("one_thread")

SHARED = Path(__file__).resolve().parents[2] / "shared"
# I-BAU in a few steps: enough to run every part of a round, cheap enough for seconds
TINY_IBAU = ["--rounds", "1", "--batch-size", "10", "--defense-option", "inner_steps=2", "--defense-option", "outer_steps=2",
             "--defense-option", "patch_threshold=0", "--no-progress", "--device", "cpu"]


def _run(args):
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


def _evaluate(capsys, args) -> tuple[dict, str]:
    """`ibau evaluate` → (its JSON record from stdout, what it logged on stderr)."""
    assert _run(["evaluate", *args]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


@pytest.fixture(scope="module")
def digits16(tmp_path_factory):
    """An npz of 16×16 RGB digits: 10 training and 60 test images (digits-sized, cheap for ResNets)."""
    full = load_digits(size=16, channels=3)
    x = (full.images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    y = full.labels.numpy()
    path = tmp_path_factory.mktemp("data") / "digits16.npz"
    np.savez(path, x_train=x[:10], y_train=y[:10], x_test=x[100:160], y_test=y[100:160])
    return path


def _data(npz):
    return ["--dataset", "npz", "--data-dir", str(npz), "--clean-size", "30"]


# --- the I-BAU authors' checkpoint: {'net': state_dict, 'acc', 'epoch'} with their names --------------
def _authors_names(model: nn.Sequential) -> dict[str, torch.Tensor]:
    """The small VGG's tensors under the authors' names: one `features` Sequential, then `classifier`."""
    out = {}
    for key, value in model.state_dict().items():
        index, _, rest = key.partition(".")
        out[f"classifier.{rest}" if int(index) == len(model) - 1 else f"features.{index}.{rest}"] = value
    return out


@pytest.fixture(scope="module")
def authors_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = small_vgg(10).eval()  # 32×32 inputs: the authors' Linear(2048, 10), as the digits dataset is
    path = tmp_path_factory.mktemp("authors") / "badnets_8_02_ckpt.pth"
    state = _authors_names(model)
    assert list(state)[:2] == ["features.0.weight", "features.0.bias"] and "features.20.running_var" in state
    torch.save({"net": state, "acc": 84.9, "epoch": 50}, path)
    return path, model


def test_authors_checkpoint_evaluates_and_defends(authors_ckpt, tmp_path, capsys):
    path, model = authors_ckpt
    data = ["--dataset", "digits", "--clean-size", "450"]
    plain, err = _evaluate(capsys, ["--model", str(path), "--arch", "small_vgg", *data])
    assert "asr" not in plain and "no ASR: badnets_8_02_ckpt.pth has no card that names its trigger; pass --trigger" in err
    record, err = _evaluate(capsys, ["--model", str(path), "--arch", "small_vgg", "--trigger", "badnets,target=8", *data])
    assert record["acc"] == plain["acc"]
    layout = [line for line in err.splitlines() if "loaded by layout" in line]
    assert len(layout) == 1 and "features.0.weight -> 0.weight" in layout[0]
    assert record["held_out"] == 50 and {"acc", "asr", "ra"} <= set(record)
    out = tmp_path / "defended"
    assert _run(["defend", "--model", str(path), "--arch", "small_vgg", "--trigger", "badnets,target=8", *data,
                 "--out", str(out), *TINY_IBAU]) == 0
    assert "loaded by layout" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["before"]["asr"] == pytest.approx(record["asr"]) and metrics["attack"]["name"] == "badnets"
    defended, card = load_model(out / "model.safetensors")  # the saved card rebuilds it, trigger included
    assert card.arch == "small_vgg" and card.metadata["attack"]["target"] == 8
    again, _ = _evaluate(capsys, ["--model", str(out / "model.safetensors"), *data])
    assert again["asr"] == pytest.approx(metrics["after"]["asr"])


def test_ibau_badnets_is_the_authors_trigger():
    """The authors' patching: x[27:31, 27:31, :] = 1 on 32×32 HWC images in [0, 1] (rows/cols 27–30)."""
    x = torch.rand(3, 3, 32, 32)
    theirs = x.clone()
    theirs[:, :, 32 - 1 - 4:32 - 1, 32 - 1 - 4:32 - 1] = 1.0
    assert torch.equal(BadNets(target=8).apply(x), theirs)


def test_mismatched_and_ambiguous_files_are_one_line_errors(authors_ckpt, tmp_path, capsys):
    path, model = authors_ckpt
    state = torch.load(path, weights_only=True)["net"]
    head = dict(state, **{"classifier.weight": torch.zeros(43, 2048), "classifier.bias": torch.zeros(43)})
    torch.save({"net": head}, tmp_path / "gtsrb_head.pth")
    args = ["--arch", "small_vgg", "--dataset", "digits", "--clean-size", "450"]
    assert _run(["evaluate", "--model", str(tmp_path / "gtsrb_head.pth"), *args]) == 2
    err = capsys.readouterr().err
    one_line(err.strip())
    assert "does not match its card (small_vgg, 10 classes; 44 tensors, the file 44)" in err
    assert "first shape mismatch at tensor 43: file classifier.weight (43, 2048) vs 25.weight (10, 2048)" in err
    assert "pass the --arch/--num-classes it was made with" in err
    # one tensor short: the first missing one, by position
    torch.save({"net": dict(list(state.items())[:-1])}, tmp_path / "short.pth")
    assert _run(["evaluate", "--model", str(tmp_path / "short.pth"), *args]) == 2
    err = capsys.readouterr().err
    one_line(err.strip())
    assert "(small_vgg, 10 classes; 44 tensors, the file 43): first missing tensor: 25.bias (10)" in err
    # the architecture's own names with tensors that do not fit them: refused by name
    swapped = dict(model.state_dict())
    swapped["0.weight"], swapped["0.bias"] = swapped["0.bias"], swapped["0.weight"]
    torch.save(swapped, tmp_path / "swapped.pth")
    assert _run(["evaluate", "--model", str(tmp_path / "swapped.pth"), *args]) == 2
    err = capsys.readouterr().err
    one_line(err.strip())
    assert "first shape mismatch at tensor 1: file 0.weight (32) vs 0.weight (32, 3, 3, 3)" in err
    torch.save({"net": state, "model": state}, tmp_path / "two.pth")
    assert _run(["evaluate", "--model", str(tmp_path / "two.pth"), *args]) == 2
    err = capsys.readouterr().err
    one_line(err.strip())
    assert "holds 2 state dicts ('net', 'model'), so which model to load is ambiguous" in err


# --- BackdoorBench attack_result.pt ----------------------------------------------------------------
def _bb_file(folder: Path, model_name: str, model: nn.Module, npz: Path, target: int | None = 0,
             with_bd_test: bool = True) -> Path:
    """An attack_result.pt laid out as BackdoorBench's save_attack_result writes it (v2 datasets): the
    poisoned test images as PNG files under bd_test_dataset/<label>/<index>.png, their state with numpy
    index arrays and {"path", "other_info": [poisoned label, label]} entries."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    with np.load(npz) as f:
        x_test, y_test = f["x_test"], f["y_test"]
    bd_test = None
    if with_bd_test:
        trigger = BadNets(target=target)
        data_dict, poisoned_index = {}, []
        for i, (img, label) in enumerate(zip(x_test, y_test)):
            if int(label) == target:
                continue
            stamped = trigger.apply(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)[0]
            png = folder / "bd_test_dataset" / str(int(label)) / f"{i}.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((stamped.permute(1, 2, 0) * 255).round().byte().numpy()).save(png)
            # BackdoorBench records the path it wrote from its own working folder
            data_dict[np.int64(i)] = {"path": f"./record/{folder.name}/bd_test_dataset/{int(label)}/{i}.png",
                                      "other_info": [target, int(label)]}
            poisoned_index.append(i)
        indicator = np.zeros(len(y_test))
        indicator[poisoned_index] = 1
        bd_test = {"bd_data_container": {"save_folder_path": f"./record/{folder.name}/bd_test_dataset",
                                         "data_dict": data_dict, "save_file_format": ".png"},
                   "getitem_all": True, "getitem_all_switch": False,
                   "original_index_array": np.array(poisoned_index), "poison_indicator": indicator,
                   "save_folder_path": f"./record/{folder.name}/bd_test_dataset"}
    path = folder / "attack_result.pt"
    torch.save({"model_name": model_name, "num_classes": 10, "model": model.state_dict(),
                "data_path": "./data/cifar10", "img_size": [16, 16, 3], "clean_data": "cifar10",
                "bd_train": None, "bd_test": bd_test}, path)
    return path


def _bb_preact(model_name="preactresnet18"):
    """BackdoorBench's PreActResNet18 layout, written out independently: no BatchNorm after layer4."""
    torch.manual_seed(0)
    model = build_model("bb:preactresnet18", num_classes=10).eval()
    keys = list(model.state_dict())
    assert keys[:3] == ["conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias"]
    assert "layer2.0.shortcut.0.weight" in keys and "layer1.0.shortcut.0.weight" not in keys
    assert keys[-2:] == ["linear.weight", "linear.bias"] and not any(k.startswith("bn.") for k in keys)
    assert len(keys) == 1 + 4 * 2 * (5 + 1 + 5 + 1) + 3 + 2  # conv1; 8 blocks of bn1,conv1,bn2,conv2; 3 shortcuts; linear
    return model


def test_backdoorbench_preactresnet18_gives_asr_from_its_own_poisoned_test_set(digits16, tmp_path, capsys):
    model = _bb_preact()
    path = _bb_file(tmp_path / "bb_preact", "preactresnet18", model, digits16)
    record, err = _evaluate(capsys, ["--model", str(path), *_data(digits16)])
    assert "BackdoorBench result: bb:preactresnet18, 10 classes" in err and "ASR from attack_result.pt's own" in err
    # the file's PNGs are BadNets stamps, so its ASR is the spec's exactly
    spec, _ = _evaluate(capsys, ["--model", str(path), "--trigger", "badnets,target=0", *_data(digits16)])
    assert record["acc"] == spec["acc"] and record["asr"] == spec["asr"] and record["ra"] == spec["ra"]
    out = tmp_path / "defended"
    assert _run(["defend", "--model", str(path), *_data(digits16), "--out", str(out), *TINY_IBAU]) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["attack"]["name"] == "backdoorbench_bd_test" and metrics["before"]["asr"] == pytest.approx(record["asr"])
    assert (out / "delta.png").exists() and (out / "curve.png").exists()
    defended, card = load_model(out / "model.safetensors")  # a name, not code: its card alone rebuilds it
    assert card.arch == "bb:preactresnet18" and card.input_shape == [3, 16, 16]
    assert card.normalization == {"mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.243, 0.261]}
    assert card.metadata["source"] == "backdoorbench" and card.metadata["model_name"] == "preactresnet18"
    # ibau's normalisation layer in front of their network = their transform before it
    from ibau.pipeline.defend import load_external

    x = torch.rand(4, 3, 16, 16)
    mean = torch.tensor(card.normalization["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(card.normalization["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = load_external(path, "npz", str(digits16), False, 30, 0).model(x)
        assert torch.allclose(ours, model((x - mean) / std), atol=1e-5)


def test_backdoorbench_torchvision_resnet18_without_bd_test(digits16, tmp_path, capsys):
    """Their resnet18 is torchvision's, unchanged; a file without a readable poisoned test set says so."""
    import torchvision

    torch.manual_seed(0)
    path = _bb_file(tmp_path / "bb_rn", "resnet18", torchvision.models.resnet18(num_classes=10), digits16,
                    with_bd_test=False)
    record, err = _evaluate(capsys, ["--model", str(path), *_data(digits16)])
    assert "asr" not in record and "no ASR: attack_result.pt carries no poisoned test set (bd_test)" in err
    assert "--trigger" in err
    out = tmp_path / "defended"
    assert _run(["defend", "--model", str(path), "--trigger", "badnets,target=0", *_data(digits16), "--out", str(out),
                 *TINY_IBAU]) == 0
    _, card = load_model(out / "model.safetensors")
    assert card.arch == "bb:resnet18" and card.metadata["attack"]["name"] == "badnets"


def test_backdoorbench_vgg19_bn_layout():
    """BackdoorBench's vgg19_bn is torchvision's: config E with BatchNorm, then a 7×7 average pool and a
    25088-4096-4096-C classifier. Checked on the meta device (139M parameters)."""
    from ibau.models import backdoorbench as bb
    from ibau.models.io import fit_state

    expected, i, cin = [], 0, 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]:
        if v == "M":
            i += 1
            continue
        expected += [(f"features.{i}.weight", (v, cin, 3, 3)), (f"features.{i}.bias", (v,))]
        expected += [(f"features.{i + 1}.{n}", (v,)) for n in ("weight", "bias", "running_mean", "running_var")]
        expected += [(f"features.{i + 1}.num_batches_tracked", ())]
        i, cin = i + 3, v
    expected += [("classifier.0.weight", (4096, 25088)), ("classifier.0.bias", (4096,)), ("classifier.3.weight", (4096, 4096)),
                 ("classifier.3.bias", (4096,)), ("classifier.6.weight", (10, 4096)), ("classifier.6.bias", (10,))]
    card = bb.card_for({"model_name": "vgg19_bn", "num_classes": 10, "model": {}, "img_size": [32, 32, 3],
                        "clean_data": "cifar10"}, "attack_result.pt")
    assert card.arch == "bb:vgg19_bn" and card.normalization["mean"] == [0.4914, 0.4822, 0.4465]
    with torch.device("meta"):
        model = card.build()
        state = {k: torch.empty(shape) for k, shape in expected}
    fit_state(model, state, card, "attack_result.pt")
    weights = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in ("0.mean", "0.std")}
    assert [(k.removeprefix("1."), s) for k, s in weights.items()] == expected


def test_backdoorbench_file_on_the_wrong_test_split_says_so(digits16, tmp_path, capsys):
    path = _bb_file(tmp_path / "bb_preact", "preactresnet18", _bb_preact(), digits16)
    shuffled = tmp_path / "shuffled.npz"
    with np.load(digits16) as f:
        arrays = dict(f)
    arrays["x_test"], arrays["y_test"] = arrays["x_test"][::-1].copy(), arrays["y_test"][::-1].copy()
    np.savez(shuffled, **arrays)
    record, err = _evaluate(capsys, ["--model", str(path), "--dataset", "npz", "--data-dir", str(shuffled), "--clean-size", "30"])
    assert "asr" not in record and "does not line up with --dataset's test split" in err
    for png in (tmp_path / "bb_preact" / "bd_test_dataset").rglob("*.png"):
        png.unlink()
    record, err = _evaluate(capsys, ["--model", str(path), *_data(digits16)])
    assert "asr" not in record and "are missing" in err


# --- the user's own architecture: --arch module.path:factory ----------------------------------------
USER_MODULE = '''
from torch import nn


def build(num_classes, in_channels=3):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, num_classes))
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "ibau_test_user_nets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    yield "ibau_test_user_nets:build"
    sys.modules.pop("ibau_test_user_nets", None)


def test_user_factory_with_normalize_round_trips_through_its_card(user_module, digits16, tmp_path, capsys):
    from ibau.models.external import import_factory

    torch.manual_seed(0)
    path = tmp_path / "mine.pt"
    torch.save(import_factory(user_module)(num_classes=10).state_dict(), path)
    args = ["--arch", user_module, "--normalize", "0.5,0.25", "--trigger", "badnets,target=3", *_data(digits16)]
    record, err = _evaluate(capsys, ["--model", str(path), *args])
    assert "building build(num_classes=10, in_channels=3) from your own code" in err
    assert "input normalisation from the card (mean [0.5, 0.5, 0.5], std [0.25, 0.25, 0.25])" in err
    out = tmp_path / "defended"
    assert _run(["defend", "--model", str(path), *args, "--out", str(out), *TINY_IBAU]) == 0
    capsys.readouterr()
    card = json.loads((out / "model.json").read_text())
    assert card["arch"] == user_module and card["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    # a card naming code is built only when the user names the same code
    assert _run(["evaluate", "--model", str(out / "model.safetensors"), *_data(digits16)]) == 2
    err = capsys.readouterr().err
    one_line(err.strip())
    assert f"names the architecture '{user_module}', Python code to import" in err and f"--arch {user_module}" in err
    again, _ = _evaluate(capsys, ["--model", str(out / "model.safetensors"), "--arch", user_module, *_data(digits16)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert again["acc"] == pytest.approx(metrics["after"]["acc"]) and again["asr"] == pytest.approx(metrics["after"]["asr"])
    model, _ = load_model(out / "model.safetensors", trust_arch=user_module)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("arch,match", [
    ("ibau_no_such_module_x:build", "cannot import 'ibau_no_such_module_x'"),
    ("ibau_test_user_nets:nothing", "has no 'nothing'"),
    ("torchvision:resnet19", "torchvision has no classification model 'resnet19' (did you mean"),
    ("timm:hf-hub:someone/model", "names a model hub entry"),
])
def test_arch_errors_are_one_line(user_module, digits16, tmp_path, capsys, arch, match):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(1)}, path)
    assert _run(["evaluate", "--model", str(path), "--arch", arch, *_data(digits16)]) == 2
    err = capsys.readouterr().err
    one_line(err.strip())
    assert match in err


def test_timm_without_timm_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ValueError, match=r"--arch timm:resnet18 needs the timm package, which is not installed; "
                                         r"pip install 'ibau\[timm\]'") as exc:
        build_model("timm:resnet18", num_classes=10)
    assert "\n" not in str(exc.value)


def test_timm_name_builds_where_installed():
    pytest.importorskip("timm")
    model = build_model("timm:resnet18", num_classes=10, mean=[0.5] * 3, std=[0.25] * 3)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


# --- a torchvision architecture by name ----------------------------------------------------------
def test_torchvision_name_with_imagenet_normalisation(digits16, tmp_path, capsys):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    path = tmp_path / "tv.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    args = ["--arch", "torchvision:resnet18", "--normalize", "imagenet", "--trigger", "badnets,target=1", *_data(digits16)]
    record, _ = _evaluate(capsys, ["--model", str(path), *args])
    out = tmp_path / "defended"
    assert _run(["defend", "--model", str(path), *args, "--out", str(out), *TINY_IBAU]) == 0
    model, card = load_model(out / "model.safetensors")  # a name, not code: reloads from its card alone
    assert card.arch == "torchvision:resnet18" and card.normalization["std"] == [0.229, 0.224, 0.225]
    x = torch.rand(2, 3, 16, 16)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(load_model(out / "model.safetensors")[0](x), model(x))
        from ibau.pipeline.defend import load_external
        assert torch.allclose(load_external(path, "npz", str(digits16), False, 30, 0, "torchvision:resnet18",
                                            normalize="imagenet").model(x), net((x - mean) / std), atol=1e-5)


@pytest.mark.parametrize("text,match", [
    ("cifar11", "cannot read --normalize 'cifar11'"),
    ("0.5,0.5,0.5", "cannot read --normalize"),
    ("0.5,0.4/0.2", "has 2 means but 1 stds"),
    ("0.5,0", "every std must be > 0"),
])
def test_bad_normalize_is_one_line(digits16, tmp_path, capsys, text, match):
    path = tmp_path / "m.pt"
    torch.save(small_vgg(10, input_size=16).state_dict(), path)
    assert _run(["evaluate", "--model", str(path), "--arch", "small_vgg", "--normalize", text, *_data(digits16)]) == 2
    err = capsys.readouterr().err
    one_line(err.strip())
    assert match in err


def test_normalize_on_a_carded_model_is_refused(authors_ckpt, tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    from ibau.models import save_model

    save_model(small_vgg(10), path, ModelCard("small_vgg", 10, [3, 32, 32]))
    assert _run(["evaluate", "--model", str(path), "--normalize", "cifar10", "--dataset", "digits", "--clean-size", "450"]) == 2
    assert "--normalize and --num-classes are for files without one" in capsys.readouterr().err


# --- the real authors' model (shared/, when present) ---------------------------------------------
@pytest.mark.slow
def test_the_authors_cifar10_badnets_checkpoint_evaluates(capsys):
    model, data = SHARED / "models" / "badnets_8_02_ckpt.pth", SHARED / "data" / "cifar10.npz"
    if not (model.exists() and data.exists()):
        pytest.skip("the authors' checkpoint or cifar10.npz is not in ../shared")
    record, err = _evaluate(capsys, ["--model", str(model), "--arch", "small_vgg", "--trigger", "badnets,target=8",
                                     "--dataset", "npz", "--data-dir", str(data), "--clean-size", "9000"])
    assert "loaded by layout" in err and record["held_out"] == 1000
    assert record["acc"] > 0.7 and record["asr"] > 0.9  # shared/models/README.md: ACC 78.4%, ASR 98.6%


@pytest.mark.slow
def test_the_authors_cifar10_badnets_checkpoint_defends_through_the_cli(tmp_path, capsys):
    """The real file, defended by I-BAU at a small scale (one round of 20 δ and 20 θ steps, δ's own stamp,
    no class search; the 1,000 held-out images keep the scoring short): the run loads it by layout, measures
    their trigger's ASR before and after (2.7% here), and saves a model its card rebuilds. (The default's
    full-scale figure, 3 rounds on 5,000 clean images, is in the README's "Bring your own model".)"""
    model, data = SHARED / "models" / "badnets_8_02_ckpt.pth", SHARED / "data" / "cifar10.npz"
    if not (model.exists() and data.exists()):
        pytest.skip("the authors' checkpoint or cifar10.npz is not in ../shared")
    out = tmp_path / "authors"
    assert _run(["defend", "--model", str(model), "--arch", "small_vgg", "--trigger", "badnets,target=8",
                 "--dataset", "npz", "--data-dir", str(data), "--clean-size", "9000", "--rounds", "1",
                 "--defense-option", "inner_steps=20", "--defense-option", "outer_steps=20",
                 "--defense-option", "patch_search=delta", "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    assert "loaded by layout" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["before"]["asr"] > 0.9 and metrics["after"]["asr"] < 0.2
    defended, card = load_model(out / "model.safetensors")
    assert card.arch == "small_vgg" and card.metadata["attack"]["target"] == 8
