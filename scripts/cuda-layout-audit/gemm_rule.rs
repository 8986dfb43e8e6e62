
// ---- appended by vivit's scripts/cuda-layout-audit.sh (not candle's code) ----
/// The operand layouts candle's CUDA matrix product takes (its `gemm_config`
/// in `cuda_backend/mod.rs`, restated): each operand `[…, r, c]` dense
/// row-major or column-major in its last two axes (a size-1 axis takes any
/// stride), and two batch axes only where the outer stride is the inner one
/// times the inner size or one of them has size 1. The CPU product takes any
/// strides; with this check, a layout that would fail on a GPU fails here.
fn cuda_gemm_rule(
    (_, m, n, k): (usize, usize, usize, usize),
    lhs_l: &Layout,
    rhs_l: &Layout,
) -> Result<()> {
    let dense = |l: &Layout, r: usize, c: usize| {
        let s = l.stride();
        let (s_r, s_c) = (s[s.len() - 2], s[s.len() - 1]);
        let row_major = (s_c == 1 || c == 1) && (s_r == c || r == 1);
        let column_major = (s_c == r || c == 1) && (s_r == 1 || r == 1);
        let batch = match (&l.dims()[..s.len() - 2], &s[..s.len() - 2]) {
            ([b0, b1], [s0, s1]) => *s0 == s1 * b1 || *b0 == 1 || *b1 == 1,
            (dims, _) => dims.len() < 2,
        };
        (row_major || column_major) && batch
    };
    if dense(lhs_l, m, k) && dense(rhs_l, k, n) {
        return Ok(());
    }
    let trace = std::backtrace::Backtrace::capture();
    crate::bail!(
        "cuda-layout-audit: candle's CUDA matmul refuses these operands \
         (MatMulNonContiguous): lhs {lhs_l:?}, rhs {rhs_l:?}, (m, n, k) {:?}\n{trace}",
        (m, n, k)
    )
}
