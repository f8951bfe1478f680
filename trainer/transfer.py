"""`python -m trainer export | publish`: adapters out of one deployment and into another (train
on a big GPU box, ship the file to the bot).

export writes a server's adapter version (default: its active one) exactly as the registry
holds it: one safetensors file with its LoraConfig and base model inside
(bot/core/adapter_io.py).

publish brings such a file in through the checks every adapter passes before it serves
(bot/core/adapter_sanity.py: the static checks, then the probe on the base model) and, where
the server has rated data, through the gate a training cycle runs (its numbers against the base
model and the adapter in service, on the server's validation side); then it publishes as a
cycle does (save, report, compare-and-set of the active pointer). A refused file changes
nothing: the checks and the gate come before anything is written.

`service_refusal` is the same checks for a training cycle's candidate, just before it
publishes.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from bot.core.adapter_io import ParsedAdapter, attach_adapter, parse_adapter
from bot.core.adapter_sanity import probe_model
from bot.core.generation import BASE_VERSION, AdapterLoadError
from bot.core.store import AdapterRecord, Store, StoreError, TenantStore

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 512 * 1024 * 1024  # the largest value Redis stores


class TransferRefused(Exception):
    """An export or publish that cannot be done; the message is one line for the operator."""


@dataclass(frozen=True)
class Examined:
    """What the checks and the gate found for a file that passed them."""

    parsed: ParsedAdapter
    gate: dict  # the gate's numbers (empty without rated data)
    reason: str  # why it may serve, in words


def _load_base(settings):
    """The base model (eval mode, on the settings' device) and its tokenizer, quietly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a command's output is its result line
    # peft asks transformers a deprecated question on every attach; no operator can act on it.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated",
                            category=FutureWarning)
    device = settings.resolved_device()
    model = AutoModelForCausalLM.from_pretrained(settings.model_name).to(device).eval()
    return model, AutoTokenizer.from_pretrained(settings.model_name)


def check_for_service(settings, blob: bytes) -> tuple[ParsedAdapter, tuple]:
    """Every check an adapter passes before it serves, on MODEL_NAME: the adapter and the
    (base model, tokenizer) it was probed on. Raises AdapterRefused; the static checks come
    first, before a model is loaded. Blocking."""
    parsed = parse_adapter(blob, settings.model_name)
    base, tokenizer = _load_base(settings)
    probe_model(attach_adapter(copy.deepcopy(base), parsed, "probed").eval(), tokenizer)
    return parsed, (base, tokenizer)


def service_refusal(settings, blob: bytes) -> str | None:
    """Why a cycle's candidate may not serve (the failed check, one line), or None. Blocking."""
    try:
        check_for_service(settings, blob)
    except AdapterLoadError as refused:
        log.error("candidate refused by the adapter checks: %s", refused)
        return str(refused)
    return None


def _examine(settings, blob: bytes, rated: list, exam, parent: str,
             active_blob: bytes | None) -> Examined:
    """The checks, then the gate where the server has a validation side (`rated`: the
    endorsed view, `exam`: its ExamSource, as a cycle sees them). Blocking."""
    from trainer.candidate import measure_candidate, server_exam
    from trainer.dataset import build_dataset
    from trainer.gate import GateRules, gate
    from trainer.quality import GateConfig

    parsed, (base, tokenizer) = check_for_service(settings, blob)
    data = build_dataset(rated, tokenizer, max_tokens=settings.max_train_tokens,
                         max_examples=settings.max_train_examples,
                         val_fraction=settings.val_fraction, exam_ids=exam.pinned_ids)
    if not data.validation:
        return Examined(parsed, {}, "the adapter checks passed; no rated data to gate on")
    config = GateConfig.from_settings(settings)
    quality = measure_candidate(config, base, tokenizer,
                                server_exam(config, rated, exam, data, parent), data, parent,
                                active_blob, blob, [])
    decision = gate(quality, GateRules.from_settings(settings))
    if not decision.promote:
        raise TransferRefused(f"refused by the gate: {decision.reason}")
    return Examined(parsed, {**quality.numbers(), "failed": None}, decision.reason)


