// Mat-vec for GPUs over GGUF blocks in the interleaved order (BLOCKWISE, binding 0 by groups of 8
// rows, the group's 8 blocks of one index side by side): Y[b, N] = X[b, K] * W[N, K]^T for BATCH
// activation rows, stored as matvec_common.wgsl's `store` says.
//
// One workgroup of 8 * LANES invocations per group of 8 rows (ROWS = 8; LANES, a power of two,
// the launcher sizes to the row's blocks so that most invocations load one block or two: a
// decode mat-vec is bound by memory latency, not bandwidth). Invocation t takes row t % 8 and the
// blocks t / 8, t / 8 + LANES, ... of it, so that each step's loads of the workgroup are one
// contiguous run of the group's quants and of its scales: every byte fetched is used. Each block
// is loaded once and serves all BATCH activation rows; the LANES partial sums of a row are added
// in workgroup memory. With X_RMS or X_LN the workgroup first takes the norm statistics of each
// activation row (matvec_common.wgsl), so the norm before the mat-vec needs no launch.

const GROUP_ROWS: u32 = ROWS;
const WG: u32 = ROWS * LANES;

var<workgroup> partial: array<f32, WG * BATCH>;

@compute @workgroup_size(ROWS * LANES)
fn matvec_gpu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) tid: u32) {
    let group = wid.x + wid.y * nwg.x;
    if (group >= p.groups) {
        return;
    }
#if X_RMS || X_LN
    norm_prologue(tid);
#endif
    // Rows past N (the last group of a part) read the part's last row and are not stored.
    let n = min(group * GROUP_ROWS + (tid % GROUP_ROWS), p.N - 1u);
    var acc: array<f32, BATCH>;
    for (var blk = tid / GROUP_ROWS; blk < (p.K >> 5u); blk += WG / GROUP_ROWS) {
        let wb = w_block(n, blk, p.K, w_block_dm(n, blk, p.K, p.G));
        for (var b = 0u; b < BATCH; b++) {
            let xs = block_x(b, blk * 32u);
            acc[b] += wb.dm.x * block_qx(wb, xs) + wb.dm.y * block_sum(xs);
        }
    }
    for (var b = 0u; b < BATCH; b++) {
        partial[b * WG + tid] = acc[b];
    }
    workgroupBarrier();
    // Invocations t and t + s hold the same row for s a multiple of 8: halve down to 8.
    for (var s = WG / 2u; s >= GROUP_ROWS; s >>= 1u) {
        if (tid < s) {
            for (var b = 0u; b < BATCH; b++) {
                partial[b * WG + tid] += partial[b * WG + tid + s];
            }
        }
        workgroupBarrier();
    }
    if (tid < GROUP_ROWS * BATCH) {
        let r = tid % GROUP_ROWS;
        let b = tid / GROUP_ROWS;
        let out_n = group * GROUP_ROWS + r;
        if (out_n < p.N) {
            store(b, out_n, partial[b * WG + r]);
        }
    }
}
