"""Checkpoints from other people's training scripts: nesting, prefixes, devices, pickles."""

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edit_search.data.checkpoint import DEFAULT_CHECKPOINT, load_model
from edit_search.data.model import Classifier, SmallCNN, Transform
from edit_search.errors import InputError


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    """The shipped SmallCNN's state_dict."""
    return torch.load(DEFAULT_CHECKPOINT, weights_only=True)


@pytest.fixture
def batch(challenge_dir: Path) -> torch.Tensor:
    """The shipped challenge digits, (5, 1, 28, 28) in [0, 1]."""
    from edit_search.data.images import load_image, to_float

    pixels = [load_image(p).pixels for p in sorted(challenge_dir.glob("*.png"))]
    return to_float(torch.stack(pixels))[:, None]


def _net(state: dict[str, torch.Tensor]) -> SmallCNN:
    net = SmallCNN()
    net.load_state_dict(state)
    return net


def _save(obj: object, name: str) -> Path:
    path = Path(name)
    torch.save(obj, path)
    return path


def test_load_model_plain_state_dict_gives_shipped_logits(
    state: dict[str, torch.Tensor], model: Classifier, batch: torch.Tensor
) -> None:
    loaded = load_model(_save(state, "plain.pt"))
    assert torch.equal(loaded(batch), model(batch))


def test_load_model_data_parallel_prefix_gives_bitwise_same_logits(
    state: dict[str, torch.Tensor], batch: torch.Tensor
) -> None:
    wrapped = nn.DataParallel(_net(state)).state_dict()
    assert all(key.startswith("module.") for key in wrapped)
    plain = load_model(_save(state, "plain.pt"))
    parallel = load_model(_save(wrapped, "parallel.pt"))
    assert torch.equal(parallel(batch), plain(batch))


def test_load_model_nested_with_numpy_values_loads_without_trust(
    state: dict[str, torch.Tensor], model: Classifier, batch: torch.Tensor
) -> None:
    payload = {
        "state_dict": state,
        "epoch": np.int64(7),
        "best_accuracy": np.float32(0.83),
        "history": np.array([0.5, 0.7, 0.83]),
    }
    loaded = load_model(_save(payload, "nested.pt"))
    assert torch.equal(loaded(batch), model(batch))


def test_load_model_saved_on_gpu_loads_on_cpu(
    state: dict[str, torch.Tensor],
    model: Classifier,
    batch: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A file saved from CUDA tensors differs from a CPU one only in each storage's location
    # tag; this machine has no GPU, so the tag is written as torch.save does on one.
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        path = _save({"model_state_dict": state}, "gpu.pt")
    with zipfile.ZipFile(path) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"cuda:0" in pickled
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)

    loaded = load_model(path, device="cpu")
    assert next(loaded.parameters()).device.type == "cpu"
    assert torch.equal(loaded(batch), model(batch))


def test_load_model_whole_module_refused_then_loaded_with_trust(
    state: dict[str, torch.Tensor], model: Classifier, batch: torch.Tensor
) -> None:
    path = _save(_net(state), "whole.pt")
    with pytest.raises(InputError) as refused:
        load_model(path)
    message = str(refused.value)
    assert "would run code" in message and "SmallCNN" in message
    assert "--trust-checkpoint" in message and "\n" not in message

    trusted = load_model(path, trust_checkpoint=True)
    assert torch.equal(trusted(batch), model(batch))


