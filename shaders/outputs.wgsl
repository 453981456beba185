// Where the matrix kernels (matvec, matmul, outlier_add) put column g of output row m. A matrix
// stacked by rows from up to three projections of one input (Llama's q, k and v; gate and up)
// is one launch whose columns are cut over the projections' own outputs: columns below cut1 go
// to y, those from cut1 to y1, and with SPLIT_Y3 those from cut2 to y2, each output as wide as
// its share. Without SPLIT_Y there is one output, ldy wide. The including kernel's Params has
// ldy (the whole matrix's rows), cut1 and cut2.

@group(0) @binding(2) var<storage, read_write> y: array<f32>;
#if SPLIT_Y
@group(0) @binding(4) var<storage, read_write> y1: array<f32>;
#endif
#if SPLIT_Y3
@group(0) @binding(5) var<storage, read_write> y2: array<f32>;
#endif

// Whether the product is added to Y (a residual add fused into the store).
#if ACCUMULATE
const Y_ADD = true;
#else
const Y_ADD = false;
#endif

// Y[m, g] = v, or Y[m, g] += v with `add` (a constant at every call, so the branch folds away
// and a plain store reads nothing).
fn y_put(m: u32, g: u32, v: f32, add: bool) {
#if SPLIT_Y3
    if (g >= p.cut2) {
        let at = m * (p.ldy - p.cut2) + g - p.cut2;
        if (add) { y2[at] += v; } else { y2[at] = v; }
        return;
    }
#endif
#if SPLIT_Y
    if (g >= p.cut1) {
        let at = m * (p.cut2 - p.cut1) + g - p.cut1;
        if (add) { y1[at] += v; } else { y1[at] = v; }
        return;
    }
    let at = m * p.cut1 + g;
#else
    let at = m * p.ldy + g;
#endif
    if (add) { y[at] += v; } else { y[at] = v; }
}
