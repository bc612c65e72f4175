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