class _Payload:
    """Unpickling this creates a folder: stands in for any code a hostile file could run."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.mkdir, ("payload-ran",)


def test_load_model_hostile_pickle_refused_and_its_code_never_runs(
    state: dict[str, torch.Tensor],
) -> None:
    path = _save({"state_dict": state, "extra": _Payload()}, "hostile.pt")
    with pytest.raises(InputError, match=r"would run code from the file \(it needs .*mkdir"):
        load_model(path)
    assert not Path("payload-ran").exists()


def test_load_model_wrong_shapes_lists_every_bad_key(state: dict[str, torch.Tensor]) -> None:
    wider = SmallCNN(channels=8).state_dict()
    del wider["fc2.bias"]
    wider["head.weight"] = torch.zeros(3)
    with pytest.raises(InputError) as refused:
        load_model(_save(wider, "wider.pt"))
    message = str(refused.value)
    assert "missing: fc2.bias" in message
    assert "unexpected: head.weight" in message
    assert "conv1.weight (8, 1, 5, 5) != (4, 1, 5, 5)" in message
    assert "fc1.weight (16, 1152) != (16, 576)" in message


def test_load_model_not_a_state_dict_refused() -> None:
    with pytest.raises(InputError, match=r"holds no state_dict \(found list\)"):
        load_model(_save([1, 2, 3], "list.pt"))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"hello"])
def test_load_model_unreadable_file_refused(content: bytes) -> None:
    path = Path("broken.pt")
    path.write_bytes(content)
    with pytest.raises(InputError, match="cannot read checkpoint 'broken.pt'"):
        load_model(path)


def test_load_model_truncated_checkpoint_refused(state: dict[str, torch.Tensor]) -> None:
    path = _save(state, "cut.pt")
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(InputError, match="cannot read checkpoint 'cut.pt'"):
        load_model(path)


def test_load_model_missing_file_refused() -> None:
    with pytest.raises(InputError, match="checkpoint 'absent.pt' does not exist"):
        load_model("absent.pt")


_USER_ARCH = """
from torch import nn


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)


class NeedsWidth(nn.Module):
    def __init__(self, width):
        super().__init__()


class NotANetwork:
    pass


class Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)).flatten()
"""


@pytest.fixture
def user_arch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's own network in an importable module; returns its ``--arch`` name."""
    (tmp_path / "user_nets.py").write_text(_USER_ARCH)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_nets:TinyMLP"
    sys.modules.pop("user_nets", None)


def test_load_model_user_arch_with_transform_argument(user_arch: str) -> None:
    from user_nets import TinyMLP

    torch.manual_seed(0)
    net = TinyMLP()
    path = _save(net.state_dict(), "mlp.pt")
    transform = Transform(mean=0.5, std=0.25)
    loaded = load_model(path, arch=user_arch, transform=transform)

    images = torch.rand(3, 1, 28, 28)
    assert loaded.transform == transform and loaded.num_classes == 10
    assert torch.equal(loaded(images), net((images - 0.5) / 0.25))


def test_load_model_user_arch_transform_read_beside_checkpoint(user_arch: str) -> None:
    from user_nets import TinyMLP

    path = _save(TinyMLP().state_dict(), "mlp.pt")
    Path("mlp.json").write_text(json.dumps({"transform": {"mean": 0.2, "std": 0.4}}))
    assert load_model(path, arch=user_arch).transform == Transform(mean=0.2, std=0.4)
    Path("mlp.json").write_text(json.dumps({"transform": {"mean": 0.2}}))
    with pytest.raises(InputError, match="'mlp.json' beside the checkpoint has no valid"):
        load_model(path, arch=user_arch)


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("TinyMLP", "--arch must look like 'package.module:ClassName'"),
        ("no_such_package:Net", "cannot import --arch 'no_such_package:Net'"),
        ("torch.nn:NoSuchNet", "cannot import --arch 'torch.nn:NoSuchNet'"),
    ],
)
def test_load_model_bad_arch_refused(
    state: dict[str, torch.Tensor], arch: str, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        load_model(_save(state, "plain.pt"), arch=arch)


def test_load_model_smallcnn_state_for_user_arch_lists_keys(
    state: dict[str, torch.Tensor], user_arch: str
) -> None:
    with pytest.raises(InputError, match="does not fit TinyMLP .*missing: body.1.bias"):
        load_model(_save(state, "plain.pt"), arch=user_arch)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("NeedsWidth", "cannot build --arch 'user_nets:NeedsWidth' with no arguments"),
        ("NotANetwork", "builds a NotANetwork, not a torch.nn.Module"),
        ("Flat", r"returns shape \(10,\) for one image, expected \(1, 10\)"),
    ],
)
def test_load_model_unusable_user_arch_refused(user_arch: str, name: str, message: str) -> None:
    from user_nets import Flat

    path = _save(Flat().state_dict(), "flat.pt")
    with pytest.raises(InputError, match=message):
        load_model(path, arch=f"user_nets:{name}")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated upstream
