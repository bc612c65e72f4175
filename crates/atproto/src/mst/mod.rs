//! The Merkle Search Tree that maps `collection/rkey` keys to record CIDs.
//!
//! The tree's shape depends only on its keys: each key lives on the layer given by
//! [`key_height`], and a node on layer L holds the keys of height L in its range with
//! subtrees on layer L-1 in the gaps. Insert and remove keep that canonical form, so the root
//! CID never depends on the order of operations.
//!
//! Nodes are read lazily from a [`BlockSource`] and only the touched path is decoded and
//! re-encoded, which keeps one update in a large repo cheap. [`Mst::commit`] returns the root
//! CID and the blocks that did not exist before.

mod diff;
mod node;
mod proof;

use ::cid::Cid;

pub use diff::{Diff, DiffOp, diff};
pub use node::{check_key, common_prefix_len, key_height};
pub use proof::{InvertError, KeyChange, commit_event_blocks, covering_proof, invert, record_proof};

use crate::blocks::{BlockMap, BlockSource, BlockSourceError};
use node::{Entry, Link, Node, load_mut, read_root, take_node};

/// Why an MST operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MstError {
    #[error("MST block {0} is missing")]
    MissingBlock(Cid),
    #[error(transparent)]
    Store(#[from] BlockSourceError),
    #[error("invalid MST node{}: {reason}", cid.map(|c| format!(" {c}")).unwrap_or_default())]
    InvalidNode { cid: Option<Cid>, reason: String },
    #[error("invalid MST key {0}")]
    InvalidKey(String),
}

/// A Merkle Search Tree, partly in memory.
#[derive(Debug, Clone)]
pub struct Mst {
    root: Node,
}

impl Default for Mst {
    fn default() -> Self {
        Self::new()
    }
}

/// The result of [`Mst::commit`].
#[derive(Debug, Clone)]
pub struct MstCommit {
    /// The root CID.
    pub root: Cid,
    /// Nodes encoded since the tree was loaded or last committed.
    pub blocks: BlockMap,
}

impl Mst {
    /// An empty tree.
    pub fn new() -> Self {
        Self { root: Node::empty() }
    }

    /// Opens the tree with the given root. Only the root node is read now.
    pub fn load(store: &impl BlockSource, root: Cid) -> Result<Self, MstError> {
        Ok(Self { root: read_root(store, root)? })
    }

    /// Builds a tree from entries in one pass. Keys must be valid; duplicates keep the last value.
    pub fn from_entries(entries: impl IntoIterator<Item = (String, Cid)>) -> Result<Self, MstError> {
        let mut items: Vec<(String, Cid, u32)> = Vec::new();
        for (key, value) in entries {
            check_key(&key)?;
            let h = key_height(key.as_bytes());
            items.push((key, value, h));
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        items.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                earlier.1 = later.1;
                true
            } else {
                false
            }
        });
        let Some(top) = items.iter().map(|i| i.2).max() else {
            return Ok(Self::new());
        };
        let root = build(&items, top).expect("non-empty");
        Ok(Self { root })
    }

    /// The value stored under `key`.
    pub fn get(&self, store: &impl BlockSource, key: &str) -> Result<Option<Cid>, MstError> {
        let mut owned: Node;
        let mut node = &self.root;
        loop {
            let idx = node.position(key);
            if let Some(e) = node.entries.get(idx).filter(|e| e.key == key) {
                return Ok(Some(e.value));
            }
            match node.gap(idx) {
                None => return Ok(None),
                Some(Link::Loaded(child)) => node = child,
                Some(Link::Stored(cid)) => {
                    let (cid, layer) = (*cid, node.child_layer()?);
                    owned = node::read_node(store, cid, Some(layer))?;
                    node = &owned;
                }
            }
        }
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, store: &impl BlockSource, key: &str, value: Cid) -> Result<Option<Cid>, MstError> {
        check_key(key)?;
        let height = key_height(key.as_bytes());
        if self.root.is_empty() {
            self.root = Node::chain(height, key, height, value);
            return Ok(None);
        }
        while self.root.layer < height {
            let old = std::mem::replace(&mut self.root, Node::empty());
            self.root = Node { layer: old.layer + 1, left: Some(Link::loaded(old)), entries: Vec::new(), cid: None };
        }
        insert_into(&mut self.root, store, key, height, value)
    }

    /// Removes `key`, returning its value if it was present.
    pub fn remove(&mut self, store: &impl BlockSource, key: &str) -> Result<Option<Cid>, MstError> {
        let old = remove_from(&mut self.root, store, key)?;
        if old.is_some() {
            // An entry-less root is not canonical: the tree shrinks to its only child.
            while self.root.entries.is_empty() {
                let Some(child) = self.root.left.take() else {
                    self.root = Node::empty();
                    break;
                };
                let layer = self.root.child_layer()?;
                self.root = take_node(child, store, layer)?;
            }
        }
        Ok(old)
    }

    /// Encodes every changed node and returns the root CID with the new blocks.
    pub fn commit(&mut self) -> MstCommit {
        let mut blocks = BlockMap::new();
        let root = commit_node(&mut self.root, &mut blocks);
        MstCommit { root, blocks }
    }

    /// The root CID (encoding changed nodes; their blocks are dropped, see [`Mst::commit`]).
    pub fn root_cid(&mut self) -> Cid {
        self.commit().root
    }

    /// Every key and value, in key order.
    pub fn entries(&self, store: &impl BlockSource) -> Result<Vec<(String, Cid)>, MstError> {
        let mut out = Vec::new();
        walk(&self.root, store, &mut |k, v| out.push((k.to_owned(), v)))?;
        Ok(out)
    }

    /// Calls `f` for every key and value, in key order.
    pub fn for_each(&self, store: &impl BlockSource, mut f: impl FnMut(&str, Cid)) -> Result<(), MstError> {
        walk(&self.root, store, &mut f)
    }
}

