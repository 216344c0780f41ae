"""``monai-cilmp knowledge``: build knowledge banks and attribute prompts, and show what a bank holds.

Sub-commands:

- ``extract``: descriptions (curated, from a file, or written by the LLM) -> LLM hidden states -> a bank file.
- ``show``: classes, lengths, hidden size and provenance of a bank file.
- ``attributes``: attribute prompts from a masked LM (and a VQA model over images) -> a JSON file that also works
  as ``extract --descriptions``.

With no ``--model``, ``extract`` uses the embedded all-MiniLM-L6-v2 (offline, hash-checked); a medical LLM is the
recommended choice when one can be downloaded (``docs/knowledge.md``).
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Mapping
from typing import Any

from monai_cilmp.cli import plain_text

__all__ = ["add_parser"]

_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _add_model_options(parser: argparse.ArgumentParser, default_dtype: str) -> None:
    parser.add_argument("--device", default="auto", help="torch device, e.g. cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument(
        "--dtype",
        choices=_PRECISIONS,
        default=default_dtype,
        help=f"weights precision; auto = bf16 on a GPU, fp32 on CPU (default: {default_dtype})",
    )
    parser.add_argument("--revision", help="Hugging Face Hub revision (branch, tag or commit)")
    parser.add_argument("--offline", action="store_true", help="never download; use local folders and the HF cache")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the Hub (only for models you trust)"
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "knowledge",
        help="build LLM knowledge banks and attribute prompts, show banks",
        description=plain_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="knowledge_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: parser.print_help() or 0)

    extract = commands.add_parser(
        "extract",
        help="extract a knowledge bank (LLM hidden states of class descriptions)",
        description="Extract a knowledge bank: the hidden states of a language model for each class's description.",
    )
    source = extract.add_argument_group("classes and descriptions (--dataset and/or --classes, or --descriptions)")
    source.add_argument("--dataset", help="a registered dataset: its classes and curated descriptions")
    source.add_argument("--classes", nargs="+", metavar="NAME", help="class names (with --dataset: a subset of it)")
    source.add_argument("--descriptions", metavar="FILE.json", help="JSON file mapping class names to descriptions")
    extract.add_argument("--out", required=True, metavar="FILE", help="the bank to write (.safetensors)")
    extract.add_argument(
        "--model", help="Hugging Face model id or local folder (default: the embedded all-MiniLM-L6-v2, offline)"
    )
    extract.add_argument(
        "--mode", choices=("tokens", "layers"), default="tokens", help="knowledge reading (default tokens)"
    )
    extract.add_argument(
        "--layer", type=int, default=-1, help="hidden-state index for tokens mode: 0 embeddings, -1 last (default)"
    )
    extract.add_argument("--generate", action="store_true", help="let the LLM write each description first")
    extract.add_argument("--chat-template", action="store_true", help="wrap texts in the tokenizer's chat template")
    extract.add_argument("--modality", help="modality words for generated/generic descriptions (default: dataset's)")
    extract.add_argument("--max-length", type=int, metavar="N", help="cap every L_c at N tokens (tokens mode)")
    extract.add_argument("--max-new-tokens", type=int, default=64, help="length limit of generated descriptions")
    extract.add_argument("--n-ctx", type=int, default=4, help="CILMP context tokens, for the CLIP context cap")
    extract.add_argument("--batch-size", type=int, default=8, help="texts per forward pass (default 8)")
    _add_model_options(extract, "auto")
    extract.set_defaults(func=_extract)

    show = commands.add_parser("show", help="show a knowledge bank's classes, lengths, hidden size and provenance")
    show.add_argument("file", help="a bank written by `knowledge extract`")
    show.add_argument("--tokens", action="store_true", help="also list each class's token strings")
    show.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    show.set_defaults(func=_show)

    attributes = commands.add_parser(
        "attributes",
        help="attribute prompts (colour, shape, location, texture) from a masked LM and optionally a VQA model",
        description="Attribute prompts after Qin et al. (ICLR 2023): masked-LM fillers, VQA answers per image, or the "
        "hybrid (colour and shape from VQA, location and texture from the masked LM). Images: sub-folders of "
        "--images named after classes hold that class's images; images directly in --images count for every class.",
    )
    attributes.add_argument("--classes", nargs="+", metavar="NAME", help="class names (with --dataset: a subset)")
    attributes.add_argument("--dataset", help="a registered dataset: its classes (and synonyms for --synonyms)")
    attributes.add_argument("--mlm", required=True, help="fill-mask model id or folder (e.g. a PubMedBERT)")
    attributes.add_argument(
        "--vqa", help="visual-question-answering model id or folder (e.g. Salesforce/blip-vqa-base)"
    )
    attributes.add_argument("--images", metavar="DIR", help="images for the VQA model")
    attributes.add_argument("--out", required=True, metavar="FILE.json", help="the JSON file to write")
    attributes.add_argument("--top-k", type=int, default=3, help="prompts per class (default 3)")
    attributes.add_argument("--synonyms", action="store_true", help="use each class's first curated synonym as noun")
    attributes.add_argument("--cache", metavar="DIR", help="VQA answer cache (default ~/.cache/monai_cilmp/vqa)")
    attributes.add_argument("--no-cache", action="store_true", help="do not cache VQA answers")
    _add_model_options(attributes, "fp32")
    attributes.set_defaults(func=_attributes)


# ----- extract ---------------------------------------------------------------------------------------------------


def _descriptions(args: argparse.Namespace) -> tuple[list[str], Mapping[str, Any] | None]:
    """The class names and their descriptions (``None`` when the model is to write them)."""
    # lazy imports here and below: `--help` and argument errors load neither torch nor MONAI
    from monai_cilmp.knowledge import describe, load_description_file

    if args.descriptions and (args.dataset or args.classes):
        raise ValueError("Give --descriptions alone, or --dataset and/or --classes, not both.")
    if not (args.descriptions or args.dataset or args.classes):
        raise ValueError("Say which classes: --dataset NAME, --classes NAME [NAME ...] or --descriptions FILE.json.")
    if args.descriptions:
        if args.generate:
            raise ValueError("--generate writes the descriptions itself: use it with --dataset or --classes.")
        descriptions = load_description_file(args.descriptions)
    else:
        descriptions = describe(args.classes, args.dataset, args.modality)
    return list(descriptions), None if args.generate else descriptions


def _extract(args: argparse.Namespace) -> int:
    from monai_cilmp.data.registry import get_dataset
    from monai_cilmp.knowledge import EMBEDDED_MODEL_ID, KnowledgeExtractor
    from monai_cilmp.knowledge.loading import precision_name, resolve_device, resolve_dtype

    if args.mode == "layers" and args.layer != -1:
        raise ValueError("--layer applies to --mode tokens only; --mode layers takes every block's output.")
    names, descriptions = _descriptions(args)
    spec = get_dataset(args.dataset) if args.dataset else None
    model = args.model or f"{EMBEDDED_MODEL_ID} (embedded offline default; a medical LLM is recommended)"
    layer = "" if args.mode == "layers" else f", layer {args.layer}"
    device = resolve_device(args.device)
    dtype = precision_name(resolve_dtype(args.dtype, device))
    print(
        f"Extracting knowledge for {len(names)} classes with {model}: mode {args.mode}{layer}, device {device}, "
        f"dtype {dtype}{', chat template' if args.chat_template else ''}."
    )
    if descriptions is not None:
        width = max(len(n) for n in names)
        for name, d in descriptions.items():
            note = f" ({d.note})" if d.note else ""
            print(f"  {name:<{width}}  {d.source}{note}")
        generic = [n for n, d in descriptions.items() if d.source == "generic"]
        if generic:
            print(
                f"  {len(generic)} of {len(names)} classes use a generic description built from the class name; "
                "give --dataset or --descriptions FILE.json for better knowledge."
            )
    else:
        print(f"  the model writes each description first (greedy, at most {args.max_new_tokens} new tokens).")
    print(f"Loading {args.model or EMBEDDED_MODEL_ID} ...", flush=True)
    extractor = KnowledgeExtractor.from_pretrained(
        args.model,
        generate=args.generate,
        device=device,
        dtype=dtype,
        revision=args.revision,
        trust_remote_code=args.trust_remote_code,
        offline=args.offline,
    )
    metadata: dict[str, Any] = {"dataset": spec.name if spec else None}
    if args.generate:
        descriptions, metadata["generation"] = extractor.generate_descriptions(
            names,
            args.modality or (spec.modality if spec else None),
            chat_template=args.chat_template,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            progress=True,
        )
        for name, d in descriptions.items():
            print(f"  {name}: {d.text}")
    bank = extractor.extract(
        descriptions,
        mode=args.mode,
        layer=args.layer,
        chat_template=args.chat_template,
        n_ctx=args.n_ctx,
        max_length=args.max_length,
        batch_size=args.batch_size,
        progress=True,
        metadata=metadata,
    )
    path = bank.save(args.out)
    truncated = {n: k for n, k in bank.metadata["truncated"].items() if k}
    if truncated:
        print(f"  dropped the last tokens of long descriptions to fit the CLIP context: {truncated}")
    print(f"Wrote {path}: {len(bank)} classes, D = {bank.dim}, lengths {bank.lengths}.")
    return 0


# ----- show ------------------------------------------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    from monai_cilmp.knowledge import KnowledgeBank

    bank = KnowledgeBank.load(args.file)
    meta = bank.metadata
    if args.json:
        print(json.dumps(meta, indent=2, ensure_ascii=False))
        return 0
    for line in _describe_bank(bank, args.tokens):
        print(line)
    return 0


def _describe_bank(bank: Any, with_tokens: bool) -> list[str]:
    meta = bank.metadata
    mode = meta.get("mode", "?")
    if mode == "tokens" and meta.get("layer") is not None:
        states = meta.get("num_hidden_states")
        last = " (last)" if states and meta["layer"] == states - 1 else ""
        reading = f"tokens at layer {meta['layer']}{last} of 0..{states - 1 if states else '?'}"
    else:
        reading = f"{mode}: {meta.get('layers') or ''}".rstrip(": ")
    lines = [
        f"Knowledge bank {meta.get('path', '')}",
        f"  classes: {len(bank)}    hidden size D = {bank.dim}    mode: {reading}",
    ]
    model = meta.get("source_model", "unknown")
    details = [meta.get("model_class"), meta.get("embedded_package") and f"embedded {meta['embedded_package']}"]
    lines.append(f"  model: {model}" + (f" ({', '.join(d for d in details if d)})" if any(details) else ""))
    if meta.get("model_path"):
        lines.append(f"  model path: {meta['model_path']}")
    if meta.get("revision"):
        lines.append(f"  revision: {meta['revision']}")
    for name, digest in (meta.get("weights_sha256") or {}).items():
        lines.append(f"  weights: {name} sha256 {digest}")
    setup = [f"device {meta.get('device', '?')}", f"dtype {meta.get('dtype', '?')}"]
    setup.append("chat template" if meta.get("chat_template") else "no chat template")
    if meta.get("dataset"):
        setup.append(f"dataset {meta['dataset']}")
    lines.append("  extraction: " + ", ".join(setup))
    generation = meta.get("generation")
    if generation:
        lines.append(
            f"  descriptions generated: greedy, max_new_tokens {generation.get('max_new_tokens')}, "
            f"prompt {generation.get('prompt_template')!r}"
        )
    versions = meta.get("library_versions") or {}
    if versions:
        lines.append("  libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    caps = (meta.get("context") or {}).get("caps", {})
    sources = meta.get("description_sources", {})
    truncated = meta.get("truncated", {})
    width = max(5, *(len(n) for n in bank.class_names))
    lines.append(f"  {'class':<{width}}  {'L_c':>4}  {'cap':>4}  source")
    for name, length in zip(bank.class_names, bank.lengths):
        cut = f", {truncated[name]} tokens cut" if truncated.get(name) else ""
        cap = caps.get(name, "")
        lines.append(f"  {name:<{width}}  {length:>4}  {cap:>4}  {sources.get(name, '')}{cut}")
    texts = meta.get("texts") or {}
    tokens = meta.get("tokens") or {}
    for name in bank.class_names:
        if name in texts:
            lines.append(textwrap.fill(f"{name}: {texts[name]}", 118, initial_indent="  ", subsequent_indent="      "))
        if with_tokens and name in tokens:
            lines.append(
                textwrap.fill(" ".join(tokens[name]), 118, initial_indent="      [", subsequent_indent="       ") + "]"
            )
    return lines


# ----- attributes ------------------------------------------------------------------------------------------------


def _attributes(args: argparse.Namespace) -> int:
    from monai_cilmp.knowledge import (
        MaskedLMAttributes,
        VQAAttributes,
        attribute_prompts,
        collect_images,
        describe,
        save_attribute_prompts,
    )

    if not (args.classes or args.dataset):
        raise ValueError("Say which classes: --classes NAME [NAME ...] or --dataset NAME.")
    if bool(args.vqa) != bool(args.images):
        raise ValueError("--vqa and --images go together: the VQA model answers questions about those images.")
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}.")
    descriptions = describe(args.classes, args.dataset)
    names = list(descriptions)
    nouns = {}
    if args.synonyms:
        nouns = {n: d.synonyms[0] for n, d in descriptions.items() if d.synonyms}
        without = [n for n in names if n not in nouns]
        if without:
            print(f"  no curated synonym for {without}: their class name is used.")
    images = collect_images(args.images, names) if args.images else None
    how = (
        f"hybrid with VQA {args.vqa} on {sum(len(v) for v in images.values())} class images" if images else "masked LM"
    )
    print(f"Attribute prompts for {len(names)} classes ({how}), masked LM {args.mlm}, top-{args.top_k}.", flush=True)
    options = {"device": args.device, "dtype": args.dtype, "revision": args.revision, "offline": args.offline}
    mlm = MaskedLMAttributes.from_pretrained(args.mlm, trust_remote_code=args.trust_remote_code, **options)
    vqa = None
    if args.vqa:
        cache: Any = False if args.no_cache else args.cache
        vqa = VQAAttributes.from_pretrained(
            args.vqa, trust_remote_code=args.trust_remote_code, cache_dir=cache, **options
        )
    result = attribute_prompts(names, mlm, vqa, images, top_k=args.top_k, nouns=nouns, progress=True)
    path = save_attribute_prompts(result, args.out)
    for name, entry in result["classes"].items():
        print(f"  {name}: {entry['description']}")
    print(
        f"Wrote {path}: {len(names)} classes, {args.top_k} prompts each; it also works as "
        "`knowledge extract --descriptions`."
    )
    return 0
