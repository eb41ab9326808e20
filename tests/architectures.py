"""Tiny random-init models of the Hugging Face architectures issue 21 names, each with the task head a user
would use (nothing downloaded). Sizes are the smallest that still exercise each architecture's mechanism:
two blocks (more where blocks differ: alternating attention layers, Swin's stages), width 32.
"""

from __future__ import annotations

import torch
import transformers as tf

W = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64)
LM = dict(vocab_size=128, num_hidden_layers=2, max_position_embeddings=128, **W)
ENC = dict(vocab_size=128, num_hidden_layers=2, max_position_embeddings=128, **W)
VIT = dict(image_size=16, patch_size=4, num_hidden_layers=2, **W)
ROPE = dict(num_key_value_heads=2, head_dim=8)


def _t5(**extra):
    return tf.T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                       num_heads=4, relative_attention_num_buckets=8, decoder_start_token_id=0, **extra)


def _audio(cls_config, **extra):
    return cls_config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                      conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                      num_conv_pos_embedding_groups=4, num_feat_extract_layers=2, mask_time_prob=0.0, **extra)


# name -> (model class, config); the model's own class decides its head.
ARCHITECTURES = {
    "bert": (tf.BertForSequenceClassification, lambda: tf.BertConfig(**ENC)),
    "roberta": (tf.RobertaForSequenceClassification, lambda: tf.RobertaConfig(**ENC, pad_token_id=1)),
    "distilbert": (tf.DistilBertForSequenceClassification,
                   lambda: tf.DistilBertConfig(vocab_size=128, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                               max_position_embeddings=128)),
    "electra": (tf.ElectraForSequenceClassification, lambda: tf.ElectraConfig(embedding_size=16, **ENC)),
    "xlm-roberta": (tf.XLMRobertaForSequenceClassification, lambda: tf.XLMRobertaConfig(**ENC, pad_token_id=1)),
    "mobilebert": (tf.MobileBertForSequenceClassification,
                   lambda: tf.MobileBertConfig(vocab_size=128, hidden_size=32, embedding_size=16,
                                               num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
                                               intra_bottleneck_size=16, true_hidden_size=16,
                                               num_feedforward_networks=1, max_position_embeddings=128)),
    "gpt2": (tf.GPT2LMHeadModel, lambda: tf.GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4,
                                                        n_inner=64, n_positions=128)),
    "gpt-neo": (tf.GPTNeoForCausalLM,
                lambda: tf.GPTNeoConfig(vocab_size=128, hidden_size=32, num_layers=2, num_heads=4,
                                        attention_types=[[["global", "local"], 1]], window_size=16,
                                        intermediate_size=64, max_position_embeddings=128)),
    "gpt-neox": (tf.GPTNeoXForCausalLM, lambda: tf.GPTNeoXConfig(**LM)),
    "opt": (tf.OPTForCausalLM, lambda: tf.OPTConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32,
                                                    max_position_embeddings=128)),
    "bloom": (tf.BloomForCausalLM, lambda: tf.BloomConfig(vocab_size=128, hidden_size=32, n_layer=2, n_head=4)),
    "llama": (tf.LlamaForCausalLM, lambda: tf.LlamaConfig(**LM, **ROPE)),
    "mistral": (tf.MistralForCausalLM, lambda: tf.MistralConfig(**LM, **ROPE, sliding_window=16)),
    "qwen2": (tf.Qwen2ForCausalLM, lambda: tf.Qwen2Config(**LM, num_key_value_heads=2)),
    "qwen3": (tf.Qwen3ForCausalLM, lambda: tf.Qwen3Config(**LM, **ROPE)),
    "gemma": (tf.GemmaForCausalLM, lambda: tf.GemmaConfig(**LM, **ROPE)),
    "phi": (tf.PhiForCausalLM, lambda: tf.PhiConfig(**LM)),
    "phi3": (tf.Phi3ForCausalLM, lambda: tf.Phi3Config(**LM, num_key_value_heads=2, pad_token_id=0)),
    "smollm-tied-llama": (tf.LlamaForCausalLM, lambda: tf.LlamaConfig(**LM, **ROPE, tie_word_embeddings=True)),
    "falcon": (tf.FalconForCausalLM, lambda: tf.FalconConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                                                             num_attention_heads=4, new_decoder_architecture=False,
                                                             multi_query=True, alibi=False)),
    # Alternating sliding-window and full attention: two different masks reach the blocks.
    "gemma2": (tf.Gemma2ForCausalLM, lambda: tf.Gemma2Config(**{**LM, "num_hidden_layers": 4}, **ROPE,
                                                             sliding_window=16)),
    "gemma3": (tf.Gemma3ForCausalLM, lambda: tf.Gemma3TextConfig(**{**LM, "num_hidden_layers": 4}, **ROPE,
                                                                 sliding_window=16, sliding_window_pattern=2)),
    "qwen2-mixed": (tf.Qwen2ForCausalLM, lambda: tf.Qwen2Config(
        **{**LM, "num_hidden_layers": 4}, num_key_value_heads=2, use_sliding_window=True, sliding_window=16,
        max_window_layers=2, layer_types=["full_attention", "full_attention", "sliding_attention",
                                          "sliding_attention"])),
    "vit": (tf.ViTForImageClassification, lambda: tf.ViTConfig(**VIT)),
    "deit": (tf.DeiTForImageClassification, lambda: tf.DeiTConfig(**VIT)),
    "beit": (tf.BeitForImageClassification, lambda: tf.BeitConfig(**VIT, use_relative_position_bias=True)),
    # Stages shrink the hidden state (patch merging between them).
    "swin": (tf.SwinForImageClassification, lambda: tf.SwinConfig(image_size=16, patch_size=2, embed_dim=8,
                                                                  depths=[2, 2], num_heads=[2, 2], window_size=2)),
    "t5-encoder": (tf.T5EncoderModel, _t5),
    "t5-classifier": (tf.T5ForSequenceClassification, _t5),
    "bart": (tf.BartForSequenceClassification,
             lambda: tf.BartConfig(vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=2,
                                   encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                   decoder_ffn_dim=64, max_position_embeddings=128)),
    "whisper-encoder": (tf.WhisperForAudioClassification,
                        lambda: tf.WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=2,
                                                 encoder_attention_heads=4, decoder_attention_heads=4,
                                                 encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
                                                 max_source_positions=32, vocab_size=128)),
    "wav2vec2": (tf.Wav2Vec2ForSequenceClassification, lambda: _audio(tf.Wav2Vec2Config)),
    "hubert": (tf.HubertForSequenceClassification, lambda: _audio(tf.HubertConfig)),
    "deberta-v2": (tf.DebertaV2ForSequenceClassification,
                   lambda: tf.DebertaV2Config(**ENC, relative_attention=True, position_buckets=16,
                                              pos_att_type=["p2c", "c2p"], max_relative_positions=64)),
    "mpnet": (tf.MPNetForSequenceClassification, lambda: tf.MPNetConfig(**ENC, relative_attention_num_buckets=32)),
    # Beyond the issue's list, one each of two more mechanisms: a parameter the forward never reads (DINOv2's
    # mask token), a larger stack of convolutions beside the Transformer blocks (data2vec-audio's positional
    # convolution layers).
    "dinov2": (tf.Dinov2ForImageClassification, lambda: tf.Dinov2Config(**VIT)),
    "data2vec-audio": (tf.Data2VecAudioForSequenceClassification, lambda: _audio(tf.Data2VecAudioConfig)),
    "albert": (tf.AlbertForSequenceClassification,
               lambda: tf.AlbertConfig(vocab_size=128, embedding_size=16, **W, num_hidden_layers=2)),
}


def build(name: str):
    """The model `name` in float32, eager attention, seeded (the same weights every time)."""
    cls, make_config = ARCHITECTURES[name]
    config = make_config()
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return cls(config).eval()
