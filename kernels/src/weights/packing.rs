//! GGUF blocks moved into the device's layouts and back: quants 16-byte aligned and the scales
//! apart, ordered as the kernels read them ([`BlockOrder`]).

use super::format::{BLOCK, WeightFormat};
use crate::plan::BlockOrder;

/// A GGUF block's scale bytes (f16 d, or d and m for Q4_1) and its quant bytes.
pub(super) fn block_split(format: WeightFormat) -> (usize, usize) {
    match format {
        WeightFormat::Q4_1 => (4, 16),
        WeightFormat::Q4_0 => (2, 16),
        _ => (2, 32),
    }
}

/// GGUF blocks as the device keeps them (but Q4_1 in lane tiles, [`pack_lane_tiles`]): every
/// block's quants, 16-byte aligned so that a block is whole vec4 loads, and the scales apart
/// (f16 d, two blocks to a word; Q4_1's d and m, one block to a word), padded to a word. The
/// quants are ordered by groups of 8 rows, block by block, the 8 rows' blocks side by side
/// ([`INTERLEAVE`]; rows past the end pad with zeros): neighbouring invocations read
/// neighbouring bytes when each owns a row or a block of a tile's rows. The scales go in the
/// same order, or for Q8_0 in lane tiles by [`scale_slots`].
pub(super) fn split_blocks(
    format: WeightFormat,
    order: BlockOrder,
    bytes: &[u8],
    rows: usize,
) -> (Vec<u8>, Vec<u8>) {
    let (head, body) = block_split(format);
    let row_bytes = bytes.len() / rows.max(1);
    let blocks = row_bytes / (head + body);
    let padded = rows.next_multiple_of(INTERLEAVE);
    let mut quants = Vec::with_capacity(padded * blocks * body);
    for group in (0..padded).step_by(INTERLEAVE) {
        for blk in 0..blocks {
            for row in group..group + INTERLEAVE {
                if row < rows {
                    let at = row * row_bytes + blk * (head + body);
                    quants.extend_from_slice(&bytes[at + head..at + head + body]);
                } else {
                    quants.resize(quants.len() + body, 0);
                }
            }
        }
    }
    let slots = scale_slots(order, rows, blocks);
    let mut scales = vec![0u8; (slots.len() * head).next_multiple_of(4)];
    for (slot, at) in slots.into_iter().enumerate() {
        if let Some((row, blk)) = at {
            let from = row * row_bytes + blk * (head + body);
            scales[slot * head..(slot + 1) * head].copy_from_slice(&bytes[from..from + head]);
        }
    }
    (quants, scales)
}

/// The (row, block) whose scale each slot of the scale buffer holds (None: padding), in
/// `order` (`w_scale_index` in `shaders/weights.wgsl`): as the quants, or for Q8_0 in lane tiles
/// by tiles of [`LANE_TILE`] rows, block by block, each lane's 8 rows side by side.
pub(super) fn scale_slots(
    order: BlockOrder,
    rows: usize,
    blocks: usize,
) -> Vec<Option<(usize, usize)>> {
    let (group, row_of): (usize, fn(usize) -> usize) = match order {
        BlockOrder::Interleaved => (INTERLEAVE, |s| s),
        BlockOrder::LaneTiles => (LANE_TILE, |s| s / LANE_ROWS + 8 * (s % LANE_ROWS)),
    };
    let padded = rows.next_multiple_of(group);
    let mut slots = Vec::with_capacity(padded * blocks);
    for first in (0..padded).step_by(group) {
        for blk in 0..blocks {
            slots.extend((0..group).map(|s| {
                let row = first + row_of(s);
                (row < rows).then_some((row, blk))
            }));
        }
    }
    slots
}

/// The inverse of [`split_blocks`]: `rows` rows of `k` values as GGUF blocks.
pub(super) fn join_blocks(
    format: WeightFormat,
    order: BlockOrder,
    quants: &[u8],
    scales: &[u8],
    rows: usize,
    k: usize,
) -> Vec<u8> {
    let (head, body) = block_split(format);
    let blocks = k / BLOCK;
    let mut scale_at = vec![0; rows * blocks];
    for (slot, at) in scale_slots(order, rows, blocks).into_iter().enumerate() {
        if let Some((row, blk)) = at {
            scale_at[row * blocks + blk] = slot;
        }
    }
    let mut out = Vec::with_capacity(rows * blocks * (head + body));
    for row in 0..rows {
        for blk in 0..blocks {
            let i = ((row / INTERLEAVE) * blocks + blk) * INTERLEAVE + row % INTERLEAVE;
            let s = scale_at[row * blocks + blk];
            out.extend_from_slice(&scales[s * head..(s + 1) * head]);
            out.extend_from_slice(&quants[i * body..(i + 1) * body]);
        }
    }
    out
}

