//! Continuous batching without the GPU: which KV slot a request takes, and how many rows each
//! running sequence gets in the next step.
//!
//! Every step runs one decode row for each sequence that is generating, then fills the rest of
//! the step's rows with prompt chunks in arrival order, so a long prompt is prefilled a chunk at
//! a time between everyone else's tokens (as vLLM's chunked prefill does).

/// The session's sequence slots: which are running. What a slot's sequence holds in the KV
/// cache is the session's block pool's affair (its prefix cache outlives the slot).
#[derive(Debug)]
pub struct Slots {
    busy: Vec<bool>,
}

impl Slots {
    pub fn new(n: usize) -> Self {
        Self {
            busy: vec![false; n],
        }
    }

    pub fn free(&self) -> usize {
        self.busy.iter().filter(|b| !**b).count()
    }

    pub fn used(&self) -> usize {
        self.busy.len() - self.free()
    }

    /// Takes the lowest free slot.
    pub fn claim(&mut self) -> Option<usize> {
        let slot = self.busy.iter().position(|b| !b)?;
        self.busy[slot] = true;
        Some(slot)
    }

    pub fn release(&mut self, slot: usize) {
        self.busy[slot] = false;
    }
}

/// Rows each sequence runs in the next step, given the tokens each has yet to feed (1 for a
/// sequence that is decoding, more for one prefilling its prompt) and the step's row limit.
/// Decoding sequences always get their row; prompts share what is left in order.
pub fn plan(needs: &[usize], max_rows: usize) -> Vec<usize> {
    let decoding = needs.iter().filter(|&&n| n == 1).count();
    let mut budget = max_rows.saturating_sub(decoding);
    needs
        .iter()
        .map(|&n| match n {
            0 | 1 => n,
            _ => {
                let take = n.min(budget);
                budget -= take;
                take
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_claimed_and_released() {
        let mut s = Slots::new(2);
        assert_eq!((s.claim(), s.claim(), s.claim()), (Some(0), Some(1), None));
        s.release(0);
        assert_eq!((s.used(), s.free()), (1, 1));
        assert_eq!(s.claim(), Some(0));
    }

    #[test]
    fn decode_rows_come_first_and_prompts_share_the_rest() {
        assert_eq!(plan(&[1, 1, 1], 8), vec![1, 1, 1]);
        assert_eq!(plan(&[300, 1, 50, 1], 130), vec![128, 1, 0, 1]);
        assert_eq!(plan(&[5, 1, 50, 1], 130), vec![5, 1, 50, 1]);
        assert_eq!(plan(&[5, 7], 10), vec![5, 5]);
        assert_eq!(plan(&[], 10), Vec::<usize>::new());
    }
}
