// Matrix-vector product for decode: Y[b, N] = X[b, K] * W[N, K]^T (+ bias[N]) for BATCH rows of X
// from m0 (with ACCUMULATE, Y += ...).
// A matrix split into row parts (over the binding limit) is one launch per part, each writing
// columns n0 .. n0 + N of Y; a stacked matrix's columns go to several outputs (outputs.wgsl).
//
// Decode is bound by reading W once, so each weight value is loaded once and used for all BATCH
// activation rows (a skinny matmul). A workgroup owns ROWS * ROW_TILE output rows with LANES
// invocations per row, lane l taking every LANES-th step of K; lanes are summed through workgroup
// memory. A step is four values, or with BLOCKWISE (GGUF block formats, and int8 whose groups are
// whole blocks) one whole 32-value block: its scale is decoded once and folded in after the sums,
// dm.x * sum(v x) + dm.y * sum(x) (`w_block` in weights.wgsl).
//
// The launcher picks the shape per device. GPUs get 256-invocation groups of many lanes per row
// and ROW_TILE 1, so that neighbouring lanes read neighbouring weights. CPU adapters (lavapipe)
// get ROWWISE: one lane per ROW_TILE rows over all of K, no workgroup memory and no barrier.
// lavapipe runs a subgroup as SIMD lanes and splits every storage load into a bounds-checked
// scalar load per lane, so there the number of loads is the cost: each activation load serves
// ROW_TILE rows, and with SHARE_X a block's 32 activations are 8 loads per subgroup, not 32 per lane.
// With W_U64 and X_U64 (set together where SHADER_INT64 is granted) weights and activations are
// read as u64 components, half as many loads for the same bytes.

struct Params {
    N: u32,       // rows of this weight part
    K: u32,
    G: u32,       // int8 group size
    groups: u32,  // ceil(N / (ROWS * ROW_TILE))
    ldy: u32,     // columns of the whole product (the matrix's rows; y's row stride unsplit)
    n0: u32,      // first column of y this part writes
    m0: u32,      // first row of x and y this launch takes (BATCH rows from it)
    cut1: u32,    // first column of output 1 (outputs.wgsl)
    cut2: u32,    // first column of output 2
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#if X_VEC4 && X_U64
alias XItem = vec2<u64>;
#elif X_VEC4
alias XItem = vec4<f32>;
#else
alias XItem = f32;
#endif
@group(0) @binding(1) var<storage, read> x: array<XItem>;
#if X_GLU
@group(0) @binding(3) var<storage, read> x_up: array<XItem>;
#endif
#if HAS_BIAS
@group(1) @binding(3) var<storage, read> bias: array<f32>;
#endif

#if !ROWWISE
var<workgroup> partial: array<f32, ROWS * LANES * BATCH>;
#endif

#if SHARE_X
var<private> sg_lane: u32;
#endif

// X[b, k .. k + 4] (zeros past K). With X_GLU, X is silu(gate) * up of two bound inputs (x the
// gate, x_up the up projection), the activation of a gated MLP made as it is read.
fn x_load4(b: u32, k: u32) -> vec4<f32> {
#if X_GLU
    let g = x_quad(b, k);
    return g / (vec4<f32>(1.0) + exp(-g)) * up_quad(b, k);
#else
    return x_quad(b, k);
#endif
}

fn x_quad(b: u32, k: u32) -> vec4<f32> {
#if X_VEC4 && X_U64
    return bitcast<vec4<f32>>(split64(x[((p.m0 + b) * p.K + k) >> 2u]));
#elif X_VEC4
    return x[((p.m0 + b) * p.K + k) >> 2u];
#else
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (k + i < p.K) {
            v[i] = x[(p.m0 + b) * p.K + k + i];
        }
    }
    return v;
#endif
}

#if X_GLU
// x_quad over x_up: WGSL cannot hand a storage buffer to a function.
fn up_quad(b: u32, k: u32) -> vec4<f32> {
#if X_VEC4 && X_U64
    return bitcast<vec4<f32>>(split64(x_up[((p.m0 + b) * p.K + k) >> 2u]));
#elif X_VEC4
    return x_up[((p.m0 + b) * p.K + k) >> 2u];
#else
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (k + i < p.K) {
            v[i] = x_up[(p.m0 + b) * p.K + k + i];
        }
    }
    return v;
#endif
}
#endif

