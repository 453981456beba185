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
// and ROW_TILE 1, so that neighbouring lanes read neighbouring weights. CPU adapters get
// ROWWISE: one lane per ROW_TILE rows over all of K, no workgroup memory and no barrier. A CPU
// adapter runs a subgroup as SIMD lanes and splits every storage load into a bounds-checked
// scalar load per lane, so there the number of loads is the cost: each activation load serves
// ROW_TILE rows, and with SHARE_X a block's 32 activations are 8 loads per subgroup, not 32 per lane.
// With W_U64 and X_U64 (set together where SHADER_INT64 is granted) weights and activations are
// read as u64 components, half as many loads for the same bytes.

#if !ROWWISE
var<workgroup> partial: array<f32, ROWS * LANES * BATCH>;
#endif

#if LANE_TILE_DOT && W_Q4_1 || LANE_TILE_BATCH && W_Q4_1
// Q4_1 in lane tiles (W_LANE_TILES with W_U64, ROWS 8): a lane's cell holds two rows' blocks to a
// vec4<u64> and its 8 rows' scale words in one more (`w_lane_cell`), so that a block of 8 rows
// is 5 loads where loading each row's block and a scale word per 4 rows would be 10 (CPU adapters
// pay per load and per lane).

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
// block is one load already, and its 8 scales are one more. The pairs are written out: a loop over
// them, left rolled, would index the sums by its counter, a load and a store per lane.
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
            // so that one block is live at a time beside the 32 activations (loading all
            // ROW_TILE blocks first spills on CPU adapters; docs/benchmarks/NOTES.md).
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
#elif W_WHOLE
    // Whole GGUF blocks: 16 values per step share one scale, decoded once for them.
    for (var k = first * 16u; k < p.K; k += step * 16u) {
        var xs: array<vec4<f32>, 4 * BATCH>;
        for (var b = 0u; b < BATCH; b++) {
            for (var i = 0u; i < 4u; i++) {
                xs[4u * b + i] = x_load4(b, k + 4u * i);
            }
        }
        for (var r = 0u; r < ROW_TILE; r++) {
            let wv = w_kblock_load16(rows[r], k, p.K);
            for (var b = 0u; b < BATCH; b++) {
                acc[r * BATCH + b] += dot(xs[4u * b], wv[0]) + dot(xs[4u * b + 1u], wv[1])
                    + dot(xs[4u * b + 2u], wv[2]) + dot(xs[4u * b + 3u], wv[3]);
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
#if X_RMS || X_LN
    norm_prologue(tid);
#endif
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
