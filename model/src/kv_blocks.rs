//! Which KV blocks each sequence of a [`Session`](crate::session::Session) holds: a pool with a
//! free list, a block table per sequence, and a prefix cache of full blocks (as vLLM's automatic
//! prefix caching). A full block is named by a hash chained over every token up to its end, so a
//! new sequence whose prompt starts with the same tokens takes the same blocks, counted by
//! reference, and skips computing them. Blocks nobody holds keep their prefix until the pool
//! needs them, least recently released first.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher, RandomState};

/// The pool and every sequence's blocks.
#[derive(Debug)]
pub struct BlockPool {
    block: usize,
    width: usize,
    /// Per sequence: its blocks in position order.
    tables: Vec<Vec<u32>>,
    /// Per sequence: the tokens it holds, while all are known (a chained step's are not).
    tokens: Vec<Option<Vec<u32>>>,
    /// Per sequence: the prefix hash of each of its full blocks.
    hashes: Vec<Vec<u64>>,
    /// Per block: sequences holding it.
    refs: Vec<u32>,
    /// Per block: the prefix it is registered under.
    hash_of: Vec<Option<u64>>,
    by_hash: HashMap<u64, u32>,
    /// Blocks no sequence holds and no prefix names.
    free: Vec<u32>,
    /// Blocks no sequence holds that keep a prefix, by release time.
    idle: BTreeMap<u64, u32>,
    /// Per block: its key in `idle`.
    idle_at: Vec<u64>,
    clock: u64,
    hasher: RandomState,
}

/// Blocks of the pool by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockCounts {
    pub total: usize,
    /// Held by one sequence or more.
    pub used: usize,
    /// Held by none, keeping a cached prefix until needed.
    pub cached: usize,
    /// Held by none and empty.
    pub free: usize,
}

impl BlockPool {
    /// `blocks` blocks of `block` positions for `n_seq` sequences of up to `capacity` positions.
    pub fn new(n_seq: usize, capacity: usize, block: usize, blocks: usize) -> Self {
        Self {
            block,
            width: capacity.div_ceil(block).max(1),
            tables: vec![Vec::new(); n_seq],
            tokens: vec![Some(Vec::new()); n_seq],
            hashes: vec![Vec::new(); n_seq],
            refs: vec![0; blocks],
            hash_of: vec![None; blocks],
            by_hash: HashMap::new(),
            free: (0..blocks as u32).rev().collect(),
            idle: BTreeMap::new(),
            idle_at: vec![0; blocks],
            clock: 0,
            hasher: RandomState::new(),
        }
    }

    pub fn block(&self) -> usize {
        self.block
    }

    pub fn counts(&self) -> BlockCounts {
        let used = self.refs.iter().filter(|&&r| r > 0).count();
        BlockCounts {
            total: self.refs.len(),
            used,
            cached: self.idle.len(),
            free: self.free.len(),
        }
    }

    /// Blocks a sequence can still take: free ones and cached ones.
    pub fn available(&self) -> usize {
        self.free.len() + self.idle.len()
    }

    /// New blocks sequence `seq` holding `len` positions needs to hold `len + more`.
    pub fn needed(&self, seq: usize, len: usize, more: usize) -> usize {
        (len + more)
            .div_ceil(self.block)
            .saturating_sub(self.tables[seq].len())
    }

    /// The device's table: `[n_seq, width]`, unused entries block 0.
    pub fn table(&self) -> Vec<u32> {
        let mut t = vec![0u32; self.tables.len() * self.width];
        for (seq, blocks) in self.tables.iter().enumerate() {
            t[seq * self.width..][..blocks.len()].copy_from_slice(blocks);
        }
        t
    }

    /// Gives sequence `seq` blocks for positions up to `len`; `false` (taking none) when the
    /// pool has too few.
    pub fn grow(&mut self, seq: usize, len: usize) -> bool {
        let want = len.div_ceil(self.block);
        let have = self.tables[seq].len();
        if want <= have {
            return true;
        }
        if want - have > self.available() {
            return false;
        }
        for _ in have..want {
            let b = self.take();
            self.refs[b as usize] = 1;
            self.tables[seq].push(b);
        }
        true
    }

