"""Integrity of a substrate-lm folder: the table's fingerprint and the sha256 of every weight file.

A sibling of ``modeling_substrate.py``, exported with it by ``save_pretrained`` and loaded with
``trust_remote_code=True``; it imports only torch, transformers, the standard library and its
sibling configuration file.

``save_pretrained`` records the sha256 of every weight file it wrote in ``config.json``
(``weights_sha256``) and the fingerprint of the table as saved (a trainable table's trained
fingerprint); ``from_pretrained`` refuses a folder whose weight files are missing or differ from
those hashes (bit flips, truncation) and a frozen table without a matching fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import torch

from .configuration_substrate import BINARY_SUBSTRATE_KINDS


def substrate_fingerprint(weight: torch.Tensor) -> str:
    """``"sha256:<hex>"`` of a substrate table: float32, little-endian, C-contiguous bytes."""
    t = weight.detach().to(device="cpu", dtype=torch.float32).contiguous()
    h = hashlib.sha256()
    # hash in row blocks so a 65,536 x 1024 table never needs a second full copy as bytes
    rows = max(1, (64 << 20) // max(1, t.shape[-1] * 4))
    flat = t.reshape(t.shape[0], -1) if t.dim() > 1 else t.reshape(1, -1)
    for start in range(0, flat.shape[0], rows):
        block = flat[start : start + rows].numpy()
        if block.dtype.byteorder == ">":  # pragma: no cover - big-endian hosts
            block = block.byteswap()
        h.update(block.tobytes())
    return "sha256:" + h.hexdigest()


# ----------------------------------------------------------------------------------------------
# integrity of saved folders: sha256 of every weight file, recorded in config.json

#: config.json key holding ``{file name: "sha256:<hex>"}`` of the weight files of the folder.
WEIGHTS_HASH_KEY = "weights_sha256"


def file_sha256(path) -> str:
    """``"sha256:<hex>"`` of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _is_weight_file(name: str) -> bool:
    return name.endswith((".safetensors", ".safetensors.index.json")) or (
        name.startswith("pytorch_model") and name.endswith((".bin", ".bin.index.json"))
    )