#if BLOCKWISE
// The 32 activations of row b from k as 8 quads. With SHARE_X (CPU adapters with subgroups of
// at least 8) each lane loads one quad and the subgroup passes them round: a broadcast is a
// register move, where every lane loading all 32 is 32 loads per lane.
fn block_x(b: u32, k: u32) -> array<vec4<f32>, 8> {
#if SHARE_X
    let mine = x_load4(b, k + 4u * (sg_lane & 7u));
    return array<vec4<f32>, 8>(
        subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u),
        subgroupBroadcast(mine, 2u), subgroupBroadcast(mine, 3u),
        subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u),
        subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u));
#else
    return array<vec4<f32>, 8>(
        x_load4(b, k), x_load4(b, k + 4u), x_load4(b, k + 8u), x_load4(b, k + 12u),
        x_load4(b, k + 16u), x_load4(b, k + 20u), x_load4(b, k + 24u), x_load4(b, k + 28u));
#endif
}

// sum(x) over one block's activations.
fn block_sum(xs: array<vec4<f32>, 8>) -> f32 {
    return dot(xs[0] + xs[1] + xs[2] + xs[3] + xs[4] + xs[5] + xs[6] + xs[7], vec4<f32>(1.0));
}

// sum(v x) over one block: quads i and 4 + i of the activations meet word i's nibbles (Q4) or
// words i and 4 + i (Q8_0, int8).
fn block_qx(wb: Block, xs: array<vec4<f32>, 8>) -> f32 {
    let q0 = w_block_quads(wb, 0u);
    let q1 = w_block_quads(wb, 1u);
    let q2 = w_block_quads(wb, 2u);
    let q3 = w_block_quads(wb, 3u);
    return dot(q0.lo, xs[0]) + dot(q1.lo, xs[1]) + dot(q2.lo, xs[2]) + dot(q3.lo, xs[3])
         + dot(q0.hi, xs[4]) + dot(q1.hi, xs[5]) + dot(q2.hi, xs[6]) + dot(q3.hi, xs[7]);
}
#endif

#if LANE_TILE_DOT && W_Q4_1 || LANE_TILE_BATCH && W_Q4_1
// Q4_1 in lane tiles (W_LANE_TILES with W_U64, ROWS 8): a lane's cell holds two rows' blocks to a
// vec4<u64> and its 8 rows' scale words in one more (`w_lane_cell`), so that a block of 8 rows
// is 5 loads where loading each row's block and a scale word per 4 rows took 10 (lavapipe pays
// per load and per lane; docs/benchmarks/README.md).

// The two rows of a lane's cell whose blocks are q (two vec4s of quants, as u64) and whose
// scale words are d's halves.
fn lane_blocks(q: vec4<u64>, d: u64) -> array<Block, 2> {
    var b: array<Block, 2>;
    b[0].dm = block_dm(unpack2x16float(u32(d & 0xfffffffflu)));
    b[0].q[0] = split64(q.xy);
    b[1].dm = block_dm(unpack2x16float(u32(d >> 32u)));
    b[1].q[0] = split64(q.zw);
    return b;
}

// Their dot products with one activation row's block (xs, summing to sx).
fn lane_dots(q: vec4<u64>, d: u64, xs: array<vec4<f32>, 8>, sx: f32) -> vec2<f32> {
    let b = lane_blocks(q, d);
    return vec2<f32>(b[0].dm.x * block_qx(b[0], xs) + b[0].dm.y * sx,
                     b[1].dm.x * block_qx(b[1], xs) + b[1].dm.y * sx);
}
#endif

#if LANE_TILE_DOT && W_Q8_0
// Q8_0 rows n and n + 8's dot products with the block's activations xs, their scales the halves
// of d; rows past the last read the last row.
fn q8_rows(n: u32, blk: u32, d: u32, xs: array<vec4<f32>, 8>) -> vec2<f32> {
    let s = unpack2x16float(d);
    let b0 = w_block(min(n, p.N - 1u), blk, p.K, vec2<f32>(s.x, 0.0));
    let b1 = w_block(min(n + 8u, p.N - 1u), blk, p.K, vec2<f32>(s.y, 0.0));
    return vec2<f32>(b0.dm.x * block_qx(b0, xs), b1.dm.x * block_qx(b1, xs));
}
#endif