/// Builds the canonical subtree on `layer` for sorted items whose heights are all <= layer.
fn build(items: &[(String, Cid, u32)], layer: u32) -> Option<Node> {
    if items.is_empty() {
        return None;
    }
    let mut node = Node { layer, left: None, entries: Vec::new(), cid: None };
    let mut start = 0;
    for (i, item) in items.iter().enumerate() {
        if item.2 == layer {
            let below = if layer == 0 { None } else { build(&items[start..i], layer - 1) };
            *node.gap_mut(node.entries.len()) = below.map(Link::loaded);
            node.entries.push(Entry { key: item.0.clone(), value: item.1, right: None });
            start = i + 1;
        }
    }
    if layer > 0 {
        let below = build(&items[start..], layer - 1);
        *node.gap_mut(node.entries.len()) = below.map(Link::loaded);
    }
    Some(node)
}

fn insert_into(
    node: &mut Node,
    store: &impl BlockSource,
    key: &str,
    height: u32,
    value: Cid,
) -> Result<Option<Cid>, MstError> {
    let idx = node.position(key);
    if let Some(entry) = node.entries.get_mut(idx).filter(|e| e.key == key) {
        let old = std::mem::replace(&mut entry.value, value);
        if old != value {
            node.cid = None;
        }
        return Ok(Some(old));
    }
    if height == node.layer {
        // The new key splits the subtree in its gap into the parts before and after it.
        let (before, after) = match node.gap_mut(idx).take() {
            None => (None, None),
            Some(link) => {
                let layer = node.child_layer()?;
                split(take_node(link, store, layer)?, store, key)?
            }
        };
        *node.gap_mut(idx) = before.map(Link::loaded);
        node.entries.insert(idx, Entry { key: key.to_owned(), value, right: after.map(Link::loaded) });
        node.cid = None;
        return Ok(None);
    }
    let child_layer = node.child_layer()?;
    let (old, child_changed) = match node.gap_mut(idx) {
        slot @ None => {
            *slot = Some(Link::loaded(Node::chain(child_layer, key, height, value)));
            (None, true)
        }
        Some(link) => {
            let child = load_mut(link, store, child_layer)?;
            let old = insert_into(child, store, key, height, value)?;
            (old, child.cid.is_none())
        }
    };
    if child_changed {
        node.cid = None;
    }
    Ok(old)
}

