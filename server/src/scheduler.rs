//! Continuous batching without the GPU: which KV slot a request takes, and how many rows each
//! running sequence gets in the next step.
//!
//! Every step runs one decode row for each sequence that is generating, then fills the rest of
//! the step's rows with prompt chunks in arrival order, so a long prompt is prefilled a chunk at
//! a time between everyone else's tokens (as vLLM's chunked prefill does). A slot that is given
//! back keeps its tokens' KV; the next request whose prompt starts with them takes that slot and
//! skips prefilling the shared prefix.

/// The KV cache's sequence slots and the tokens each one holds.
#[derive(Debug)]
pub struct Slots {
    /// Tokens whose keys and values are in each slot, from position 0.
    cached: Vec<Vec<u32>>,
    busy: Vec<bool>,
}

impl Slots {
    pub fn new(n: usize) -> Self {
        Self {
            cached: vec![Vec::new(); n],
            busy: vec![false; n],
        }
    }

    pub fn free(&self) -> usize {
        self.busy.iter().filter(|b| !**b).count()
    }

    pub fn used(&self) -> usize {
        self.busy.len() - self.free()
    }

    /// Takes the free slot whose cached tokens share the longest prefix with `prompt` (among
    /// equals the one caching least, so other prefixes stay) and returns it with that length, at
    /// most `prompt.len() - 1`:
    /// the prompt's last token always runs, since its logits give the first new token.
    pub fn claim(&mut self, prompt: &[u32]) -> Option<(usize, usize)> {
        let shared = |c: &Vec<u32>| c.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        let (slot, len) = (0..self.busy.len())
            .filter(|&s| !self.busy[s])
            .map(|s| (s, shared(&self.cached[s])))
            .max_by_key(|&(s, len)| {
                (
                    len,
                    std::cmp::Reverse(self.cached[s].len()),
                    std::cmp::Reverse(s),
                )
            })?;
        self.busy[slot] = true;
        self.cached[slot].clear();
        Some((slot, len.min(prompt.len().saturating_sub(1))))
    }

    /// Gives `slot` back, holding the KV of `cached`.
    pub fn release(&mut self, slot: usize, cached: &[u32]) {
        self.busy[slot] = false;
        self.cached[slot] = cached.to_vec();
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
    fn slots_prefer_the_longest_cached_prefix() {
        let mut s = Slots::new(3);
        assert_eq!(s.claim(&[1, 2, 3]), Some((0, 0)));
        assert_eq!(s.claim(&[1, 2, 3]), Some((1, 0)));
        s.release(0, &[1, 2, 3, 4]);
        s.release(1, &[1, 2]);
        // Slot 0 shares three tokens, but the last prompt token must run.
        assert_eq!(s.claim(&[1, 2, 3]), Some((0, 2)));
        assert_eq!(s.claim(&[9]), Some((2, 0)));
        assert_eq!(s.claim(&[1, 2, 7, 7]), Some((1, 2)));
        assert_eq!(s.claim(&[1]), None);
        assert_eq!((s.used(), s.free()), (3, 0));
        // A claimed slot forgets what it held until it is released again.
        s.release(2, &[]);
        assert_eq!(s.claim(&[9, 9]), Some((2, 0)));
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