def test_load_model_torchscript_archive_refused_naming_the_fix(
    state: dict[str, torch.Tensor],
) -> None:
    torch.jit.script(_net(state)).save("scripted.pt")
    with pytest.raises(InputError, match="'scripted.pt' is a TorchScript archive"):
        load_model("scripted.pt")


def test_load_model_folder_refused() -> None:
    Path("weights.pt").mkdir()
    with pytest.raises(InputError, match="checkpoint 'weights.pt' is a folder"):
        load_model("weights.pt")


@pytest.mark.parametrize(
    "transform",
    [
        {"mean": 0.1, "std": 0},
        {"mean": 0.1, "std": -0.3},
        {"mean": float("nan"), "std": 0.3},
        {"mean": 0.1, "std": float("inf")},
        {"mean": "0.1", "std": 0.3},
        {"mean": True, "std": 0.3},
    ],
)
def test_load_model_unusable_transform_file_refused_naming_it(
    state: dict[str, torch.Tensor], transform: dict[str, object]
) -> None:
    path = _save(state, "mine.pt")
    Path("mine.json").write_text(json.dumps({"transform": transform}))
    with pytest.raises(InputError) as refused:
        load_model(path)
    message = str(refused.value)
    assert message.startswith("'mine.json' beside the checkpoint gives mean")
    assert "std > 0" in message and "\n" not in message


def test_effective_transform_names_its_source(state: dict[str, torch.Tensor]) -> None:
    from edit_search.data.checkpoint import effective_transform

    path = _save(state, "mine.pt")
    assert effective_transform(path) == (Transform(), "default")
    Path("mine.json").write_text(json.dumps({"transform": {"mean": 0.2, "std": 0.5}}))
    assert effective_transform(path) == (Transform(0.2, 0.5), "file")
    assert effective_transform(path, Transform(0.3, 0.6)) == (Transform(0.3, 0.6), "option")
    assert load_model(path).transform == Transform(0.2, 0.5)


@pytest.mark.parametrize(("value", "count"), [(float("nan"), 1), (float("inf"), 2)])
def test_load_model_non_finite_weights_refused_naming_the_tensor(
    state: dict[str, torch.Tensor], value: float, count: int
) -> None:
    broken = {k: v.clone() for k, v in state.items()}
    broken["fc1.weight"][0, :count] = value
    with pytest.raises(InputError) as refused:
        load_model(_save(broken, "diverged.pt"))
    message = str(refused.value)
    assert f"{count} NaN or infinite value(s) in 'fc1.weight' (16, 576)" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "content", [bytes(range(256)) * 8, b"\x00\xff" * 100, b"hello world", b"PK\x03\x04 torn"]
)
def test_load_model_garbage_file_called_unreadable_not_code(content: bytes) -> None:
    path = Path("garbage.pt")
    path.write_bytes(content)
    with pytest.raises(InputError) as refused:
        load_model(path)
    message = str(refused.value)
    assert "is not a readable checkpoint" in message
    assert "run code" not in message and "--trust-checkpoint" not in message


def test_load_model_plain_pickle_with_code_refused_without_torch_warning(
    recwarn: pytest.WarningsRecorder,
) -> None:
    import pickle

    with open("evil.pt", "wb") as handle:
        pickle.dump({"extra": _Payload()}, handle, protocol=4)
    with pytest.raises(InputError, match=r"would run code from the file \(it needs .*mkdir"):
        load_model("evil.pt")
    assert not Path("payload-ran").exists()
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]


def test_load_model_legacy_torch_save_format_still_loads(
    state: dict[str, torch.Tensor], model: Classifier, batch: torch.Tensor
) -> None:
    path = Path("legacy.pt")
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_model(path)(batch), model(batch))
