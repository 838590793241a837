//! Deliberate deviations from the reference, used only by tests to show that each trap of the
//! spec's §8 checklist is caught by the parity fixtures (`encoders/tests/traps.rs`).
//!
//! With the `trap-tests` cargo feature, [`Deviations`] is a struct of switches that the trap tests
//! set. Without it (every normal build) it is a zero-sized type whose accessors are constants
//! giving the reference behaviour, so the switches compile out of the forward passes.

macro_rules! deviations {
    ($($(#[$doc:meta])* $name:ident: $ty:ty = $default:expr,)*) => {
        /// Switches that re-introduce one known divergence each (see spec §8). All off by default.
        #[cfg(feature = "trap-tests")]
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct Deviations {
            $($(#[$doc])* pub $name: $ty,)*
        }

        #[cfg(feature = "trap-tests")]
        impl Deviations {
            $(
                #[inline]
                pub(crate) fn $name(&self) -> $ty {
                    self.$name
                }
            )*
        }

        /// The reference behaviour (built without the `trap-tests` feature).
        #[cfg(not(feature = "trap-tests"))]
        #[derive(Debug, Clone, Default, PartialEq)]
        pub(crate) struct Deviations;

        #[cfg(not(feature = "trap-tests"))]
        impl Deviations {
            $(
                #[inline(always)]
                pub(crate) const fn $name(&self) -> $ty {
                    $default
                }
            )*
        }
    };
}

deviations! {
    /// Text: interleaved (GPT-J) rotary pairs instead of NeoX halves (trap 5).
    text_rope_interleaved: bool = false,
    /// Text: first rotary position (XLM-R would use padding_idx + 1 = 2) instead of 0 (trap 4).
    text_position_offset: usize = 0,
    /// Text: do not add token-type row 0 (trap 3).
    text_skip_token_type: bool = false,
    /// Text: pre-LN blocks instead of post-LN (trap 6).
    text_pre_ln: bool = false,
    /// Text: tanh-approximated GELU instead of erf (trap 7).
    text_gelu_tanh: bool = false,
    /// Text: mean over all positions (padding included) instead of `ids != pad` (trap 13).
    text_pool_all_tokens: bool = false,
    /// Both towers: attention scale to use instead of `head_dim^-0.5` (trap 10).
    attention_scale: Option<f64> = None,
    /// Vision: LayerNorm epsilon instead of 1e-6 everywhere (trap 8).
    vision_ln_eps: Option<f64> = None,
    /// Vision: skip the sub-LNs `inner_attn_ln` and `ffn_ln` (trap 8).
    vision_skip_sublns: bool = false,
    /// Vision: rotate tokens 0..N-1 (CLS included, last patch left out) instead of 1..N (trap 5).
    vision_rotate_from_cls: bool = false,
    /// Vision: NeoX halves instead of interleaved pairs (trap 5).
    vision_rope_halves: bool = false,
    /// Vision: 2D-RoPE base instead of 10000 (trap 5).
    vision_rope_base: Option<f64> = None,
    /// Vision: integer grid positions instead of `r * pt_hw_seq_len / grid` (trap 5).
    vision_rope_integer_positions: bool = false,
    /// Vision: GELU gate instead of SiLU in the SwiGLU (trap 7).
    vision_gelu_gate: bool = false,
    /// Vision: post-LN blocks instead of pre-LN (trap 6).
    vision_post_ln: bool = false,
    /// Vision: mean-pool all tokens after the final LN instead of taking CLS (trap 11).
    vision_mean_pool: bool = false,
}