async def publish_file(settings, store: TenantStore, path: str | Path) -> AdapterRecord:
    """Check the adapter file at `path` and make it the server's active adapter; raises
    TransferRefused (nothing changed) when it may not serve."""
    from trainer.publish import PublishRefused, publish

    blob = _read(path)
    parent = await store.registry.active()
    active_blob = None if parent == BASE_VERSION else await _readable(store, parent)
    from trainer.cycle import endorsed_view

    verdict, exam = await endorsed_view(settings, store)
    try:
        examined = await asyncio.to_thread(_examine, settings, blob, verdict.rated, exam, parent,
                                           active_blob)
    except AdapterLoadError as refused:
        raise TransferRefused(f"refused: {refused}") from None
    config = examined.parsed.config
    record = AdapterRecord(
        parent=parent, base_model=settings.model_name,
        hyperparameters={"lora_rank": config.r, "lora_alpha": config.lora_alpha,
                         "lora_targets": sorted(config.target_modules)},
        metrics={"gate": examined.gate}, data={"published_from": Path(path).name})
    report = {"outcome": "published", "reason": examined.reason, "gate": examined.gate,
              "source": Path(path).name, "parent": parent}
    try:
        return await publish(store.registry, record, blob, report, None)
    except PublishRefused as refused:
        raise TransferRefused(str(refused)) from None


async def _readable(store: TenantStore, version: str) -> bytes | None:
    """The bytes of the adapter in service, None when unreadable (the gate then compares with
    the base model, as a cycle does)."""
    try:
        return await store.registry.blob(version)
    except StoreError as error:
        log.warning("active adapter %s is unreadable (%s); gating against the base model",
                    version, error)
        return None


def _read(path: str | Path) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise TransferRefused(f"refused: {path} holds {size} bytes, more than the registry "
                                  f"stores ({MAX_FILE_BYTES})")
        return Path(path).read_bytes()
    except OSError as error:
        raise TransferRefused(f"cannot read {path}: {error.strerror or error}") from None


async def export_file(store: TenantStore, version: str | None, path: str | Path) -> AdapterRecord:
    """Write the server's adapter `version` (None: its active one) to `path`; raises
    TransferRefused when there is none to write."""
    version = version or await store.registry.active()
    if version == BASE_VERSION:
        raise TransferRefused(f"server {store.tenant} has no adapter of its own to export")
    try:
        record = await store.registry.record(version)
        if record.tenant != store.tenant:
            raise TransferRefused(f"adapter {version} belongs to another server")
        blob = await store.registry.blob(version)
    except StoreError as error:
        raise TransferRefused(f"cannot export {version}: {error}") from None
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    try:  # never a half-written file under the name asked for
        partial.write_bytes(blob)
        partial.replace(target)
    except OSError as error:
        raise TransferRefused(f"cannot write {path}: {error.strerror or error}") from None
    return record


async def run_command(settings, args, guild: int) -> int:
    """`export` or `publish` for server `guild`: one result line; a refusal is one line on
    stderr and exit status 1."""
    store = Store.from_settings(settings)
    try:
        await store.ping()
        own = store.tenant(guild)
        if args.command == "export":
            record = await export_file(own, args.version, args.file)
            print(f"wrote {record.version} of server {guild} to {args.file} "
                  f"({record.size_bytes} bytes, sha256 {record.sha256[:12]}…, base model "
                  f"{record.base_model})")
        else:
            record = await publish_file(settings, own, args.file)
            print(f"published {args.file} as {record.version} of server {guild} "
                  f"(was {record.parent})")
    except TransferRefused as refused:
        print(f"{args.command}: {refused}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    return 0
