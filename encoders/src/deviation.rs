//! Deliberate deviations from the reference, used only by tests to show that each trap of the
//! spec's §8 checklist is caught by the parity fixtures. `Deviations::default()` (all off) is the
//! reference behaviour; nothing in the library ever turns one on.

/// Switches that re-introduce one known divergence each (see spec §8). All `false`/`None` by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deviations {
    /// Text: interleaved (GPT-J) rotary pairs instead of NeoX halves (trap 5).
    pub text_rope_interleaved: bool,
    /// Text: first rotary position (XLM-R would use padding_idx + 1 = 2) instead of 0 (trap 4).
    pub text_position_offset: usize,
    /// Text: do not add token-type row 0 (trap 3).
    pub text_skip_token_type: bool,
    /// Text: pre-LN blocks instead of post-LN (trap 6).
    pub text_pre_ln: bool,
    /// Text: tanh-approximated GELU instead of erf (trap 7).
    pub text_gelu_tanh: bool,
    /// Text: mean over all positions (padding included) instead of `ids != pad` (trap 13).
    pub text_pool_all_tokens: bool,
    /// Both towers: attention scale to use instead of `head_dim^-0.5` (trap 10).
    pub attention_scale: Option<f64>,
    /// Vision: LayerNorm epsilon instead of 1e-6 everywhere (trap 8).
    pub vision_ln_eps: Option<f64>,
    /// Vision: skip the sub-LNs `inner_attn_ln` and `ffn_ln` (trap 8).
    pub vision_skip_sublns: bool,
    /// Vision: rotate tokens 0..N-1 (CLS included, last patch left out) instead of 1..N (trap 5).
    pub vision_rotate_from_cls: bool,
    /// Vision: NeoX halves instead of interleaved pairs (trap 5).
    pub vision_rope_halves: bool,
    /// Vision: 2D-RoPE base instead of 10000 (trap 5).
    pub vision_rope_base: Option<f64>,
    /// Vision: integer grid positions instead of `r * pt_hw_seq_len / grid` (trap 5).
    pub vision_rope_integer_positions: bool,
    /// Vision: GELU gate instead of SiLU in the SwiGLU (trap 7).
    pub vision_gelu_gate: bool,
    /// Vision: post-LN blocks instead of pre-LN (trap 6).
    pub vision_post_ln: bool,
    /// Vision: mean-pool all tokens after the final LN instead of taking CLS (trap 11).
    pub vision_mean_pool: bool,
}
