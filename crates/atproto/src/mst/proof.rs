//! Proof blocks: the MST nodes a reader needs to check a key against a root.

use ::cid::Cid;

use super::MstError;
use super::node::{Link, Node, read_node, read_root};
use crate::blocks::{BlockMap, BlockSource};

fn add(store: &impl BlockSource, out: &mut BlockMap, cid: Cid) -> Result<(), MstError> {
    let bytes = store.get_block(&cid)?.ok_or(MstError::MissingBlock(cid))?;
    out.insert(cid, bytes.into_owned());
    Ok(())
}

fn stored(link: &Link) -> Cid {
    link.known_cid().expect("decoded links are stored")
}

/// Follows the search path for `key` from the root, adding each node. Returns the node and
/// entry index where the key was found, if it was.
fn search_path(
    store: &impl BlockSource,
    root: Cid,
    key: &str,
    out: &mut BlockMap,
) -> Result<Option<(Node, usize)>, MstError> {
    let mut node = read_root(store, root)?;
    add(store, out, root)?;
    loop {
        let idx = node.position(key);
        if node.entries.get(idx).is_some_and(|e| e.key == key) {
            return Ok(Some((node, idx)));
        }
        let Some(link) = node.gap(idx) else {
            return Ok(None);
        };
        let cid = stored(link);
        add(store, out, cid)?;
        node = read_node(store, cid, Some(node.child_layer()?))?;
    }
}

/// Blocks proving that `key` is or is not in the tree: the nodes on its search path.
/// This is what `com.atproto.sync.getRecord` returns alongside the commit.
pub fn record_proof(store: &impl BlockSource, root: Cid, key: &str) -> Result<BlockMap, MstError> {
    let mut out = BlockMap::new();
    search_path(store, root, key, &mut out)?;
    Ok(out)
}

/// Blocks that let a reader both check `key` and undo an operation on it (sync 1.1 commit
/// proofs): the search path and, when the key is present, the innermost spines of the subtrees
/// on either side of it, which removing the key would merge.
pub fn covering_proof(store: &impl BlockSource, root: Cid, key: &str) -> Result<BlockMap, MstError> {
    let mut out = BlockMap::new();
    if let Some((node, idx)) = search_path(store, root, key, &mut out)? {
        let layer = node.layer;
        // Rightmost spine of the subtree just before the key.
        let mut next = node.gap(idx).map(stored);
        let mut child_layer = layer;
        while let Some(cid) = next {
            child_layer = child_layer
                .checked_sub(1)
                .ok_or(MstError::InvalidNode { cid: Some(cid), reason: "too deep".into() })?;
            add(store, &mut out, cid)?;
            let n = read_node(store, cid, Some(child_layer))?;
            next = n.gap(n.entries.len()).map(stored);
        }
        // Leftmost spine of the subtree just after it.
        let mut next = node.gap(idx + 1).map(stored);
        let mut child_layer = layer;
        while let Some(cid) = next {
            child_layer = child_layer
                .checked_sub(1)
                .ok_or(MstError::InvalidNode { cid: Some(cid), reason: "too deep".into() })?;
            add(store, &mut out, cid)?;
            let n = read_node(store, cid, Some(child_layer))?;
            next = n.left.as_ref().map(stored);
        }
    }
    Ok(out)
}

/// The blocks a sync 1.1 `#commit` event carries besides the signed commit: every block the
/// commit created plus the covering proof, in the new tree, of each key it changed. A consumer
/// holding only these can check every op and invert the commit back to `prevData`.
pub fn commit_event_blocks<'k>(
    store: &impl BlockSource,
    new_blocks: &BlockMap,
    root: Cid,
    changed_keys: impl IntoIterator<Item = &'k str>,
) -> Result<BlockMap, MstError> {
    let mut out = new_blocks.clone();
    for key in changed_keys {
        out.extend(covering_proof(store, root, key)?);
    }
    Ok(out)
}

/// One change of a commit as its consumer sees it: the key, and its value after and before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    pub key: String,
    pub cid: Option<Cid>,
    pub prev: Option<Cid>,
}

/// Why a commit does not invert.
#[derive(Debug, thiserror::Error)]
pub enum InvertError {
    #[error(transparent)]
    Mst(#[from] MstError),
    #[error("the tree does not hold at {key} what the commit says ({detail})")]
    Mismatch { key: String, detail: String },
    #[error("{0} is changed twice")]
    Repeated(String),
}

/// Undoes `changes` on the tree at `root`, reading only `blocks` (a sync 1.1 event's blocks:
/// the new blocks and the covering proofs), and returns the root the tree had before them. A
/// consumer compares it with the commit's `prevData`: equal means the commit changed exactly
/// these keys and nothing else. Fails when the tree does not hold what a change says it wrote,
/// or when a block needed is not among `blocks`.
pub fn invert(blocks: &impl BlockSource, root: Cid, changes: &[KeyChange]) -> Result<Cid, InvertError> {
    if changes.is_empty() {
        return Ok(root); // nothing to undo, and no block needed to say so
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut tree = super::Mst::load(blocks, root)?;
    for change in changes {
        if !seen.insert(change.key.as_str()) {
            return Err(InvertError::Repeated(change.key.clone()));
        }
        let found = tree.get(blocks, &change.key)?;
        if found != change.cid {
            let detail = format!("found {found:?}, claimed {:?}", change.cid);
            return Err(InvertError::Mismatch { key: change.key.clone(), detail });
        }
        match change.prev {
            Some(prev) => {
                tree.insert(blocks, &change.key, prev)?;
            }
            None => {
                tree.remove(blocks, &change.key)?;
            }
        }
    }
    Ok(tree.root_cid())
}
