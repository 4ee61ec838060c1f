//! How the tree is stored (contract §7): tiles of 256 hashes, as in
//! C2SP `tlog-tiles`. A tile at tile level 0 holds 256 leaf hashes; a tile
//! at tile level `t` holds the roots of 256 complete tiles of level `t − 1`
//! (tree level 8t). Only the right edge is ever partial, so appending a
//! leaf touches one partial tile per level (O(1) amortised hashes: a full
//! tile's 255 interior hashes once per 256 leaves), and any complete
//! subtree is at most 127 hashes folded from one tile. Pure: the caller
//! reads and writes the tiles.
//!
//! The edge also keeps, per level, the roots of the perfect subtrees its
//! partial tile splits into (a binary counter of subtrees, as in a
//! compact range): each interior hash is computed once, as its right
//! child arrives, and the root of the whole tree is a fold of at most
//! 8 per level, so a commit never refolds the partial tiles.

use super::tree::{empty_root, fold_perfect, node_hash, HashReader};
use super::Hash;

/// Tree levels per tile level.
pub const TILE_HEIGHT: u32 = 8;
/// Hashes in a full tile.
pub const TILE_WIDTH: usize = 1 << TILE_HEIGHT;

/// A tile's place: its tile level and its index at that level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TileId {
    pub level: u8,
    pub index: u64,
}

/// Hashes at tile level `t` of a tree of `size` leaves.
fn entries_at(size: u64, level: u8) -> u64 {
    size.checked_shr(TILE_HEIGHT * u32::from(level))
        .unwrap_or(0)
}

/// The partial tiles a tree of `size` leaves has, with their widths: what
/// [`Edge::from_tiles`] needs loaded.
pub fn partial_tiles(size: u64) -> Vec<(TileId, usize)> {
    let mut out = Vec::new();
    for level in 0u8.. {
        let entries = entries_at(size, level);
        if entries == 0 {
            break;
        }
        let width = (entries % TILE_WIDTH as u64) as usize;
        if width > 0 {
            out.push((
                TileId {
                    level,
                    index: entries / TILE_WIDTH as u64,
                },
                width,
            ));
        }
    }
    out
}

/// The right edge of a tree: the hashes of its partial tile at each level.
/// Appending goes through here; complete tiles come out to be stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edge {
    size: u64,
    partial: Vec<Vec<Hash>>,
    /// Per level, the perfect subtrees of its partial tile, largest (and
    /// leftmost) first: (height within the tile, root).
    peaks: Vec<Vec<(u32, Hash)>>,
}

/// Adds `hash` as the rightmost subtree of height 0 to `peaks`, merging
/// subtrees of equal height: one node hash per completed pair.
fn push_peak(peaks: &mut Vec<(u32, Hash)>, hash: Hash) {
    let mut top = (0, hash);
    while let Some(&(height, left)) = peaks.last() {
        if height != top.0 {
            break;
        }
        peaks.pop();
        top = (height + 1, node_hash(&left, &top.1));
    }
    peaks.push(top);
}

impl Edge {
    /// The edge of a tree of `size` leaves from its partial tiles (as
    /// [`partial_tiles`] lists them, in order). A tile of the wrong width
    /// is refused: the stored tree and its size disagree.
    pub fn from_tiles(size: u64, tiles: Vec<Vec<Hash>>) -> Result<Edge, String> {
        let wanted = partial_tiles(size);
        if wanted.len() != tiles.len() {
            return Err(format!(
                "a tree of {size} leaves has {} partial tiles, {} were given",
                wanted.len(),
                tiles.len()
            ));
        }
        let mut edge = Edge {
            size,
            ..Edge::default()
        };
        for ((id, width), tile) in wanted.into_iter().zip(tiles) {
            if tile.len() != width {
                return Err(format!(
                    "tile {}/{} holds {} hashes where a tree of {size} leaves has {width}",
                    id.level,
                    id.index,
                    tile.len()
                ));
            }
            while edge.partial.len() < usize::from(id.level) {
                edge.partial.push(Vec::new());
                edge.peaks.push(Vec::new());
            }
            let mut peaks = Vec::new();
            for hash in &tile {
                push_peak(&mut peaks, *hash);
            }
            edge.partial.push(tile);
            edge.peaks.push(peaks);
        }
        Ok(edge)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash; a tile this completes is pushed to `full`.
    pub fn push(&mut self, leaf: Hash, full: &mut Vec<(TileId, Vec<Hash>)>) {
        self.size += 1;
        let mut carry = leaf;
        for level in 0u8.. {
            let l = usize::from(level);
            if self.partial.len() <= l {
                self.partial.push(Vec::with_capacity(TILE_WIDTH));
                self.peaks.push(Vec::new());
            }
            self.partial[l].push(carry);
            push_peak(&mut self.peaks[l], carry);
            if self.partial[l].len() < TILE_WIDTH {
                break;
            }
            // A full tile is one perfect subtree: its root goes up a level.
            let tile = std::mem::take(&mut self.partial[l]);
            carry = self.peaks[l]
                .pop()
                .map_or_else(|| fold_perfect(&tile), |p| p.1);
            self.peaks[l].clear();
            let index = entries_at(self.size, level + 1) - 1;
            full.push((TileId { level, index }, tile));
        }
    }

    /// The root of the tree this edge ends (RFC 6962): its perfect
    /// subtrees, largest first, folded from the right.
    pub fn root(&self) -> Hash {
        let mut subtrees = self.peaks.iter().rev().flatten().rev().map(|p| p.1);
        let Some(mut root) = subtrees.next() else {
            return empty_root();
        };
        for left in subtrees {
            root = node_hash(&left, &root);
        }
        root
    }

    /// The partial tiles as they stand, to be stored (a level whose tile
    /// was just completed has none).
    pub fn partial(&self) -> impl Iterator<Item = (TileId, &[Hash])> + '_ {
        self.partial
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty())
            .map(|(level, t)| {
                let level = level as u8;
                (
                    TileId {
                        level,
                        index: entries_at(self.size, level + 1),
                    },
                    t.as_slice(),
                )
            })
    }

    /// The partial tiles that differ from those of the same tree at
    /// `old_size` leaves: a level's partial tile only changes when the
    /// level below completes a tile, so a small append rewrites level 0
    /// alone (the others are stored already, and unchanged).
    pub fn partial_changed_since(
        &self,
        old_size: u64,
    ) -> impl Iterator<Item = (TileId, &[Hash])> + '_ {
        self.partial().filter(move |(id, _)| {
            entries_at(old_size, id.level) != entries_at(self.size, id.level)
        })
    }
}