def _umask() -> int:
    """The process umask, read without changing it where Linux reports it (/proc), else set and reset."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def record_weight_hashes(directory, config=None) -> dict:
    """Hash the weight files in ``directory`` into its ``config.json`` (atomically); returns the hashes."""
    names = sorted(n for n in os.listdir(directory) if _is_weight_file(n) and os.path.isfile(os.path.join(directory, n)))
    hashes = {n: file_sha256(os.path.join(directory, n)) for n in names}
    mask = _umask()
    for n in names:  # the safetensors writer may create 0600; give weights the permissions open() would
        os.chmod(os.path.join(directory, n), 0o666 & ~mask)
    cfg_path = os.path.join(directory, "config.json")
    with open(cfg_path, encoding="utf-8") as fh:
        data = json.load(fh)
    data[WEIGHTS_HASH_KEY] = hashes
    fd, tmp = tempfile.mkstemp(prefix=".tmp-config.json.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp creates 0600; a config is as readable as any file
        os.replace(tmp, cfg_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if config is not None:
        setattr(config, WEIGHTS_HASH_KEY, hashes)
    return hashes


def _folder_file(name_or_path, filename: str, kwargs: dict):
    """Local path of ``filename`` of a model folder or (already downloaded) hub repo; None if absent."""
    sub = kwargs.get("subfolder") or ""
    if os.path.isdir(str(name_or_path)):
        p = os.path.join(str(name_or_path), sub, filename)
        return p if os.path.isfile(p) else None
    from transformers.utils import cached_file

    return cached_file(
        str(name_or_path), filename, subfolder=sub, revision=kwargs.get("revision"),
        cache_dir=kwargs.get("cache_dir"), local_files_only=kwargs.get("local_files_only", False),
        token=kwargs.get("token"), _raise_exceptions_for_missing_entries=False,
    )


def check_weight_files(name_or_path, kwargs: dict | None = None) -> dict:
    """Refuse a folder whose weight files do not match the sha256 recorded in its config.json.

    Raises:
        ValueError: one line: config.json missing or not JSON, no hashes recorded, a listed file
            missing, or a file whose sha256 differs (corrupt, truncated or altered).
    """
    kwargs = kwargs or {}
    if name_or_path is None:  # from_pretrained(None, config=..., state_dict=...): no files to check
        return {}
    where = str(name_or_path)
    cfg_path = _folder_file(name_or_path, "config.json", kwargs)
    if cfg_path is None:
        raise ValueError(f"{where} has no config.json; it is not a model folder (export or save_pretrained one)")
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{where}: config.json is unreadable or truncated ({type(exc).__name__}); re-export the model") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: config.json does not hold a JSON object; re-export the model")
    hashes = data.get(WEIGHTS_HASH_KEY)
    if not hashes:
        raise ValueError(
            f"{where}: config.json records no {WEIGHTS_HASH_KEY}, so its weights cannot be checked; "
            f"re-export the model with this version of substrate-lm"
        )
    if not isinstance(hashes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()):
        raise ValueError(f"{where}: {WEIGHTS_HASH_KEY} in config.json is malformed; re-export the model")
    if not any(n.endswith((".safetensors", ".bin")) for n in hashes):
        raise ValueError(f"{where}: {WEIGHTS_HASH_KEY} in config.json lists no weight file; re-export the model")
    for name, digest in sorted(hashes.items()):
        if not _is_weight_file(name) or name != os.path.basename(name) or name in (".", ".."):
            raise ValueError(f"{where}: {WEIGHTS_HASH_KEY} lists {name!r}, which is not a weight file name; re-export the model")
        path = _folder_file(name_or_path, name, kwargs)
        if path is None:
            raise ValueError(f"{where}: weight file {name} is missing; copy the whole folder or re-export the model")
        if file_sha256(path) != digest:
            raise ValueError(
                f"{where}: {name} does not match the sha256 recorded in config.json (corrupt, truncated "
                f"or altered); copy it again or re-export the model"
            )
    return hashes


# ----------------------------------------------------------------------------------------------
# the substrate table: its fingerprint checked on save and load


def _check_table(weight: torch.Tensor, recorded: str, kind: str, fix: str) -> None:
    """Raise ValueError when ``weight`` does not match ``recorded`` or a binary kind holds non-0/1."""
    actual = substrate_fingerprint(weight)
    if actual != recorded:
        raise ValueError(
            f"token_embeddings do not match the substrate fingerprint in config.json "
            f"(recorded {recorded[:23]}..., found {actual[:23]}...); the weights or the config were "
            f"altered: {fix}"
        )
    if kind in BINARY_SUBSTRATE_KINDS:
        if not bool(((weight == 0) | (weight == 1)).all()):
            raise ValueError(f"substrate kind {kind!r} must hold only 0/1 values")


def _record_fingerprint(config, embeddings) -> None:
    """Before saving: a trainable table's fingerprint is the table's now; a frozen one gets one if absent."""
    if embeddings is None or getattr(embeddings, "weight", None) is None or embeddings.weight.device.type == "meta":
        return
    if not config.substrate_frozen or not config.substrate_fingerprint:
        config.substrate_fingerprint = substrate_fingerprint(embeddings.weight)


def _check_loaded_table(model) -> None:
    """After loading: the fingerprint is required for a frozen table and checked for any table."""
    c = model.config
    if c.substrate_frozen:
        model.verify_substrate()
    elif c.substrate_fingerprint:  # a trainable table saved by save_pretrained records the trained one
        _check_table(model.token_embeddings.weight, c.substrate_fingerprint, c.substrate_kind, "re-export the model")


class CheckedWeightsMixin:
    """``save_pretrained`` / ``from_pretrained`` with the table's fingerprint and weight hashes.

    Shared by the plain and the composed model (listed before ``PreTrainedModel`` in their bases),
    which hold the table in ``token_embeddings``. The class attributes word the refusals: what the
    table is, and how to repair a missing fingerprint and a table that does not match its own.
    """

    _table_name = "the frozen token_embeddings table"
    _fingerprint_fix = "install the substrate with set_substrate or re-export the model"
    _table_fix = "re-export the model"

    def verify_substrate(self) -> None:
        """Raise ValueError when a frozen table has no fingerprint or does not match it.

        A trainable table is meant to drift during training, so it is not checked here; its
        fingerprint is re-recorded by ``save_pretrained`` and checked by ``from_pretrained``.
        """
        if not self.config.substrate_frozen:
            return
        recorded = self.config.substrate_fingerprint
        if not recorded:
            raise ValueError(
                f"config.json records no substrate_fingerprint for {self._table_name}, so it cannot be "
                f"verified; {self._fingerprint_fix}"
            )
        _check_table(self.token_embeddings.weight, recorded, self.config.substrate_kind, self._table_fix)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``, then the table's fingerprint and weight hashes recorded.

        A trainable table's fingerprint is that of the table as saved (the trained one); a frozen
        table gets one if none was recorded. ``config.json`` then records the sha256 of every
        weight file written, which ``from_pretrained`` checks.
        """
        if kwargs.get("push_to_hub"):
            raise ValueError("push_to_hub would upload before the weight hashes are recorded; save, then upload the folder")
        _record_fingerprint(self.config, self.token_embeddings)
        self.verify_substrate()  # never write a folder that loading would refuse
        out = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            record_weight_hashes(save_directory, self.config)
        return out

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """``PreTrainedModel.from_pretrained`` after checking the weight files against their sha256.

        Raises:
            ValueError: one line: a weight file missing or altered, no fingerprint for a frozen
                table, or a table that does not match its fingerprint.
        """
        check_weight_files(pretrained_model_name_or_path, kwargs)
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True
        # loading replaces parameters, which resets requires_grad: freeze the substrate again
        model.token_embeddings.weight.requires_grad_(not model.config.substrate_frozen)
        _check_loaded_table(model)
        return loaded


__all__ = ["CheckedWeightsMixin", "WEIGHTS_HASH_KEY", "check_weight_files", "file_sha256", "record_weight_hashes",
           "substrate_fingerprint"]
