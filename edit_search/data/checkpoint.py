"""Checkpoints: loading a SmallCNN state_dict (or a user's architecture) with its transform."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edit_search.data.model import Classifier, SmallCNN, Transform
from edit_search.errors import InputError

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "smallcnn.pt"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu`` or ``cuda`` as asked.

    Raises:
        InputError: CUDA was asked for on a machine without it, or the name is unknown.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA device is available; use cpu.")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device must be auto, cpu or cuda; received {device!r}.")
    return torch.device(device)


def read_transform(checkpoint: Path) -> Transform | None:
    """The input transform recorded beside a checkpoint in ``STEM.json``, or None without one.

    The file holds ``{"transform": {"mean": MEAN, "std": STD}}``, both finite numbers, STD > 0.

    Raises:
        InputError: the file is not JSON, lacks the field, or holds unusable numbers.
    """
    card = checkpoint.with_suffix(".json")
    if not card.is_file():
        return None
    try:
        recorded = json.loads(card.read_text())["transform"]
        mean, std = recorded["mean"], recorded["std"]
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{card.name!r} beside the checkpoint has no valid 'transform' "
            f"({{'mean': ..., 'std': ...}}): {type(exc).__name__}: {str(exc)[:80]}; "
            "fix or remove it."
        ) from None
    if not (_finite_number(mean) and _finite_number(std) and std > 0):
        raise InputError(
            f"{card.name!r} beside the checkpoint gives mean {mean!r} and std {std!r}; both "
            'must be finite numbers with std > 0, as in {"transform": {"mean": 0.1307, '
            '"std": 0.3081}}: fix or remove it.'
        )
    return Transform(mean=float(mean), std=float(std))


def _finite_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer too large for a float
        return False


def effective_transform(
    checkpoint: str | Path | None, transform: Transform | None = None
) -> tuple[Transform, str]:
    """The transform a model is loaded with, and where it came from.

    Args:
        checkpoint: the checkpoint file; None means the shipped one.
        transform: the transform given by the user, which wins over any file.

    Returns:
        The transform and its source: ``option``, ``file`` (``STEM.json`` beside the
        checkpoint) or ``default`` (MNIST's).

    Raises:
        InputError: ``STEM.json`` exists but is not usable.
    """
    if transform is not None:
        return transform, "option"
    path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    recorded = read_transform(path)
    return (recorded, "file") if recorded is not None else (Transform(), "default")


def _numpy_globals() -> list[Any]:
    """What ``weights_only`` needs for numpy values, as in ``{"epoch": np.int64(3)}``.

    A numpy scalar or array is rebuilt from a dtype, a shape and raw bytes; the only class it
    may instantiate is ``ndarray`` itself, so no code of the file runs.
    """
    multiarray = importlib.import_module(
        "numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray"
    )
    # numpy 2 rebuilds each dtype through its own class.
    dtype_classes = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"]
    return [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype, *dtype_classes]


def _unsafe_globals(path: Path, is_zip: bool = True) -> str:
    """The names a checkpoint would import when unpickled, for the refusal message."""
    try:
        if is_zip:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        else:
            names = _pickle_globals(path) or []
    except Exception:  # noqa: BLE001  (only improves a message about an unloadable file)
        return "objects beyond tensors"
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in _numpy_globals()}
    # The file's own classes first: they are what its author must re-save.
    names = sorted(
        (n for n in names if n not in allowed), key=lambda n: (n.startswith("torch."), n)
    )
    if not names:
        return "objects beyond tensors"
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return shown


def _pickle_globals(path: Path, most: int = 4) -> list[str] | None:
    """The names the pickles at the start of a non-zip file import, read without running them.

    A legacy ``torch.save`` file is a few pickles in a row followed by raw tensor bytes; the
    first ``most`` are scanned. Returns None when the file does not start with a whole pickle.
    """
    names: list[str] = []
    strings: list[str] = []
    with open(path, "rb") as handle:
        for count in range(most):
            try:
                for opcode, arg, _ in pickletools.genops(handle):
                    if isinstance(arg, str):
                        strings.append(arg)
                    if opcode.name == "GLOBAL" and isinstance(arg, str):
                        names.append(arg.replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.append(".".join(strings[-2:]))
            except Exception:  # noqa: BLE001  (any parse failure means: not a pickle here)
                return None if count == 0 else names
    return names


def _is_torchscript(path: Path) -> bool:
    """Whether a file is a TorchScript zip archive (it holds compiled code, not a pickle)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _state_dict_of(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` nesting and ``module.`` prefixes."""
    if isinstance(payload, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in payload and isinstance(payload[key], dict):
                payload = payload[key]
                break
    if isinstance(payload, nn.Module):
        payload = payload.state_dict()
    if not isinstance(payload, dict) or not all(
        isinstance(v, torch.Tensor) for v in payload.values()
    ):
        raise InputError(
            f"{path.name!r} holds no state_dict (found {type(payload).__name__}); "
            "save the model with torch.save(model.state_dict(), PATH)."
        )
    if payload and all(k.startswith("module.") for k in payload):
        payload = {k.removeprefix("module."): v for k, v in payload.items()}
    return payload


def _load_arch(arch: str | None) -> nn.Module:
    if arch is None or arch == "SmallCNN":
        return SmallCNN()
    module_name, _, class_name = arch.partition(":")
    if not class_name:
        raise InputError(f"--arch must look like 'package.module:ClassName'; received {arch!r}.")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"cannot import --arch {arch!r} ({exc}); check the name.") from None
    try:
        net = cls()
    except Exception as exc:
        raise InputError(
            f"cannot build --arch {arch!r} with no arguments ({type(exc).__name__}: "
            f"{str(exc)[:120]}); give the class defaults for every argument."
        ) from None
    if not isinstance(net, nn.Module):
        raise InputError(
            f"--arch {arch!r} builds a {type(net).__name__}, not a torch.nn.Module; "
            "name the network class."
        )
    return net


def _check_output(model: Classifier, path: Path) -> None:
    """One forward pass on a black digit: the network must return (1, classes) logits."""
    name = type(model.net).__name__
    try:
        with torch.no_grad():
            probe = torch.zeros(1, 1, 28, 28, device=next(model.parameters()).device)
            logits = model(probe)  # (1, classes)
        classes = model.num_classes
    except Exception as exc:
        raise InputError(
            f"{name} from {path.name!r} fails on a (1, 1, 28, 28) image ({type(exc).__name__}: "
            f"{str(exc)[:120]}); its forward must take MNIST-shaped images and end in a "
            "Linear layer giving one logit per class."
        ) from None
    if tuple(logits.shape) != (1, classes):
        raise InputError(
            f"{name} from {path.name!r} returns shape {tuple(logits.shape)} for one image, "
            f"expected (1, {classes}); its forward must return one row of logits per image."
        )


def _check_keys(net: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or misshaped:
        parts = [
            f"{name}: {', '.join(keys)}"
            for name, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("mis-shaped", misshaped),
            )
            if keys
        ]
        raise InputError(
            f"{path.name!r} does not fit {type(net).__name__} ({'; '.join(parts)}); "
            "pass the matching --arch or a SmallCNN checkpoint."
        )


def _torch_load(path: Path, device: torch.device, trust_checkpoint: bool) -> Any:
    # Tensors saved on a GPU are mapped to ``device``; a CPU-only machine loads them too.
    if trust_checkpoint:
        logger.warning("unpickling %s fully (--trust-checkpoint): it may run code", path)
        return torch.load(path, map_location=device, weights_only=False)
    with torch.serialization.safe_globals(_numpy_globals()):
        return torch.load(path, map_location=device, weights_only=True)


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse NaN or infinite weights: every score of such a model would be NaN."""
    for key, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise InputError(
                    f"{path.name!r} holds {bad} NaN or infinite value(s) in {key!r} "
                    f"{tuple(tensor.shape)}; every score would be NaN: pass a checkpoint "
                    "saved before training diverged."
                )


def load_model(
    path: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    arch: str | None = None,
    transform: Transform | None = None,
    trust_checkpoint: bool = False,
) -> Classifier:
    """Load a classifier in eval mode, with its transform, on a device.

    Args:
        path: a state_dict file; None loads the shipped SmallCNN.
        device: where the model lives.
        arch: ``package.module:ClassName`` of a user's network; None means SmallCNN.
        transform: the input transform; None reads ``STEM.json`` beside the checkpoint
            (``my_net.json`` beside ``my_net.pt``), else uses MNIST's.
        trust_checkpoint: allow full unpickling, which runs code from the file.

    Raises:
        InputError: the file is missing, unreadable, refused by ``weights_only``, holds NaN
            or infinite weights, or does not fit; or ``STEM.json`` beside it is unusable.
    """
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if path.is_dir():
        raise InputError(f"checkpoint {str(path)!r} is a folder; pass the checkpoint file.")
    if not path.is_file():
        raise InputError(f"checkpoint {str(path)!r} does not exist; check --model.")
    if _is_torchscript(path):
        raise InputError(
            f"{path.name!r} is a TorchScript archive, which edit-search does not load; save "
            "the network's weights with torch.save(model.state_dict(), PATH) and pass --arch."
        )
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and _pickle_globals(path) is None:
        raise InputError(
            f"cannot read checkpoint {path.name!r}: it is not a readable checkpoint (neither a "
            "torch.save archive nor a pickle); pass a file saved with "
            "torch.save(model.state_dict(), PATH)."
        )
    device = torch.device(device) if isinstance(device, str) else device

    try:
        # torch warns on stderr about pickle protocols it did not write; the outcome says enough.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            payload = _torch_load(path, device, trust_checkpoint)
    except pickle.UnpicklingError:
        raise InputError(
            f"{path.name!r} is not a plain state_dict and loading it would run code from the "
            f"file (it needs {_unsafe_globals(path, is_zip)}); re-save it with "
            "torch.save(model.state_dict(), PATH), or pass --trust-checkpoint if you trust "
            "its author."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, AttributeError, KeyError) as exc:
        raise InputError(
            f"cannot read checkpoint {path.name!r} ({type(exc).__name__}: {str(exc)[:160]}); "
            "pass a file saved with torch.save(model.state_dict(), PATH)."
        ) from None

    net = _load_arch(arch)
    state = _state_dict_of(payload, path)
    _check_keys(net, state, path)
    _check_finite(state, path)
    net.load_state_dict(state, strict=True)
    effective, _ = effective_transform(path, transform)
    model = Classifier(net, effective).to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    _check_output(model, path)
    logger.debug("loaded %s on %s", path, device)
    return model
