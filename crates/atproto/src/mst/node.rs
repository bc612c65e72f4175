//! One MST node: its wire format (prefix-compressed keys) and the in-memory form.

use ::cid::Cid;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::MstError;
use crate::blocks::BlockSource;

/// The layer a key lives on: leading zero bits of SHA-256(key), counted in pairs (fanout 4).
pub fn key_height(key: &[u8]) -> u32 {
    let digest = Sha256::digest(key);
    let mut zeros = 0;
    for byte in digest.iter() {
        if *byte == 0 {
            zeros += 8;
        } else {
            zeros += byte.leading_zeros();
            break;
        }
    }
    zeros / 2
}

/// Length of the common prefix of two byte strings.
pub fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Checks a repo key: `collection/rkey`, at most 1024 bytes, from the allowed characters.
pub fn check_key(key: &str) -> Result<(), MstError> {
    let bad = |why: &str| MstError::InvalidKey(format!("'{key}': {why}"));
    if key.is_empty() || key.len() > 1024 {
        return Err(bad("must be 1 to 1024 bytes"));
    }
    let Some((collection, rkey)) = key.split_once('/') else {
        return Err(bad("must be collection/rkey"));
    };
    if collection.is_empty() || rkey.is_empty() || rkey.contains('/') {
        return Err(bad("must be collection/rkey"));
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"_~-:.".contains(&b);
    if !collection.bytes().all(ok) || !rkey.bytes().all(ok) {
        return Err(bad("disallowed character"));
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeWire {
    l: Option<Cid>,
    e: Vec<EntryWire>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryWire {
    p: u64,
    #[serde(with = "serde_bytes")]
    k: Vec<u8>,
    v: Cid,
    t: Option<Cid>,
}

/// A pointer to a subtree: either only its CID, or the node loaded (and maybe modified).
#[derive(Debug, Clone)]
pub(crate) enum Link {
    Stored(Cid),
    Loaded(Box<Node>),
}

impl Link {
    pub(crate) fn loaded(node: Node) -> Self {
        Self::Loaded(Box::new(node))
    }

    /// The CID if known without encoding (stored, or loaded and unchanged).
    pub(crate) fn known_cid(&self) -> Option<Cid> {
        match self {
            Self::Stored(cid) => Some(*cid),
            Self::Loaded(node) => node.cid,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub value: Cid,
    /// Subtree of keys between this entry and the next one.
    pub right: Option<Link>,
}

/// A node on `layer`: entries of that height, with subtrees one layer down in the gaps.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub layer: u32,
    /// Subtree of keys before the first entry.
    pub left: Option<Link>,
    pub entries: Vec<Entry>,
    /// The node's CID while it is unchanged since it was loaded or last encoded.
    pub cid: Option<Cid>,
}

impl Node {
    pub(crate) fn empty() -> Self {
        Self { layer: 0, left: None, entries: Vec::new(), cid: None }
    }

    /// A subtree on `layer` holding one key of height `height` (<= layer): entry-less nodes
    /// down to the key's own layer.
    pub(crate) fn chain(layer: u32, key: &str, height: u32, value: Cid) -> Self {
        if layer == height {
            Self { layer, left: None, entries: vec![Entry { key: key.to_owned(), value, right: None }], cid: None }
        } else {
            let below = Self::chain(layer - 1, key, height, value);
            Self { layer, left: Some(Link::loaded(below)), entries: Vec::new(), cid: None }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.left.is_none()
    }

    /// The subtree slot before entry `idx` (`idx == entries.len()` is the last gap).
    pub(crate) fn gap(&self, idx: usize) -> Option<&Link> {
        if idx == 0 { self.left.as_ref() } else { self.entries[idx - 1].right.as_ref() }
    }

    pub(crate) fn gap_mut(&mut self, idx: usize) -> &mut Option<Link> {
        if idx == 0 { &mut self.left } else { &mut self.entries[idx - 1].right }
    }

    /// The layer of this node's children.
    pub(crate) fn child_layer(&self) -> Result<u32, MstError> {
        self.layer
            .checked_sub(1)
            .ok_or_else(|| MstError::InvalidNode { cid: self.cid, reason: "a node on layer 0 has a subtree".into() })
    }

    /// Index of the first entry whose key is >= `key`.
    pub(crate) fn position(&self, key: &str) -> usize {
        self.entries.partition_point(|e| e.key.as_str() < key)
    }

    /// Encodes the node. Every child must already have a CID.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let child = |l: &Option<Link>| l.as_ref().map(|l| l.known_cid().expect("children are encoded first"));
        let mut prev: &[u8] = &[];
        let entries = self
            .entries
            .iter()
            .map(|e| {
                let key = e.key.as_bytes();
                let p = common_prefix_len(prev, key);
                prev = key;
                EntryWire { p: p as u64, k: key[p..].to_vec(), v: e.value, t: child(&e.right) }
            })
            .collect();
        crate::data::encode_as(&NodeWire { l: child(&self.left), e: entries }).expect("MST nodes always encode")
    }

    /// Decodes and checks a node: keys valid and strictly ascending, all on one layer, which
    /// must be `expected_layer` when the parent tells us.
    pub(crate) fn decode(cid: Cid, bytes: &[u8], expected_layer: Option<u32>) -> Result<Self, MstError> {
        let invalid = |reason: String| MstError::InvalidNode { cid: Some(cid), reason };
        let limits = crate::data::Limits { max_bytes: 2 * 1024 * 1024, max_depth: 4 };
        let wire: NodeWire = crate::data::decode_as(bytes, &limits).map_err(|e| invalid(e.to_string()))?;
        let mut entries: Vec<Entry> = Vec::with_capacity(wire.e.len());
        let mut layer = expected_layer;
        for e in wire.e {
            let prefix_len = e.p as usize;
            let prev = entries.last().map(|p| p.key.as_bytes()).unwrap_or(&[]);
            if prefix_len > prev.len() {
                return Err(invalid("key prefix longer than the previous key".into()));
            }
            let mut key = Vec::with_capacity(prefix_len + e.k.len());
            key.extend_from_slice(&prev[..prefix_len]);
            key.extend_from_slice(&e.k);
            let key = String::from_utf8(key).map_err(|_| invalid("key is not UTF-8".into()))?;
            check_key(&key).map_err(|e| invalid(e.to_string()))?;
            if entries.last().is_some_and(|p| p.key >= key) {
                return Err(invalid("keys are not in ascending order".into()));
            }
            let height = key_height(key.as_bytes());
            match layer {
                None => layer = Some(height),
                Some(l) if l != height => {
                    return Err(invalid(format!("key '{key}' belongs on layer {height}, found on {l}")));
                }
                Some(_) => {}
            }
            entries.push(Entry { key, value: e.v, right: e.t.map(Link::Stored) });
        }
        let layer = layer.ok_or_else(|| invalid("cannot tell the layer of an entry-less node".into()))?;
        Ok(Self { layer, left: wire.l.map(Link::Stored), entries, cid: Some(cid) })
    }
}

/// Reads a node's block from the store.
pub(crate) fn read_node(store: &impl BlockSource, cid: Cid, expected_layer: Option<u32>) -> Result<Node, MstError> {
    let bytes = store.get_block(&cid)?.ok_or(MstError::MissingBlock(cid))?;
    Node::decode(cid, &bytes, expected_layer)
}

/// Loads a root node, working out its layer even if it has no entries of its own (its layer
/// is then one above the first descendant, down the left spine, that has entries).
pub(crate) fn read_root(store: &impl BlockSource, cid: Cid) -> Result<Node, MstError> {
    let invalid = |reason: &str| MstError::InvalidNode { cid: Some(cid), reason: reason.into() };
    let mut depth = 0u32;
    let mut current = cid;
    let layer = loop {
        let bytes = store.get_block(&current)?.ok_or(MstError::MissingBlock(current))?;
        let wire: NodeWire =
            crate::data::decode_as(&bytes, &crate::data::Limits { max_bytes: 2 * 1024 * 1024, max_depth: 4 })
                .map_err(|e| MstError::InvalidNode { cid: Some(current), reason: e.to_string() })?;
        if wire.e.is_empty() {
            match wire.l {
                None if depth == 0 => break 0,
                None => return Err(invalid("an entry-less subtree is empty")),
                Some(child) => {
                    depth += 1;
                    if depth > MAX_LAYER {
                        return Err(invalid("tree is deeper than any key height allows"));
                    }
                    current = child;
                }
            }
        } else if depth == 0 {
            // The usual case: the root has entries, so it is already decoded.
            return Node::decode(current, &bytes, None);
        } else {
            break Node::decode(current, &bytes, None)?.layer + depth;
        }
    };
    read_node(store, cid, Some(layer))
}

/// SHA-256 has 256 bits, so no key can be higher than this.
pub(crate) const MAX_LAYER: u32 = 128;

/// Takes ownership of a subtree, reading it from the store if needed.
pub(crate) fn take_node(link: Link, store: &impl BlockSource, layer: u32) -> Result<Node, MstError> {
    match link {
        Link::Loaded(node) => Ok(*node),
        Link::Stored(cid) => read_node(store, cid, Some(layer)),
    }
}

/// Makes sure a subtree is loaded in place and returns it.
pub(crate) fn load_mut<'a>(link: &'a mut Link, store: &impl BlockSource, layer: u32) -> Result<&'a mut Node, MstError> {
    if let Link::Stored(cid) = link {
        *link = Link::loaded(read_node(store, *cid, Some(layer))?);
    }
    match link {
        Link::Loaded(node) => Ok(node),
        Link::Stored(_) => unreachable!("just loaded"),
    }
}
