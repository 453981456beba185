//! What a model architecture provides: its sizes, its whole forward pass for a step, and its
//! weight matrices for whole-model passes (outlier calibration and decomposition).

use kiln_kernels::Weights;
use kiln_kernels::attention::KvCache;
use kiln_runtime::Recorder;

use crate::error::Result;
use crate::matrix::NamedMatrix;
use crate::step::{Dims, StepIo};

pub trait Architecture {
    fn dims(&self) -> Dims;
    /// Records the whole forward pass of a step: embeds `io.ids` at `io.pos`, runs the blocks
    /// (layer `l` over `caches[l]`; only the first `caches.len()` blocks when given fewer caches,
    /// as self-speculation's draft does), then for the selected rows ([`StepIo::selected_rows`]) the
    /// final norm, the LM head into `io.logits` and [`StepIo::finish`].
    fn record_step(&self, rec: &mut Recorder<'_>, io: &StepIo, caches: &[KvCache]) -> Result<()>;
    /// Bytes of every weight on the device (matrices with their scales, norms, biases).
    fn weight_bytes(&self) -> u64;
    /// Bytes of weights one decode step reads (what bounds decode speed).
    fn weight_bytes_per_token(&self) -> u64;
    /// Every weight matrix once (embeddings and LM head included).
    fn matrices(&self) -> Vec<&Weights>;
    /// Every weight matrix once, named as llama.cpp names it, to be replaced or probed.
    fn matrices_mut(&mut self) -> Vec<NamedMatrix<'_>>;
}