/// Q4_1 blocks in lane tiles ([`BlockOrder::LaneTiles`], `w_lane_cell` in
/// `shaders/weights.wgsl`): tiles of [`LANE_TILE`] rows, lane l of a tile owning rows l + 8j;
/// for each tile and block, the 8 lanes' cells side by side, each the lane's 8 rows' quants
/// (16 bytes each) and then their scale words (f16 d and m). Rows past the end pad with zeros.
pub(super) fn pack_lane_tiles(bytes: &[u8], rows: usize) -> Vec<u8> {
    let (head, body) = block_split(WeightFormat::Q4_1);
    let row_bytes = bytes.len() / rows.max(1);
    let blocks = row_bytes / (head + body);
    let padded = rows.next_multiple_of(LANE_TILE);
    let mut out = vec![0u8; padded * blocks * (head + body)];
    for (i, cell) in out.chunks_exact_mut(LANE_CELL).enumerate() {
        let (lane, blk, tile) = (i % 8, i / 8 % blocks, i / 8 / blocks);
        let (quants, scales) = cell.split_at_mut(LANE_ROWS * body);
        for j in 0..LANE_ROWS {
            let row = tile * LANE_TILE + lane + 8 * j;
            if row < rows {
                let at = row * row_bytes + blk * (head + body);
                scales[j * head..(j + 1) * head].copy_from_slice(&bytes[at..at + head]);
                quants[j * body..(j + 1) * body]
                    .copy_from_slice(&bytes[at + head..at + head + body]);
            }
        }
    }
    out
}

/// The inverse of [`pack_lane_tiles`]: `rows` rows of `k` values as GGUF blocks.
pub(super) fn unpack_lane_tiles(packed: &[u8], rows: usize, k: usize) -> Vec<u8> {
    let (head, body) = block_split(WeightFormat::Q4_1);
    let blocks = k / BLOCK;
    let mut out = Vec::with_capacity(rows * blocks * (head + body));
    for row in 0..rows {
        let (tile, lane, j) = (row / LANE_TILE, row % 8, row % LANE_TILE / 8);
        for blk in 0..blocks {
            let cell = &packed[((tile * blocks + blk) * 8 + lane) * LANE_CELL..][..LANE_CELL];
            out.extend_from_slice(&cell[LANE_ROWS * body + j * head..][..head]);
            out.extend_from_slice(&cell[j * body..][..body]);
        }
    }
    out
}

/// Rows of a lane tile ([`BlockOrder::LaneTiles`]): 8 lanes of 8 rows.
pub(super) const LANE_TILE: usize = 8 * LANE_ROWS;

/// Rows one lane owns in a lane tile.
pub(super) const LANE_ROWS: usize = 8;

/// Bytes of one lane's cell in a lane tile: 8 Q4_1 blocks.
pub(super) const LANE_CELL: usize = LANE_ROWS * 20;

/// Rows whose blocks the device keeps side by side (see [`split_blocks`] and `w_block_index`
/// in `shaders/weights.wgsl`).
pub(super) const INTERLEAVE: usize = 8;

/// Bytes of one block as the device keeps the formats it does not split
/// ([`WeightFormat::split_blocks`] false): the GGUF block padded to a word, so that every field
/// the shader reads four quants of is word-aligned. Q5_0 moves its quants two bytes on: f16 d
/// and two zero bytes, then as Q5_1 (high bits, nibbles).
pub(super) fn padded_block_bytes(format: WeightFormat) -> usize {
    format.block_bytes().unwrap_or(0).next_multiple_of(4)
}

/// GGUF blocks of a format kept whole, each padded as [`padded_block_bytes`] says
/// (`w_kblock` in `shaders/weights.wgsl`).
pub(super) fn pad_blocks(format: WeightFormat, bytes: &[u8]) -> Vec<u8> {
    let size = format.block_bytes().unwrap_or(1);
    let padded = padded_block_bytes(format);
    let mut out = vec![0u8; bytes.len() / size * padded];
    for (block, cell) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(padded)) {
        if format == WeightFormat::Q5_0 {
            cell[0..2].copy_from_slice(&block[0..2]);
            cell[4..24].copy_from_slice(&block[2..22]);
        } else {
            cell[..size].copy_from_slice(block);
        }
    }
    out
}

/// The inverse of [`pad_blocks`].
pub(super) fn unpad_blocks(format: WeightFormat, padded: &[u8]) -> Vec<u8> {
    let size = format.block_bytes().unwrap_or(1);
    let mut out = Vec::with_capacity(padded.len() / padded_block_bytes(format) * size);
    for cell in padded.chunks_exact(padded_block_bytes(format)) {
        if format == WeightFormat::Q5_0 {
            out.extend_from_slice(&cell[0..2]);
            out.extend_from_slice(&cell[4..24]);
        } else {
            out.extend_from_slice(&cell[..size]);
        }
    }
    out
}
