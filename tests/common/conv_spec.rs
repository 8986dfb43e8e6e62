//! The convolutions the random architectures of [`super::arch`] draw: plain,
//! grouped (2 groups) and transposed 2-d convolutions on square images.

use std::fmt;

use candle_core::Module;
use candle_nn::{Conv2dConfig, ConvTranspose2dConfig, VarBuilder};
use proptest::prelude::*;
use vivit::nn as vnn;

use super::arch::{act, Act};

/// How a convolution maps its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    Plain,
    /// Input and output channels split into this many groups.
    Grouped(usize),
    /// A transposed convolution (`ConvTranspose2d`).
    Transposed {
        output_padding: usize,
    },
}

#[derive(Clone, Copy)]
pub struct ConvSpec {
    pub inputs: usize,
    pub out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub bias: bool,
    pub act: Act,
    /// `h + act(conv(h))`: same channels and size (stride 1, odd kernel, "same" padding).
    pub residual: bool,
    pub kind: ConvKind,
}

/// The widest side a convolution may output (the explicit GGN stays small).
const MAX_SIDE: usize = 7;

pub type RawConv = (usize, usize, usize, usize, usize, bool, Act, bool, ConvKind);

impl ConvSpec {
    /// 1–3 output channels, kernel 1–3, stride 1–2, padding 0–1, dilation
    /// 1–2, any kind.
    pub fn strategy() -> impl Strategy<Value = RawConv> {
        let kind = prop_oneof![
            Just(ConvKind::Plain),
            Just(ConvKind::Grouped(2)),
            (0..=1usize).prop_map(|output_padding| ConvKind::Transposed { output_padding }),
        ];
        (
            1..=3usize,
            1..=3usize,
            1..=2usize,
            0..=1usize,
            1..=2usize,
            any::<bool>(),
            act(),
            any::<bool>(),
            kind,
        )
    }

    /// The drawn convolution made consistent on `channels` input channels: a
    /// residual block keeps its input's shape, groups divide both channel
    /// counts (else the convolution is plain), a transposed convolution's
    /// output padding is below its stride: PyTorch also allows it below the
    /// dilation, but candle 0.10.2's backward then fails (its input gradient
    /// comes out `output_padding` rows and columns too large).
    pub fn new(raw: RawConv, channels: usize) -> Self {
        let (out, kernel, stride, padding, dilation, bias, act, residual, kind) = raw;
        let mut spec = ConvSpec {
            inputs: channels,
            out,
            kernel,
            stride,
            padding,
            dilation,
            bias,
            act,
            residual,
            kind,
        };
        if residual {
            spec.out = channels;
            spec.stride = 1;
            spec.kernel |= 1;
            spec.padding = dilation * (spec.kernel - 1) / 2;
        }
        match spec.kind {
            ConvKind::Grouped(g) if !channels.is_multiple_of(g) => spec.kind = ConvKind::Plain,
            ConvKind::Grouped(g) => spec.out = spec.out.div_ceil(g) * g,
            ConvKind::Transposed { output_padding }
                if spec.residual || output_padding >= spec.stride =>
            {
                spec.kind = ConvKind::Transposed { output_padding: 0 }
            }
            ConvKind::Transposed { .. } => {}
            ConvKind::Plain => {}
        }
        spec
    }

    /// The output side of a square input of side `side`, if the kernel fits
    /// and the output is at most [`MAX_SIDE`] wide.
    pub fn out_side(&self, side: usize) -> Option<usize> {
        let span = self.dilation * (self.kernel - 1) + 1;
        let out = match self.kind {
            ConvKind::Transposed { output_padding } => {
                ((side - 1) * self.stride + span + output_padding).checked_sub(2 * self.padding)
            }
            _ => (side + 2 * self.padding >= span)
                .then(|| (side + 2 * self.padding - span) / self.stride + 1),
        };
        out.filter(|&out| out > 0 && out <= MAX_SIDE)
    }

    /// The tracked layer.
    pub fn build(&self, vb: VarBuilder) -> candle_core::Result<Box<dyn Module>> {
        let (i, o, k) = (self.inputs, self.out, self.kernel);
        if let ConvKind::Transposed { output_padding } = self.kind {
            let cfg = ConvTranspose2dConfig {
                padding: self.padding,
                output_padding,
                stride: self.stride,
                dilation: self.dilation,
            };
            let build = match self.bias {
                true => vnn::conv_transpose2d,
                false => vnn::conv_transpose2d_no_bias,
            };
            return Ok(Box::new(build(i, o, k, cfg, vb)?));
        }
        let cfg = Conv2dConfig {
            padding: self.padding,
            stride: self.stride,
            dilation: self.dilation,
            groups: match self.kind {
                ConvKind::Grouped(g) => g,
                _ => 1,
            },
            ..Default::default()
        };
        let build = match self.bias {
            true => vnn::conv2d,
            false => vnn::conv2d_no_bias,
        };
        Ok(Box::new(build(i, o, k, cfg, vb)?))
    }
}

impl fmt::Debug for ConvSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, extra) = match self.kind {
            ConvKind::Plain => ("Conv2d", String::new()),
            ConvKind::Grouped(g) => ("Conv2d", format!(" g{g}")),
            ConvKind::Transposed { output_padding } => {
                ("ConvTranspose2d", format!(" op{output_padding}"))
            }
        };
        write!(
            f,
            "{name}({}→{} k{} s{} p{} d{}{extra}{}){}{}",
            self.inputs,
            self.out,
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
            if self.bias { "" } else { ", no bias" },
            self.act.name(),
            if self.residual { " +res" } else { "" }
        )
    }
}