/// Reads stored tiles.
pub trait TileReader {
    type Error;
    /// The hashes of a tile (a partial tile may be wider than a tree older
    /// than the stored one needs; it is never narrower when the tree is
    /// sound).
    fn tile(&mut self, id: TileId) -> Result<Vec<Hash>, Self::Error>;
    /// A tile that is narrower than a subtree needs: the stored tree is
    /// damaged.
    fn short_tile(&self, id: TileId, have: usize, need: usize) -> Self::Error;
}

/// The complete subtrees of a tree, served from its tiles, with the few
/// tiles one proof touches kept.
pub struct TileHashes<R> {
    reader: R,
    cache: Vec<(TileId, Vec<Hash>)>,
}

impl<R: TileReader> TileHashes<R> {
    pub fn new(reader: R) -> TileHashes<R> {
        TileHashes {
            reader,
            cache: Vec::new(),
        }
    }
}

impl<R: TileReader> HashReader for TileHashes<R> {
    type Error = R::Error;

    fn subtree(&mut self, level: u8, index: u64) -> Result<Hash, R::Error> {
        let tile_level = u32::from(level) / TILE_HEIGHT;
        let within = u32::from(level) % TILE_HEIGHT;
        let first = index << within;
        let id = TileId {
            level: tile_level as u8,
            index: first / TILE_WIDTH as u64,
        };
        let offset = (first % TILE_WIDTH as u64) as usize;
        let count = 1usize << within;
        let pos = match self.cache.iter().position(|(t, _)| *t == id) {
            Some(p) => p,
            None => {
                let hashes = self.reader.tile(id)?;
                if self.cache.len() >= 8 {
                    self.cache.remove(0);
                }
                self.cache.push((id, hashes));
                self.cache.len() - 1
            }
        };
        let hashes = &self.cache[pos].1;
        if hashes.len() < offset + count {
            return Err(self.reader.short_tile(id, hashes.len(), offset + count));
        }
        Ok(fold_perfect(&hashes[offset..offset + count]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::tree::{self, leaf_hash, MemoryTree};
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct Store(BTreeMap<TileId, Vec<Hash>>);

    impl TileReader for &Store {
        type Error = String;
        fn tile(&mut self, id: TileId) -> Result<Vec<Hash>, String> {
            self.0
                .get(&id)
                .cloned()
                .ok_or_else(|| format!("no tile {id:?}"))
        }
        fn short_tile(&self, id: TileId, have: usize, need: usize) -> String {
            format!("{id:?} has {have} of {need}")
        }
    }

    /// Appends `leaves` in batches of `batch`, storing tiles the way the
    /// mirror does (loading the edge before each batch).
    fn build(leaves: &[Hash], batch: usize) -> Store {
        let mut store = Store::default();
        let mut size = 0u64;
        for chunk in leaves.chunks(batch) {
            let tiles = partial_tiles(size)
                .into_iter()
                .map(|(id, _)| store.0[&id].clone())
                .collect();
            let mut edge = Edge::from_tiles(size, tiles).unwrap();
            let mut full = Vec::new();
            for leaf in chunk {
                edge.push(*leaf, &mut full);
            }
            for (id, t) in full {
                store.0.insert(id, t);
            }
            for (id, t) in edge.partial_changed_since(size) {
                store.0.insert(id, t.to_vec());
            }
            size = edge.size();
        }
        store
    }

    #[test]
    fn tiles_serve_the_same_roots_and_proofs_as_the_leaves() {
        let leaves: Vec<Hash> = (0u32..70_000)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect();
        let store = build(&leaves, 997);
        let mut tiles = TileHashes::new(&store);
        let mut sizes = vec![
            1u64, 2, 3, 255, 256, 257, 511, 512, 65_535, 65_536, 65_537, 70_000,
        ];
        sizes.extend((1..40).map(|i| i * 1777));
        for size in sizes {
            let mut mem = MemoryTree {
                leaves: leaves[..size as usize].to_vec(),
            };
            let want = tree::root(&mut mem, size).unwrap();
            assert_eq!(tree::root(&mut tiles, size).unwrap(), want, "size {size}");
            let mut edge = Edge::default();
            for leaf in &leaves[..size as usize] {
                edge.push(*leaf, &mut Vec::new());
            }
            assert_eq!(edge.root(), want, "edge root of {size}");
            for index in [0, size / 3, size - 1] {
                let a = tree::inclusion_proof(&mut tiles, index, size)
                    .unwrap()
                    .unwrap();
                tree::verify_inclusion(&leaves[index as usize], index, size, &a, &want).unwrap();
            }
            let old = size / 2 + 1;
            let p = tree::consistency_proof(&mut tiles, old, size)
                .unwrap()
                .unwrap();
            let old_root = tree::root(&mut tiles, old).unwrap();
            tree::verify_consistency(old, size, &old_root, &want, &p).unwrap();
        }
    }

    #[test]
    fn an_append_within_a_tile_changes_only_level_zero() {
        let leaves: Vec<Hash> = (0u32..70_000)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect();
        let mut edge = Edge::default();
        for leaf in &leaves[..65_537] {
            edge.push(*leaf, &mut Vec::new());
        }
        let changed = |edge: &Edge, old| {
            edge.partial_changed_since(old)
                .map(|(id, _)| id.level)
                .collect::<Vec<_>>()
        };
        for leaf in &leaves[65_537..65_540] {
            edge.push(*leaf, &mut Vec::new());
        }
        assert_eq!(changed(&edge, 65_537), [0]);
        // From 65,535: level 1 filled its tile (stored whole), level 2 began.
        assert_eq!(changed(&edge, 65_535), [0, 2]);
        for leaf in &leaves[65_540..65_792] {
            edge.push(*leaf, &mut Vec::new());
        }
        // 65,792 leaves: level 0 is whole again, level 1 gained a hash.
        assert_eq!(changed(&edge, 65_540), [1]);
    }

    #[test]
    fn the_batching_does_not_change_the_stored_tiles() {
        let leaves: Vec<Hash> = (0u32..3000).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let one = build(&leaves, 1);
        let many = build(&leaves, 3000);
        assert_eq!(one.0, many.0);
        assert_eq!(partial_tiles(3000).len(), 2);
        assert_eq!(
            one.0[&TileId {
                level: 0,
                index: 11
            }]
                .len(),
            3000 % 256
        );
    }

    #[test]
    fn the_edge_root_is_the_tree_root_at_every_size_grown_or_reloaded() {
        let leaves: Vec<Hash> = (0u32..66_000)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect();
        let want = |size: usize| {
            let mut mem = MemoryTree {
                leaves: leaves[..size].to_vec(),
            };
            tree::root(&mut mem, size as u64).unwrap()
        };
        let mut edge = Edge::default();
        assert_eq!(edge.root(), tree::empty_root());
        let mut store = Store::default();
        let checked: Vec<usize> = (1..=1300)
            .chain([65_535, 65_536, 65_537, 65_791, 65_792, 66_000])
            .collect();
        for (i, leaf) in leaves.iter().enumerate() {
            let mut full = Vec::new();
            edge.push(*leaf, &mut full);
            store.0.extend(full);
            let size = i + 1;
            if !checked.contains(&size) {
                continue;
            }
            let root = want(size);
            assert_eq!(edge.root(), root, "grown to {size}");
            for (id, t) in edge.partial() {
                store.0.insert(id, t.to_vec());
            }
            let tiles = partial_tiles(size as u64)
                .into_iter()
                .map(|(id, _)| store.0[&id].clone())
                .collect();
            let reloaded = Edge::from_tiles(size as u64, tiles).unwrap();
            assert_eq!(reloaded.root(), root, "reloaded at {size}");
            assert_eq!(reloaded, edge, "the same edge at {size}");
        }
    }

    #[test]
    fn an_edge_of_the_wrong_shape_is_refused() {
        assert!(Edge::from_tiles(3, vec![]).is_err());
        let h = leaf_hash(b"x");
        assert!(Edge::from_tiles(3, vec![vec![h; 2]]).is_err());
        assert!(Edge::from_tiles(3, vec![vec![h; 3]]).is_ok());
        assert!(Edge::from_tiles(256, vec![]).is_err());
        assert!(Edge::from_tiles(256, vec![vec![h]]).is_ok());
    }
}
