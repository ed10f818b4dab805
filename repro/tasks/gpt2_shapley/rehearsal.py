"""What `repro rehearse` needs from gpt2-shapley: the paper corpus's hub repositories as a local
hub serves them (a Pile shard in Pile format, the tokenizer), and the figures its prediction of the
full paper run is made from."""

from __future__ import annotations

import json
from typing import Any

from repro.atomic import write_bytes
from repro.data import corpus as corpus_mod
from repro.tasks.gpt2_shapley.settings import GPT2Shapley

STANDIN_DOCUMENTS = 4000  # Pile-CC records of about 1 KB: enough windows for a rehearsal's batches and splits


def standin_repositories(cfg: GPT2Shapley, hub_root) -> list[str]:
    """What the paper corpus's fetch reads from the hub, as a local hub serves it to a rehearsal:
    the Pile's dataset repository with one shard of Pile-format records (Pile-CC and other
    subsets, .jsonl.zst, the shard the manifest names) and the GPT-2 tokenizer's repository with
    the kit's byte-level GPT-2 tokenizer."""
    import zstandard

    from repro.byte_tokenizer import byte_level_tokenizer
    from repro.data import manifest as mf

    manifest, _ = mf.load_dataset_manifest(cfg.data.manifest)
    source = next(s for s in manifest["sources"] if s["type"] == "hf-dataset")
    texts = corpus_mod.synthetic_documents(0, 4 * STANDIN_DOCUMENTS)
    records = []
    for i in range(STANDIN_DOCUMENTS):
        records.append({"text": " ".join(texts[4 * i:4 * i + 4]), "meta": {"pile_set_name": source["config"]["subset"]}})
        if i % 4 == 0:
            records.append({"text": texts[4 * i], "meta": {"pile_set_name": "Github"}})  # filtered out by the reader
    shard = hub_root / "datasets" / source["url"] / source["config"]["data_files"]
    shard.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    write_bytes(shard, zstandard.ZstdCompressor().compress(body))
    tokenizer = hub_root / "models" / source["config"]["tokenizer"]
    byte_level_tokenizer("gpt2").save_pretrained(tokenizer)
    return [f"corpus: {source['url']}@{source['revision']} from a local hub: one shard {source['config']['data_files']} of "
            f"{len(records)} Pile-format records ({STANDIN_DOCUMENTS} {source['config']['subset']}, about 1 KB each), "
            "read by the real Pile-CC reader (datasets, streaming)",
            f"tokenizer: the kit's byte-level GPT-2 tokenizer saved as {source['config']['tokenizer']} (257 tokens, not GPT-2's BPE)",
            "weights: GPT-2 small from its config, random init (as the paper run)"]


def figures(cfg: GPT2Shapley, results: dict[str, Any]) -> dict[str, Any]:
    entry = next(iter(results["seeds"].values()))
    score, base = entry["score"], entry["replay"]["baseline"]
    steps = cfg.train.steps
    parts = [{"what": f"scoring run, {steps} steps", "steps": steps, "step_seconds": score["step_seconds_mean"]},
             {"what": f"baseline replay, {steps} steps", "steps": steps, "step_seconds": base["step_seconds_mean"]},
             {"what": f"filtered replay, at most {steps} steps", "steps": steps, "step_seconds": base["step_seconds_mean"]}]
    return {"parameters": score["parameters"], "step_seconds": score["step_seconds_mean"],
            "parts": parts}