#if LANE_TILE_DOT
// Decode over lane tiles (ROW_TILE 8): the lane's rows n0 + 8 r, each pair's blocks loaded just
// before use. Q4_1 reads a pair's quants in one load and the 8 scale words in one more; Q8_0's
// block is one load already, and its 8 scales are one more. The pairs are written out: lavapipe
// did not unroll a loop over them, and indexing the sums by its counter became a load and a
// store per lane.
fn lane_tile_dot(n0: u32) -> array<f32, 8> {
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    for (var blk = 0u; blk < (p.K >> 5u); blk++) {
        let xs = block_x(0u, blk * 32u);
#if W_Q4_1
        let sx = block_sum(xs);
        let cell = 5u * w_lane_cell(n0, blk, p.K);
        let dm = w[cell + 4u];
        lo += vec4<f32>(lane_dots(w[cell], dm.x, xs, sx), lane_dots(w[cell + 1u], dm.y, xs, sx));
        hi += vec4<f32>(lane_dots(w[cell + 2u], dm.z, xs, sx),
                        lane_dots(w[cell + 3u], dm.w, xs, sx));
#else
        let d = w_lane_scales(n0, blk, p.K);
        lo += vec4<f32>(q8_rows(n0, blk, d.x, xs), q8_rows(n0 + 16u, blk, d.y, xs));
        hi += vec4<f32>(q8_rows(n0 + 32u, blk, d.z, xs), q8_rows(n0 + 48u, blk, d.w, xs));
#endif
    }
    return array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
}
#endif

#if LANE_TILE_BATCH
// The blocks blk of rows n0 + 8 r, r < 4, the first or second half of the lane's 8 rows (by
// n0's 32-row group).
fn lane_half_blocks(n0: u32, blk: u32) -> array<Block, 4> {
    let half = (n0 >> 5u) & 1u;
#if W_Q4_1
    let cell = 5u * w_lane_cell(n0, blk, p.K);
    let dm = w[cell + 4u];
    let d = select(dm.xy, dm.zw, half == 1u);
    let b01 = lane_blocks(w[cell + 2u * half], d.x);
    let b23 = lane_blocks(w[cell + 2u * half + 1u], d.y);
    return array<Block, 4>(b01[0], b01[1], b23[0], b23[1]);
#else
    // Q8_0: the lane's 8 rows' scales are one load.
    let d = w_lane_scales(n0, blk, p.K);
    let s01 = unpack2x16float(select(d.x, d.z, half == 1u));
    let s23 = unpack2x16float(select(d.y, d.w, half == 1u));
    return array<Block, 4>(
        w_block(min(n0, p.N - 1u), blk, p.K, vec2<f32>(s01.x, 0.0)),
        w_block(min(n0 + 8u, p.N - 1u), blk, p.K, vec2<f32>(s01.y, 0.0)),
        w_block(min(n0 + 16u, p.N - 1u), blk, p.K, vec2<f32>(s23.x, 0.0)),
        w_block(min(n0 + 24u, p.N - 1u), blk, p.K, vec2<f32>(s23.y, 0.0)));
#endif
}

// Several activation rows (ROW_TILE 4): rows n0 + 8 r, half of the lane's 8; the 4 blocks are
// loaded once and serve every activation row.
fn lane_tile_batch(n0: u32) -> array<f32, 4 * BATCH> {
    var acc: array<f32, 4 * BATCH>;
    for (var blk = 0u; blk < (p.K >> 5u); blk++) {
        let wb = lane_half_blocks(n0, blk);
        for (var b = 0u; b < BATCH; b++) {
            let xs = block_x(b, blk * 32u);
            let sx = block_sum(xs);
            for (var r = 0u; r < 4u; r++) {
                acc[r * BATCH + b] += wb[r].dm.x * block_qx(wb[r], xs) + wb[r].dm.y * sx;
            }
        }
    }
    return acc;
}
#endif

