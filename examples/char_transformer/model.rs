//! A small pre-norm transformer language model with tracked layers only.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use vivit::nn::{self as vnn, Embedding, LayerNorm, Linear};

/// Sizes of the model.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub vocab: usize,
    pub context: usize,
    pub width: usize,
    pub heads: usize,
    pub blocks: usize,
}

/// One pre-norm block: `x + attn(ln1 x)`, then `x + mlp(ln2 x)`.
struct Block {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln2: LayerNorm,
    up: Linear,
    down: Linear,
}

/// Token and position embeddings, the blocks, a final norm and the head.
pub struct CharTransformer {
    pub varmap: VarMap,
    pub shape: Shape,
    tokens: Embedding,
    positions: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
    /// `0` on and below the diagonal, `−∞`-like above: causal attention.
    mask: Tensor,
}

impl Block {
    fn new(d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            ln1: vnn::layer_norm(d, 1e-5, vb.pp("ln1"))?,
            q: vnn::linear(d, d, vb.pp("q"))?,
            k: vnn::linear(d, d, vb.pp("k"))?,
            v: vnn::linear(d, d, vb.pp("v"))?,
            o: vnn::linear(d, d, vb.pp("o"))?,
            ln2: vnn::layer_norm(d, 1e-5, vb.pp("ln2"))?,
            up: vnn::linear(d, 2 * d, vb.pp("up"))?,
            down: vnn::linear(2 * d, d, vb.pp("down"))?,
        })
    }

    fn forward(&self, x: &Tensor, heads: usize, mask: &Tensor) -> Result<Tensor> {
        let (n, t, d) = x.dims3()?;
        let split = |y: Tensor| -> Result<Tensor> {
            y.reshape((n, t, heads, d / heads))?
                .transpose(1, 2)?
                .contiguous()
        };
        let h = self.ln1.forward(x)?;
        let (q, k, v) = (
            split(self.q.forward(&h)?)?,
            split(self.k.forward(&h)?)?,
            split(self.v.forward(&h)?)?,
        );
        let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? / ((d / heads) as f64).sqrt())?
            .broadcast_add(&mask.narrow(0, 0, t)?.narrow(1, 0, t)?)?;
        let attended = candle_nn::ops::softmax_last_dim(&scores)?
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((n, t, d))?;
        let x = (x + self.o.forward(&attended)?)?;
        let h = self.up.forward(&self.ln2.forward(&x)?)?.gelu()?;
        x + self.down.forward(&h)?
    }
}

impl CharTransformer {
    pub fn new(shape: Shape, dev: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
        let d = shape.width;
        let blocks = (0..shape.blocks)
            .map(|b| Block::new(d, vb.pp(format!("block{b}"))))
            .collect::<Result<_>>()?;
        let c = shape.context;
        let mask: Vec<f32> = (0..c * c)
            .map(|i| if i % c > i / c { -1e9 } else { 0.0 })
            .collect();
        Ok(Self {
            tokens: scaled_embedding(shape.vocab, d, vb.pp("tokens"))?,
            positions: scaled_embedding(c, d, vb.pp("positions"))?,
            blocks,
            ln_f: vnn::layer_norm(d, 1e-5, vb.pp("ln_f"))?,
            head: vnn::linear(d, shape.vocab, vb.pp("head"))?,
            mask: Tensor::from_vec(mask, (c, c), dev)?,
            varmap,
            shape,
        })
    }

    /// Logits `[N, T, V]` for the ids `[N, T]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (n, t) = ids.dims2()?;
        let at = Tensor::arange(0u32, t as u32, ids.device())?
            .unsqueeze(0)?
            .repeat((n, 1))?;
        let mut x = (self.tokens.forward(ids)? + self.positions.forward(&at)?)?;
        for block in &self.blocks {
            x = block.forward(&x, self.shape.heads, &self.mask)?;
        }
        self.head.forward(&self.ln_f.forward(&x)?)
    }

    /// The names of the parameters of block `b` (for its parameter group).
    pub fn block_prefix(b: usize) -> String {
        format!("block{b}.")
    }

    /// `count` characters after `prompt`, each drawn from the softmax of the
    /// logits divided by `temperature`, with `rng`.
    pub fn generate(
        &self,
        prompt: &[u32],
        count: usize,
        temperature: f64,
        rng: &mut impl rand::Rng,
    ) -> anyhow::Result<Vec<u32>> {
        let dev = self.mask.device();
        let mut ids = prompt.to_vec();
        for _ in 0..count {
            let start = ids.len().saturating_sub(self.shape.context);
            let window = Tensor::new(&ids[start..], dev)?.unsqueeze(0)?;
            let logits = self.forward(&window)?.squeeze(0)?;
            let last = logits.get(logits.dim(0)? - 1)?;
            let p = candle_nn::ops::softmax(&(last / temperature)?, D::Minus1)?.to_vec1::<f32>()?;
            let u: f32 = rng.random();
            let mut acc = 0.0;
            let next = p.iter().position(|&q| {
                acc += q;
                acc > u
            });
            ids.push(next.unwrap_or(p.len() - 1) as u32);
        }
        Ok(ids[prompt.len()..].to_vec())
    }
}

/// An embedding with entries drawn with standard deviation 0.02 (GPT-2's),
/// not candle_nn's 1.
fn scaled_embedding(rows: usize, d: usize, vb: VarBuilder) -> Result<Embedding> {
    let init = candle_nn::Init::Randn {
        mean: 0.0,
        stdev: 0.02,
    };
    Ok(Embedding::new(
        vb.get_with_hints((rows, d), "weight", init)?,
        d,
    ))
}