/// Splits a subtree around a key it does not contain.
fn split(mut node: Node, store: &impl BlockSource, key: &str) -> Result<(Option<Node>, Option<Node>), MstError> {
    let idx = node.position(key);
    let (gap_before, gap_after) = match node.gap_mut(idx).take() {
        None => (None, None),
        Some(link) => {
            let layer = node.child_layer()?;
            split(take_node(link, store, layer)?, store, key)?
        }
    };
    let right_entries = node.entries.split_off(idx);
    let mut left = Node { layer: node.layer, left: node.left.take(), entries: node.entries, cid: None };
    *left.gap_mut(idx) = gap_before.map(Link::loaded);
    let right = Node { layer: node.layer, left: gap_after.map(Link::loaded), entries: right_entries, cid: None };
    let keep = |n: Node| if n.is_empty() { None } else { Some(n) };
    Ok((keep(left), keep(right)))
}

fn remove_from(node: &mut Node, store: &impl BlockSource, key: &str) -> Result<Option<Cid>, MstError> {
    let idx = node.position(key);
    if node.entries.get(idx).is_some_and(|e| e.key == key) {
        let removed = node.entries.remove(idx);
        let before = node.gap_mut(idx).take();
        let merged = merge(before, removed.right, store, node.layer)?;
        *node.gap_mut(idx) = merged;
        node.cid = None;
        return Ok(Some(removed.value));
    }
    if node.gap(idx).is_none() {
        return Ok(None);
    }
    let child_layer = node_child_layer(node.layer, node.cid)?;
    let link = node.gap_mut(idx).as_mut().expect("checked above");
    let child = load_mut(link, store, child_layer)?;
    let old = remove_from(child, store, key)?;
    let child_empty = child.is_empty();
    if old.is_some() {
        node.cid = None;
        if child_empty {
            *node.gap_mut(idx) = None;
        }
    }
    Ok(old)
}

fn node_child_layer(layer: u32, cid: Option<Cid>) -> Result<u32, MstError> {
    layer.checked_sub(1).ok_or_else(|| MstError::InvalidNode { cid, reason: "a node on layer 0 has a subtree".into() })
}

/// Joins two adjacent subtrees that hang below a node on `parent_layer`.
fn merge(
    a: Option<Link>,
    b: Option<Link>,
    store: &impl BlockSource,
    parent_layer: u32,
) -> Result<Option<Link>, MstError> {
    match (a, b) {
        (None, x) | (x, None) => Ok(x),
        (Some(a), Some(b)) => {
            let layer = node_child_layer(parent_layer, None)?;
            let mut a = take_node(a, store, layer)?;
            let mut b = take_node(b, store, layer)?;
            let last = a.entries.len();
            let a_tail = a.gap_mut(last).take();
            let joined = merge(a_tail, b.left.take(), store, layer)?;
            *a.gap_mut(last) = joined;
            a.entries.append(&mut b.entries);
            a.cid = None;
            Ok(Some(Link::loaded(a)))
        }
    }
}

fn commit_node(node: &mut Node, blocks: &mut BlockMap) -> Cid {
    if let Some(cid) = node.cid {
        return cid; // unchanged, and so is everything below it
    }
    if let Some(Link::Loaded(child)) = &mut node.left {
        commit_node(child, blocks);
    }
    for entry in &mut node.entries {
        if let Some(Link::Loaded(child)) = &mut entry.right {
            commit_node(child, blocks);
        }
    }
    let bytes = node.encode();
    let cid = blocks.insert_cbor(bytes);
    node.cid = Some(cid);
    cid
}

fn walk(node: &Node, store: &impl BlockSource, f: &mut dyn FnMut(&str, Cid)) -> Result<(), MstError> {
    let visit = |link: &Option<Link>, f: &mut dyn FnMut(&str, Cid)| -> Result<(), MstError> {
        match link {
            None => Ok(()),
            Some(Link::Loaded(child)) => walk(child, store, f),
            Some(Link::Stored(cid)) => walk(&node::read_node(store, *cid, Some(node.child_layer()?))?, store, f),
        }
    };
    visit(&node.left, f)?;
    for entry in &node.entries {
        f(&entry.key, entry.value);
        visit(&entry.right, f)?;
    }
    Ok(())
}