    /// Records the tokens of sequence `seq` at positions `from ..` (`None`: not known, as in a
    /// chained step), registering each block they fill under its prefix.
    pub fn append(&mut self, seq: usize, from: usize, tokens: Option<&[u32]>) {
        let Some(new) = tokens else {
            self.tokens[seq] = None;
            return;
        };
        let Some(held) = &mut self.tokens[seq] else {
            return;
        };
        debug_assert_eq!(held.len(), from);
        held.extend_from_slice(new);
        let full = held.len() / self.block;
        while self.hashes[seq].len() < full {
            let j = self.hashes[seq].len();
            let parent = j.checked_sub(1).map(|p| self.hashes[seq][p]);
            let tokens = self.tokens[seq].as_deref().expect("known");
            let h = self.chain(parent, &tokens[j * self.block..][..self.block]);
            self.hashes[seq].push(h);
            let b = self.tables[seq][j];
            if self.hash_of[b as usize].is_none() && !self.by_hash.contains_key(&h) {
                self.hash_of[b as usize] = Some(h);
                self.by_hash.insert(h, b);
            }
        }
    }

    /// Full blocks of cached prefix `prompt` starts with, leaving at least its last token to run.
    pub fn cached_prefix(&self, prompt: &[u32]) -> usize {
        self.prefix_blocks(prompt).len()
    }

    /// Gives empty sequence `seq` the cached blocks `prompt` starts with; returns the positions
    /// they hold.
    pub fn attach(&mut self, seq: usize, prompt: &[u32]) -> usize {
        assert!(self.tables[seq].is_empty(), "attach to an empty sequence");
        let found = self.prefix_blocks(prompt);
        for &(b, h) in &found {
            if self.refs[b as usize] == 0 {
                self.idle.remove(&self.idle_at[b as usize]);
            }
            self.refs[b as usize] += 1;
            self.tables[seq].push(b);
            self.hashes[seq].push(h);
        }
        let n = found.len() * self.block;
        self.tokens[seq] = Some(prompt[..n].to_vec());
        n
    }

    /// Keeps the first `keep` positions of sequence `seq` (holding `len`) and gives back the
    /// blocks past them; returns the positions kept, fewer where `keep` falls inside a block
    /// another sequence shares (its rows cannot change), then at that block's start.
    pub fn truncate(&mut self, seq: usize, len: usize, keep: usize) -> usize {
        let mut keep = keep.min(len);
        let open = keep / self.block;
        if !keep.is_multiple_of(self.block) {
            let b = self.tables[seq][open] as usize;
            if self.refs[b] > 1 {
                keep = open * self.block;
            } else if let Some(h) = self.hash_of[b].take() {
                // Its rows past `keep` will change: it no longer holds that prefix.
                self.by_hash.remove(&h);
            }
        }
        let kept_blocks = keep.div_ceil(self.block);
        for b in self.tables[seq].split_off(kept_blocks) {
            self.release(b);
        }
        self.hashes[seq].truncate(keep / self.block);
        if let Some(t) = &mut self.tokens[seq] {
            t.truncate(keep);
        }
        keep
    }

    /// Gives back every block of sequence `seq`; it holds nothing after.
    pub fn reset(&mut self, seq: usize) {
        self.truncate(seq, usize::MAX, 0);
        self.tokens[seq] = Some(Vec::new());
    }

    /// Forgets every cached prefix (after a failed step, whose rows are unknown).
    pub fn forget_prefixes(&mut self) {
        self.by_hash.clear();
        self.hash_of.iter_mut().for_each(|h| *h = None);
        for (_, b) in std::mem::take(&mut self.idle) {
            self.free.push(b);
        }
        for h in &mut self.hashes {
            h.clear();
        }
        for t in &mut self.tokens {
            *t = None;
        }
    }

    fn prefix_blocks(&self, prompt: &[u32]) -> Vec<(u32, u64)> {
        let mut found = Vec::new();
        let mut parent = None;
        for chunk in prompt[..prompt.len().saturating_sub(1)].chunks_exact(self.block) {
            let h = self.chain(parent, chunk);
            match self.by_hash.get(&h) {
                Some(&b) => found.push((b, h)),
                None => break,
            }
            parent = Some(h);
        }
        found
    }

