//! A step of each shape the scheduler makes, run before the first request: every kernel variant
//! those steps launch (the mat-vec per batch size, prefill attention, ...) is compiled and its
//! memory taken at start, not while a request waits on it. A soak run's resident memory then
//! stays flat from its first request (docs/benchmarks/NOTES.md).

use kiln_kernels::linear::MAX_BATCH;
use kiln_model::architecture::Architecture;
use kiln_model::session::{Output, Session};
use kiln_runtime::Context;

/// Runs one prompt chunk of up to `chunk` rows (within `capacity` positions), then steps of 1 ..=
/// max(`max_batch`, [`MAX_BATCH`]) rows, each spread over as many sequences as there are (the
/// mat-vec takes rows [`MAX_BATCH`] at a time, so a step of any length runs its variants), and
/// forgets them all. Shapes the KV pool cannot hold are skipped.
pub fn warm_up(
    ctx: &Context,
    model: &dyn Architecture,
    session: &mut Session,
    max_batch: usize,
    chunk: usize,
    capacity: usize,
) -> kiln_model::Result<()> {
    // Any token serves: the KV it leaves is right for what it holds.
    let token = 0;
    let longest = chunk.min(capacity).min(session.max_rows());
    let mut shapes = vec![longest];
    shapes.extend(1..=max_batch.max(MAX_BATCH).min(longest));
    for n in shapes {
        // Sequence 0 takes the rows the other sequences do not, one each.
        let seqs = n.min(max_batch);
        let mut rows: Vec<(usize, u32)> = vec![(0, token); n - (seqs - 1)];
        rows.extend((1..seqs).map(|seq| (seq, token)));
        let select: Vec<usize> = (n - seqs..n).collect();
        let needed: usize = (0..seqs)
            .map(|seq| session.blocks_needed(seq, if seq == 0 { n - (seqs - 1) } else { 1 }))
            .sum();
        if needed <= session.blocks_available() {
            session.step(ctx, model, &rows, &select, Output::Argmax)?;
        }
        for seq in 0..seqs {
            session.reset(seq);
        }
    }
    Ok(())
}
