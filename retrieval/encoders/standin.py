"""Offline stand-in for MedSigLIP: a tiny random SigLIP of the same classes, built from config and saved."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import NamedTuple

from retrieval.encoders.medsiglip import STANDIN_MARKER, TEXT_MAX_LENGTH


class TextTower(NamedTuple):
    """The sizes of a stand-in's text tower."""

    width: int
    layers: int
    heads: int
    intermediate: int


TINY_TEXT = TextTower(width=32, layers=1, heads=2, intermediate=64)  # the tests' text tower
FULL_TEXT = TextTower(width=1152, layers=27, heads=16, intermediate=4304)  # MedSigLIP's (SigLIP so400m's) text tower

_CORPUS = [
    "chest x-ray showing right lower lobe consolidation",
    "normal chest radiograph",
    "ct of the abdomen with contrast",
    "mri brain t2 flair hyperintensity",
    "pleural effusion on the left side",
    "fracture of the distal radius",
    "ultrasound of the liver",
    "mammogram with calcifications",
    "pneumothorax",
    "cardiomegaly",
    "pulmonary nodule",
]


def build_standin_model(
    out_dir: Path,
    *,
    width: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    image_size: int = 448,
    patch_size: int = 14,
    seed: int = 0,
    text: TextTower | None = None,
) -> Path:
    """Build and save a random SigLIP (model, processor, tokenizer) that loads with the Auto classes. The text
    tower is the tiny test one unless `text` sizes it (bench/text_encoder.py: MedSigLIP's full-size text tower)."""
    import sentencepiece as spm
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor, SiglipTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 20),
        model_writer=buf,
        vocab_size=128,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    spm_path = out_dir / "_spiece.model"
    spm_path.write_bytes(buf.getvalue())
    try:
        tokenizer = SiglipTokenizer(vocab_file=str(spm_path), model_max_length=TEXT_MAX_LENGTH)
    finally:
        spm_path.unlink(missing_ok=True)
    tower = text or TINY_TEXT
    config = SiglipConfig(
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": tower.width,
            "intermediate_size": tower.intermediate,
            "num_hidden_layers": tower.layers,
            "num_attention_heads": tower.heads,
            "max_position_embeddings": TEXT_MAX_LENGTH,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.eos_token_id,
            "projection_size": width,
        },
        vision_config={
            "hidden_size": width,
            "intermediate_size": intermediate or width * 2,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "image_size": image_size,
            "patch_size": patch_size,
        },
    )
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    processor = SiglipProcessor(
        image_processor=SiglipImageProcessor(
            size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ),
        tokenizer=tokenizer,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / STANDIN_MARKER).write_text(
        json.dumps(
            {
                "standin": True,
                "width": width,
                "layers": layers,
                "seed": seed,
                "note": "random weights: similarities are meaningless; for testing the plumbing only",
            }
        )
    )
    return out_dir
