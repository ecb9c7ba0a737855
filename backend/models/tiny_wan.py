"""A tiny random Wan2.1-VACE in the real diffusers layout (about 0.5 MB).

Sizes as diffusers' own WanVACE tests: a 3-channel-base VAE with 16 latent channels, a
transformer of 2 heads of 12 with VACE blocks at layers 0 and 2, a umT5 encoder with d_model
32. The scheduler is the real model's (UniPC, flow prediction). The tokenizer is a character
unigram built here: the real umT5 vocabulary cannot be shipped or fetched.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanVACEPipeline,
    WanVACETransformer3DModel,
)
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import T5TokenizerFast, UMT5Config, UMT5EncoderModel

from .sidecars import SIDECAR_NAME
from .tiny_common import SEEDS, fresh, randomize, write_sidecar

# Where make_tiny_models(video_models=True) writes it, in the recommended folder layout.
WAN_VACE_FOLDER = "wan/tiny-wan2.1-vace"
# The tiny Wan's working size (its framesmith.json): the real 1.3B's 832×480 rule, scaled down.
WAN_TINY_WORKING_SIZE = (32, 32)
TEXT_DIM = 32
MAX_TOKENS = 512  # the real pipeline's max_sequence_length
_SPECIALS = ("<pad>", "</s>", "<unk>")


def build_tiny_umt5_tokenizer() -> T5TokenizerFast:
    """Printable ASCII characters and the word marker as a unigram vocabulary, T5's specials
    first (pad 0, eos 1, unk 2) and an end-of-sequence token after every text, as umT5."""
    pieces = [*_SPECIALS, "\u2581", *(chr(c) for c in range(33, 127))]
    vocab = [(p, 0.0 if p in _SPECIALS else -1.0) for p in pieces]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=MAX_TOKENS,
    )


def build_tiny_wan_vace() -> WanVACEPipeline:
    tokenizer = build_tiny_umt5_tokenizer()
    text_config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
    )
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=3,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        vace_layers=[0, 2],
        vace_in_channels=96,
    )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=1000,
        flow_shift=3.0,
    )
    return WanVACEPipeline(
        tokenizer=tokenizer,
        text_encoder=randomize(UMT5EncoderModel(text_config), SEEDS["wan_text_encoder"]),
        vae=randomize(vae, SEEDS["wan_vae"]),
        scheduler=scheduler,
        transformer=randomize(transformer, SEEDS["wan_transformer"]),
    )


def make_tiny_wan_vace(dest: Path) -> Path:
    """Write the tiny Wan2.1-VACE folder under `dest`; returns the folder."""
    folder = fresh(Path(dest) / WAN_VACE_FOLDER)
    build_tiny_wan_vace().save_pretrained(folder, safe_serialization=True)
    width, height = WAN_TINY_WORKING_SIZE
    write_sidecar(folder / SIDECAR_NAME, {"working_size": [width, height]})
    return folder