// The dot products of ROW_TILE rows, n0 + r * stride (clamped to the last row), with every
// activation row over the steps first, first + step, ...: each activation load serves all of
// them. acc[r * BATCH + b] is row r's with activation row b.
fn rows_dot(n0: u32, stride: u32, first: u32, step: u32) -> array<f32, ROW_TILE * BATCH> {
#if LANE_TILE_DOT
    return lane_tile_dot(n0);
#elif LANE_TILE_BATCH
    return lane_tile_batch(n0);
#else
    var acc: array<f32, ROW_TILE * BATCH>;
    var rows: array<u32, ROW_TILE>;
    for (var r = 0u; r < ROW_TILE; r++) {
        rows[r] = min(n0 + r * stride, p.N - 1u);
    }
#if BLOCKWISE
    for (var blk = first; blk < (p.K >> 5u); blk += step) {
        var dm: array<vec2<f32>, ROW_TILE>;
        for (var r = 0u; r < ROW_TILE; r++) {
            dm[r] = w_block_dm(rows[r], blk, p.K, p.G);
        }
        if (BATCH == 1u) {
            // Decode: the activations first, then each row's block loaded just before its use,
            // so that one block is live at a time beside the 32 activations. Loading all
            // ROW_TILE blocks first made lavapipe spill: its Q4_1 loop went from 3108 to 2652
            // x86 instructions with this order alone (docs/benchmarks/README.md).
            let xs = block_x(0u, blk * 32u);
            let sx = block_sum(xs);
            for (var r = 0u; r < ROW_TILE; r++) {
                let wb = w_block(rows[r], blk, p.K, dm[r]);
                acc[r] += wb.dm.x * block_qx(wb, xs) + wb.dm.y * sx;
            }
        } else {
            // Several activation rows: each block is loaded once and serves them all.
            var wb: array<Block, ROW_TILE>;
            for (var r = 0u; r < ROW_TILE; r++) {
                wb[r] = w_block(rows[r], blk, p.K, dm[r]);
            }
            for (var b = 0u; b < BATCH; b++) {
                let xs = block_x(b, blk * 32u);
                let sx = block_sum(xs);
                for (var r = 0u; r < ROW_TILE; r++) {
                    acc[r * BATCH + b] += wb[r].dm.x * block_qx(wb[r], xs) + wb[r].dm.y * sx;
                }
            }
        }
    }
#else
    for (var k = first * 4u; k < p.K; k += step * 4u) {
        var xs: array<vec4<f32>, BATCH>;
        for (var b = 0u; b < BATCH; b++) {
            xs[b] = x_load4(b, k);
        }
        for (var r = 0u; r < ROW_TILE; r++) {
            let wv = w_load4(rows[r], k, p.K, p.G);
            for (var b = 0u; b < BATCH; b++) {
                acc[r * BATCH + b] += dot(xs[b], wv);
            }
        }
    }
#endif
    return acc;
#endif
}

// y = v (+ bias), or with ACCUMULATE y += v (+ bias): a residual add without a launch of its own.
fn store(b: u32, n: u32, v: f32) {
    var out = v;
#if HAS_BIAS
    out += bias[n];
#endif
    y_put(p.m0 + b, p.n0 + n, out, Y_ADD);
}

@compute @workgroup_size(ROWS * LANES)
fn matvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32,
#if SHARE_X
          @builtin(subgroup_invocation_id) lane: u32,
#endif
) {
#if SHARE_X
    sg_lane = lane;
#endif
    let group = wid.x + wid.y * nwg.x;
    if (group >= p.groups) {
        return;
    }
#if ROWWISE
    // Lane tid owns rows tid, tid + ROWS, ... of the group's ROWS * ROW_TILE: in every SIMD step
    // the lanes read neighbouring rows. Rows past N recompute the last row rather than branch
    // around the loop: every lane stays active and the activation loads stay uniform.
    let n0 = group * ROWS * ROW_TILE + tid;
    let acc = rows_dot(n0, ROWS, 0u, 1u);
    for (var r = 0u; r < ROW_TILE; r++) {
        let n = n0 + r * ROWS;
        if (n < p.N) {
            for (var b = 0u; b < BATCH; b++) {
                store(b, n, acc[r * BATCH + b]);
            }
        }
    }
#else
    let row = tid / LANES;
    let acc = rows_dot(group * ROWS + row, 0u, tid % LANES, LANES);
    for (var b = 0u; b < BATCH; b++) {
        partial[b * ROWS * LANES + tid] = acc[b];
    }
    workgroupBarrier();
    if (tid < ROWS * BATCH) {
        let r = tid % ROWS;
        let b = tid / ROWS;
        let out_n = group * ROWS + r;
        if (out_n < p.N) {
            var s = 0.0;
            for (var i = 0u; i < LANES; i++) {
                s += partial[(b * ROWS + r) * LANES + i];
            }
            store(b, out_n, s);
        }
    }
#endif
}
