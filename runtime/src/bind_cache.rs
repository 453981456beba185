//! Bind groups kept from one recording to the next.
//!
//! A decode step records the same few hundred dispatches every token: the same pipelines over the
//! same buffers, with parameters at the same places in the same pooled uniform chunks. Making
//! their bind groups anew costs more than the rest of recording (docs/benchmarks/NOTES.md), so a
//! [`BindGroupCache`] keeps them, keyed by pipeline, group and the exact
//! buffer ranges bound. The parameters' offset is not part of it (a dynamic offset,
//! `crate::layout`), so steps of other shapes, whose launches land elsewhere in the chunks, reuse
//! the same groups. An entry holds its buffers alive, so the cache belongs to whatever owns
//! those buffers (a generation session) and goes with it; past [`MAX_ENTRIES`] it starts over.

use std::collections::HashMap;
use std::sync::Mutex;

/// Bind groups a cache holds before it is emptied.
pub const MAX_ENTRIES: usize = 8192;

/// One bound buffer range: (binding, buffer, offset, size; 0 = the whole buffer).
pub(crate) type Entry = (u32, wgpu::Buffer, u64, u64);

#[derive(Hash, PartialEq, Eq)]
pub(crate) struct Key {
    pub pipeline: wgpu::ComputePipeline,
    pub group: u32,
    pub entries: Vec<Entry>,
}

/// Bind groups reused across [`crate::Recorder`]s made with [`crate::Context::recorder_cached`].
#[derive(Default)]
pub struct BindGroupCache {
    map: Mutex<HashMap<Key, wgpu::BindGroup>>,
}

impl BindGroupCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bind groups held.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every bind group (and with them the cache's hold on their buffers).
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub(crate) fn get_or_make(
        &self,
        key: Key,
        make: impl FnOnce() -> wgpu::BindGroup,
    ) -> wgpu::BindGroup {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(group) = map.get(&key) {
            return group.clone();
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.entry(key).or_insert_with(make).clone()
    }
}
