//! The difference between two trees, found by walking both in key order and skipping every
//! subtree the two share.

use std::collections::BTreeSet;

use ::cid::Cid;

use super::MstError;
use super::node::{read_node, read_root};
use crate::blocks::BlockSource;

/// One key that differs: created (`old` is `None`), deleted (`new` is `None`) or updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOp {
    pub key: String,
    pub old: Option<Cid>,
    pub new: Option<Cid>,
}

/// What changed between two trees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Changed keys in key order.
    pub ops: Vec<DiffOp>,
    /// MST nodes in the new tree that are not in the old one.
    pub new_nodes: BTreeSet<Cid>,
    /// MST nodes in the old tree that are not in the new one.
    pub removed_nodes: BTreeSet<Cid>,
}

enum Item {
    Leaf(String, Cid),
    Tree(Cid, u32),
}

/// A tree flattened lazily into items in key order (the next item is last).
struct Frontier {
    stack: Vec<Item>,
    nodes: BTreeSet<Cid>,
}

impl Frontier {
    fn new(store: &impl BlockSource, root: Option<Cid>) -> Result<Self, MstError> {
        let mut stack = Vec::new();
        if let Some(root) = root {
            let layer = read_root(store, root)?.layer;
            stack.push(Item::Tree(root, layer));
        }
        Ok(Self { stack, nodes: BTreeSet::new() })
    }

    /// Replaces the subtree on top with its children.
    fn expand(&mut self, store: &impl BlockSource) -> Result<(), MstError> {
        let Some(Item::Tree(cid, layer)) = self.stack.pop() else {
            unreachable!("expand is only called on a subtree");
        };
        let node = read_node(store, cid, Some(layer))?;
        self.nodes.insert(cid);
        let child = |c: Cid| Ok::<_, MstError>(Item::Tree(c, node.child_layer()?));
        for entry in node.entries.iter().rev() {
            if let Some(link) = &entry.right {
                self.stack.push(child(link.known_cid().expect("decoded links are stored"))?);
            }
            self.stack.push(Item::Leaf(entry.key.clone(), entry.value));
        }
        if let Some(link) = &node.left {
            self.stack.push(child(link.known_cid().expect("decoded links are stored"))?);
        }
        Ok(())
    }
}

/// Compares two committed trees. `old` is `None` for a repo's first commit.
pub fn diff(store: &impl BlockSource, old: Option<Cid>, new: Cid) -> Result<Diff, MstError> {
    let mut a = Frontier::new(store, old)?;
    let mut b = Frontier::new(store, Some(new))?;
    let mut ops = Vec::new();
    loop {
        match (a.stack.last(), b.stack.last()) {
            (None, None) => break,
            (Some(Item::Tree(x, lx)), Some(Item::Tree(y, ly))) => {
                if x == y {
                    a.stack.pop();
                    b.stack.pop();
                } else if lx > ly {
                    a.expand(store)?;
                } else if ly > lx {
                    b.expand(store)?;
                } else {
                    a.expand(store)?;
                    b.expand(store)?;
                }
            }
            (Some(Item::Tree(..)), _) => a.expand(store)?,
            (_, Some(Item::Tree(..))) => b.expand(store)?,
            (Some(Item::Leaf(ka, va)), Some(Item::Leaf(kb, vb))) => {
                if ka == kb {
                    if va != vb {
                        ops.push(DiffOp { key: ka.clone(), old: Some(*va), new: Some(*vb) });
                    }
                    a.stack.pop();
                    b.stack.pop();
                } else if ka < kb {
                    ops.push(DiffOp { key: ka.clone(), old: Some(*va), new: None });
                    a.stack.pop();
                } else {
                    ops.push(DiffOp { key: kb.clone(), old: None, new: Some(*vb) });
                    b.stack.pop();
                }
            }
            (Some(Item::Leaf(ka, va)), None) => {
                ops.push(DiffOp { key: ka.clone(), old: Some(*va), new: None });
                a.stack.pop();
            }
            (None, Some(Item::Leaf(kb, vb))) => {
                ops.push(DiffOp { key: kb.clone(), old: None, new: Some(*vb) });
                b.stack.pop();
            }
        }
    }
    let new_nodes = b.nodes.difference(&a.nodes).copied().collect();
    let removed_nodes = a.nodes.difference(&b.nodes).copied().collect();
    Ok(Diff { ops, new_nodes, removed_nodes })
}