    fn chain(&self, parent: Option<u64>, tokens: &[u32]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u64(parent.unwrap_or(0x6b696c6e));
        for &t in tokens {
            h.write_u32(t);
        }
        h.finish()
    }

    /// A block for a sequence: a free one, else the least recently released cached one.
    fn take(&mut self) -> u32 {
        if let Some(b) = self.free.pop() {
            return b;
        }
        let (_, b) = self
            .idle
            .pop_first()
            .expect("the caller checked available()");
        if let Some(h) = self.hash_of[b as usize].take() {
            self.by_hash.remove(&h);
        }
        b
    }

    fn release(&mut self, b: u32) {
        let i = b as usize;
        self.refs[i] -= 1;
        if self.refs[i] > 0 {
            return;
        }
        if self.hash_of[i].is_some() {
            self.clock += 1;
            self.idle_at[i] = self.clock;
            self.idle.insert(self.clock, b);
        } else {
            self.free.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(n: usize, seed: u32) -> Vec<u32> {
        (0..n as u32).map(|i| i * 7 + seed).collect()
    }

    #[test]
    fn sequences_share_full_blocks_of_a_common_prefix() {
        let mut p = BlockPool::new(3, 64, 4, 12);
        let a = toks(10, 1);
        assert!(p.grow(0, 10));
        p.append(0, 0, Some(&a));
        assert_eq!(p.counts().used, 3);
        // Two full blocks of `a` are cached; the third is open.
        let mut b = a[..9].to_vec();
        b.push(99);
        assert_eq!(p.attach(1, &b), 8);
        assert_eq!(p.table()[16..18], p.table()[0..2]);
        assert_eq!(p.counts().used, 3);
        // The last prompt token always runs: 8 tokens match 1 block, not 2.
        assert_eq!(p.cached_prefix(&a[..8]), 1);
        // A different first block shares nothing.
        assert_eq!(p.cached_prefix(&toks(10, 2)), 0);
        // Released blocks keep their prefix until the pool needs them.
        p.reset(0);
        p.reset(1);
        assert_eq!(
            p.counts(),
            BlockCounts {
                total: 12,
                used: 0,
                cached: 2,
                free: 10
            }
        );
        assert_eq!(p.attach(2, &a), 8);
        assert_eq!(p.counts().cached, 0);
        p.reset(2);
        // Filling the pool evicts the cached blocks, least recently released first.
        assert!(p.grow(0, 48));
        assert_eq!(
            p.counts(),
            BlockCounts {
                total: 12,
                used: 12,
                cached: 0,
                free: 0
            }
        );
        assert_eq!(p.cached_prefix(&a), 0);
        assert!(!p.grow(1, 1));
        p.reset(0);
        assert_eq!(p.counts().free, 12);
    }

    #[test]
    fn truncating_into_a_shared_block_keeps_its_start() {
        let mut p = BlockPool::new(2, 64, 4, 8);
        let a = toks(12, 3);
        assert!(p.grow(0, 12));
        p.append(0, 0, Some(&a));
        assert_eq!(p.attach(1, &a), 8);
        assert!(p.grow(1, 9));
        p.append(1, 8, Some(&a[8..9]));
        // Sequence 1 cannot rewrite position 6 of a block it shares with sequence 0.
        assert_eq!(p.truncate(1, 9, 6), 4);
        // Sequence 0 holds its blocks alone now (block 0 is still shared): cutting into its
        // own second block unregisters it.
        assert_eq!(p.truncate(0, 12, 6), 6);
        assert_eq!(p.cached_prefix(&a), 1);
        assert_eq!(p.needed(0, 6, 3), 1);
        assert_eq!(p.needed(0, 6, 2), 0);
    }

    #[test]
    fn unknown_tokens_register_nothing() {
        let mut p = BlockPool::new(1, 64, 4, 8);
        assert!(p.grow(0, 8));
        p.append(0, 0, Some(&toks(4, 0)));
        p.append(0, 4, None);
        p.append(0, 5, Some(&[1, 2, 3]));
        assert_eq!(p.cached_prefix(&toks(9, 0)), 1);
        p.reset(0);
        assert_eq!(p.counts().cached, 1);
    }
}
